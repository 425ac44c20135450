"""Decode tiles from files or uploaded bytes into RGB ``uint8`` arrays.

Every supported input ends as an ``(H, W, 3)`` ``uint8`` array in RGB order:

- PNG, JPEG, TIFF (8 and 16 bit, integer or float), BMP, GIF and WebP through Pillow,
  with :mod:`tifffile` as the fallback for TIFF layouts Pillow cannot read (16-bit RGB,
  float RGB);
- RGBA, LA and palette images with transparency are composited on white, so that
  transparent background reads as empty glass, which is white in bright-field H&E;
- greyscale, 1-bit, palette, CMYK and YCbCr are converted to RGB;
- 16-bit data is scaled to 8 bit (``value / 257``); float data in [0, 1] is scaled by 255;
- EXIF orientation is applied;
- only the first frame of a multi-frame file (animated GIF or PNG, multi-page TIFF) is
  used, with a warning.

Size limits are checked against the header before any pixel is decoded, so a small file
that declares a huge image (a decompression bomb) is rejected cheaply.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, TileWarning

__all__ = [
    "DEFAULT_LIMITS",
    "IMAGE_SUFFIXES",
    "ImageLimits",
    "LoadedImage",
    "load_image",
    "read_source_bytes",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
)

SUPPORTED_FORMATS_TEXT = "PNG, JPEG, TIFF, BMP, GIF or WebP"

# Pillow's own bomb check would fire first for huge images; this module applies its own
# limits, so Pillow's is disabled here and in nothing else.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageLimits:
    """Bounds that every decoded image must respect.

    Attributes:
        max_bytes: Largest accepted file or upload, in bytes.
        max_pixels: Largest accepted width x height, checked before decoding.
        min_side: Smallest accepted width or height in pixels. A tile below this shows
            too little tissue for any of the models.
    """

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16


DEFAULT_LIMITS = ImageLimits()


@dataclass
class LoadedImage:
    """A decoded tile and what was done to get it.

    Attributes:
        array: ``(H, W, 3)`` ``uint8`` RGB pixels, C-contiguous.
        name: File path or upload name, as the user gave it.
        format: Container format reported by the decoder (``PNG``, ``JPEG``, ``TIFF``...).
        source_mode: Pixel mode before conversion (Pillow mode name or a NumPy dtype).
        sha256: Hex digest of the encoded bytes, used as a cache key.
        frames: Number of frames in the file; only the first is used.
        warnings: Conversions the user should know about.
    """

    array: np.ndarray
    name: str
    format: str
    source_mode: str
    sha256: str
    frames: int = 1
    warnings: list[TileWarning] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])


def read_source_bytes(
    source: str | os.PathLike | bytes | BinaryIO,
    name: str | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> tuple[bytes, str]:
    """Read a path, bytes or binary file object, enforcing ``limits.max_bytes``.

    Returns:
        The encoded bytes and the display name of the source.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        display = name or "<upload>"
    elif hasattr(source, "read"):
        display = name or str(getattr(source, "name", "<upload>"))
        data = source.read(limits.max_bytes + 1)
    else:
        path = Path(source)
        display = name or str(path)
        data = _read_path(path, display, limits)

    if len(data) > limits.max_bytes:
        raise ImageError(
            f"{display}: file is larger than the {limits.max_bytes / 2**20:.0f} MiB limit; "
            "crop or downscale it to tiles first."
        )
    if not data:
        raise ImageError(
            f"{display}: file is empty (0 bytes); upload the tile again or re-export it."
        )
    return data, display


def _read_path(path: Path, display: str, limits: ImageLimits) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{display}: file not found; check the path.") from None
    except OSError as exc:
        raise ImageError(f"{display}: cannot access the file ({exc.strerror}).") from None

    if path.is_dir():
        raise ImageError(f"{display}: is a folder, not an image; give the image files in it.")
    if size > limits.max_bytes:
        raise ImageError(
            f"{display}: file is {size / 2**20:.1f} MiB, above the "
            f"{limits.max_bytes / 2**20:.0f} MiB limit; crop or downscale it to tiles first."
        )
    try:
        # O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer.
        # The type check below then rejects it, and any device, before a byte is read.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        raise ImageError(
            f"{display}: permission denied; make the file readable for this user."
        ) from None
    except OSError as exc:
        raise ImageError(f"{display}: cannot read the file ({exc.strerror}).") from None

    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ImageError(
                f"{display}: not a regular file (a FIFO, socket or device); give an image file."
            )
        try:
            # The size was checked above, but the file may have grown since.
            return handle.read(limits.max_bytes + 1)
        except OSError as exc:
            raise ImageError(f"{display}: cannot read the file ({exc.strerror}).") from None


def load_image(
    source: str | os.PathLike | bytes | BinaryIO,
    *,
    name: str | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> LoadedImage:
    """Decode one tile into RGB ``uint8``.

    Args:
        source: A path, the encoded bytes, or a binary file object (an upload).
        name: Name to use in messages and results; defaults to the path.
        limits: Size bounds, checked before decoding.

    Raises:
        ImageError: The source is unreadable, not an image, corrupt, or outside the limits.
    """
    data, display = read_source_bytes(source, name, limits)
    digest = hashlib.sha256(data).hexdigest()
    notes: list[TileWarning] = []

    try:
        array, fmt, mode, frames = _decode_with_pillow(data, display, limits, notes)
    except _PillowCannotDecode as exc:
        if not _looks_like_tiff(data):
            raise ImageError(str(exc)) from None
        array, fmt, mode, frames = _decode_with_tifffile(data, display, limits, notes)

    _check_dimensions(array.shape[1], array.shape[0], display, limits)
    return LoadedImage(
        array=np.ascontiguousarray(array),
        name=display,
        format=fmt,
        source_mode=mode,
        sha256=digest,
        frames=frames,
        warnings=notes,
    )


class _PillowCannotDecode(Exception):
    """Pillow failed; the message is ready for the user if no fallback applies."""


def _archive_kind(data: bytes) -> str | None:
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if data.startswith(b"Rar!\x1a\x07"):
        return "RAR"
    return None


def _looks_like_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _check_dimensions(width: int, height: int, display: str, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageError(
            f"{display}: image is {width}x{height} px ({width * height / 1e6:.0f} megapixels), "
            f"above the {limits.max_pixels / 1e6:.0f} megapixel limit; cut it into tiles first."
        )
    if min(width, height) < limits.min_side:
        raise ImageError(
            f"{display}: image is only {width}x{height} px; tiles must be at least "
            f"{limits.min_side} px on each side. Export the tile at its full size."
        )


def _decode_with_pillow(
    data: bytes, display: str, limits: ImageLimits, notes: list[TileWarning]
) -> tuple[np.ndarray, str, str, int]:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        archive = _archive_kind(data)
        if archive:
            raise _PillowCannotDecode(
                f"{display}: is a {archive} archive, not an image; extract the tiles from it first."
            ) from None
        raise _PillowCannotDecode(
            f"{display}: not a recognised image file (first bytes {data[:8]!r}); "
            f"save it as {SUPPORTED_FORMATS_TEXT}."
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise _PillowCannotDecode(
            f"{display}: cannot read the image header ({exc}); re-export the file."
        ) from None

    with image:
        fmt = image.format or "unknown"
        # The header alone gives the size: check it before any pixel is decoded.
        _check_dimensions(image.width, image.height, display, limits)

        frames = int(getattr(image, "n_frames", 1) or 1)
        if frames > 1:
            notes.append(
                TileWarning(
                    "multi_frame",
                    f"{display} has {frames} frames (pages); only the first was used.",
                )
            )
            image.seek(0)

        mode = image.mode
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
                image = ImageOps.exif_transpose(image)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombWarning) as exc:
            if fmt == "TIFF":
                raise _PillowCannotDecode(str(exc)) from None
            raise ImageError(
                f"{display}: the {fmt} data is truncated or corrupt ({exc}); "
                "re-export or download the file again."
            ) from None
        except Image.DecompressionBombError:
            raise ImageError(
                f"{display}: declares an image too large to decode safely; cut it into tiles."
            ) from None

        if _is_high_bit_depth(image):
            if fmt == "TIFF":
                # tifffile reads 16-bit and float TIFF samples without Pillow's mode limits.
                raise _PillowCannotDecode(f"{display}: {mode} TIFF")
            array = _scale_to_uint8(np.asarray(image), display, notes)
            array = np.repeat(array[..., None], 3, axis=2)
            return array, fmt, mode, frames

        return _to_rgb(image, display, notes), fmt, mode, frames


def _is_high_bit_depth(image: Image.Image) -> bool:
    return image.mode in ("I", "F") or image.mode.startswith("I;16")


def _to_rgb(image: Image.Image, display: str, notes: list[TileWarning]) -> np.ndarray:
    mode = image.mode
    has_transparency = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )

    if has_transparency:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        if alpha.min() < 255:
            notes.append(
                TileWarning(
                    "transparency",
                    f"{display} has transparent pixels; they were filled with white.",
                )
            )
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)

    if image.mode != "RGB":
        if image.mode not in ("RGBA",) and mode not in ("L", "1", "P"):
            logger.debug("%s: converting mode %s to RGB", display, mode)
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _scale_to_uint8(array: np.ndarray, display: str, notes: list[TileWarning]) -> np.ndarray:
    """Map 16-bit, 32-bit integer or float samples onto 0..255."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(finite.max()) if finite.size else 0.0
        bottom = float(finite.min()) if finite.size else 0.0
        if bottom >= 0.0 and top <= 1.0:
            scaled = finite * 255.0
        elif bottom >= 0.0 and top <= 255.0:
            scaled = finite
        else:
            notes.append(
                TileWarning(
                    "rescaled_values",
                    f"{display} holds float values from {bottom:.3g} to {top:.3g}; "
                    "they were stretched to 0-255.",
                )
            )
            span = top - bottom if top > bottom else 1.0
            scaled = (finite - bottom) / span * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    values = array.astype(np.int64)
    if values.min() < 0:
        values = values - values.min()
    top = int(values.max()) if values.size else 0
    if top <= 255:
        return values.astype(np.uint8)
    if top <= 65535:
        # 16-bit full range: value / 257 maps 65535 to 255 exactly.
        return np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    notes.append(
        TileWarning(
            "rescaled_values",
            f"{display} holds integer values up to {top}; they were scaled to 0-255.",
        )
    )
    return np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)


def _decode_with_tifffile(
    data: bytes, display: str, limits: ImageLimits, notes: list[TileWarning]
) -> tuple[np.ndarray, str, str, int]:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pages = len(tif.pages)
            page = tif.pages[0]
            shape = page.shape
            height, width = _tiff_height_width(shape, page)
            _check_dimensions(width, height, display, limits)
            array = page.asarray()
            photometric = str(getattr(page.photometric, "name", page.photometric))
    except ImageError:
        raise
    except Exception as exc:  # tifffile raises many exception types for corrupt files.
        raise ImageError(
            f"{display}: the TIFF data is truncated or corrupt ({exc}); "
            "re-export or download the file again."
        ) from None

    if pages > 1:
        notes.append(
            TileWarning(
                "multi_frame",
                f"{display} has {pages} pages; only the first was used.",
            )
        )

    source_mode = f"{array.dtype.name} {photometric}"
    array = _tiff_array_to_rgb(array, photometric, display, notes)
    return array, "TIFF", source_mode, pages


def _tiff_height_width(shape: tuple[int, ...], page) -> tuple[int, int]:
    height = int(getattr(page, "imagelength", shape[0]))
    width = int(getattr(page, "imagewidth", shape[1] if len(shape) > 1 else 1))
    return height, width


def _tiff_array_to_rgb(
    array: np.ndarray, photometric: str, display: str, notes: list[TileWarning]
) -> np.ndarray:
    if array.ndim == 2:
        grey = _scale_to_uint8(array, display, notes)
        if photometric == "MINISWHITE":
            grey = 255 - grey
        return np.repeat(grey[..., None], 3, axis=2)

    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar (C, H, W) storage
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageError(
            f"{display}: TIFF with sample shape {array.shape} is not an RGB or greyscale "
            "image; export the tile as an RGB TIFF or PNG."
        )

    channels = array.shape[2]
    if channels in (1, 2):
        grey = _scale_to_uint8(array[..., 0], display, notes)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        alpha = array[..., 1] if channels == 2 else None
    else:
        rgb = _scale_to_uint8(array[..., :3], display, notes)
        alpha = array[..., 3] if channels == 4 else None

    if alpha is not None:
        weight = _scale_to_uint8(alpha, display, []).astype(np.float32)[..., None] / 255.0
        if weight.min() < 1.0:
            notes.append(
                TileWarning(
                    "transparency",
                    f"{display} has transparent pixels; they were filled with white.",
                )
            )
        rgb = np.rint(rgb * weight + 255.0 * (1.0 - weight)).astype(np.uint8)
    return rgb
