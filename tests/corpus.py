"""A corpus of hostile and unusual inputs, built from real H&E tiles, with expected outcomes.

Each entry of :data:`FILE_CASES`, :data:`PATH_CASES` and :data:`ARCHIVE_CASES` is one
kind of input a user's scanner, phone or archive may produce, and what GastricVision
must do with it. ``tests/test_corpus.py`` runs every entry through the library, the
command line and the app, so a new kind of input is one new entry here.

Nothing here is committed as a binary file: :func:`write_corpus` encodes the cases into
a temporary folder from the real test tiles (``GASTRICVISION_TEST_DATA``).

Tolerances. An accepted case names the RGB pixels the file encodes (``reference``) and
the plain RGB tile whose prediction it must match (``equivalent``, by default those
same pixels):

- The loader must return exactly the reference pixels. For lossless files the
  reference is the tile itself. For JPEG files it is an independent decode of the same
  bytes by OpenCV, with EXIF orientation applied, and for CMYK JPEG the raw CMYK
  samples converted by R = (255 - C)(255 - K) / 255 in integer arithmetic.
- Its probabilities may differ from the equivalent tile's by at most
  :data:`PROBABILITY_TOLERANCE` (1e-4), which leaves room only for the float rounding
  of a different batch composition.
- A JPEG case must also stay within :data:`JPEG_LOSS` of the tile it was encoded from:
  3 grey levels of mean absolute difference, where quality 95 costs about 1 to 2.

Why not compare a JPEG's prediction with the tile before encoding: the shipped binary
model is fragile to imperceptible changes. Adding random noise of at most one grey
level to the corpus tile moved its P(Abnormal) from 0.42 to 0.81 in a measurement with
these weights, so such a comparison would measure the model, not the loader.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import tifffile
from PIL import Image

from gastricvision.imaging import DEFAULT_LIMITS

ACCEPT = "accept"
REJECT = "reject"

# The base tile: a real GasHisSDB Abnormal tile (160 px, RGB PNG) on which the shipped
# binary model is uncertain (P(Abnormal) near 0.4), so that a change of pixels shows in
# its prediction instead of vanishing in a saturated softmax.
BASE_TILE = Path("gashissdb/160/Abnormal/Abnormal-00011.png")
REAL_JPEG_FOLDER = Path("nct-crc-he/CRC-VAL-HE-7K/TUM")
REAL_TIFF_FOLDER = Path("nct-crc-he/CRC-VAL-HE-7K")
LARGE_FOLDER = Path("lc25000")

MEGAPIXEL_LIMIT = DEFAULT_LIMITS.max_pixels / 1e6
BYTE_LIMIT_MIB = DEFAULT_LIMITS.max_bytes / 2**20
MIN_SIDE = DEFAULT_LIMITS.min_side


PROBABILITY_TOLERANCE = 1e-4
JPEG_LOSS = 3.0


@dataclass(frozen=True)
class Sources:
    """The real images the cases are built from.

    Attributes:
        tile: The base tile, ``(160, 160, 3)`` uint8 RGB.
        tile_bytes: The base tile's PNG file as found.
        real_jpeg: Bytes of a real NCT-CRC-HE JPEG tile.
        real_tiff: Bytes of a real NCT-CRC-HE TIFF tile.
        large_images: Real 768 px LC25000 JPEG files, decoded, for mosaics.
    """

    tile: np.ndarray
    tile_bytes: bytes
    real_jpeg: bytes
    real_tiff: bytes
    large_images: list[np.ndarray]


def load_sources(shared_data: Path) -> Sources:
    """Read the real images the corpus is built from."""
    tile_path = shared_data / BASE_TILE
    with Image.open(tile_path) as image:
        tile = np.asarray(image.convert("RGB"))
    jpeg = sorted((shared_data / REAL_JPEG_FOLDER).glob("*.jp*g"))[0]
    tiff = sorted((shared_data / REAL_TIFF_FOLDER).rglob("*.tif"))[0]
    large = []
    for path in sorted((shared_data / LARGE_FOLDER).glob("colon_*/*.jpeg"))[:80]:
        with Image.open(path) as image:
            large.append(np.asarray(image.convert("RGB")))
    return Sources(tile, tile_path.read_bytes(), jpeg.read_bytes(), tiff.read_bytes(), large)


# --------------------------------------------------------------------------- encoders


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def encode_tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def opencv_decode(data: bytes) -> np.ndarray:
    """Decode with OpenCV (its own libjpeg-turbo, EXIF orientation applied), not Pillow."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def jpeg(array: np.ndarray, quality: int = 95, **options) -> tuple[bytes, np.ndarray]:
    """JPEG bytes of ``array`` and the RGB pixels they encode, decoded by OpenCV."""
    data = encode(Image.fromarray(np.ascontiguousarray(array)), "JPEG", quality=quality, **options)
    return data, opencv_decode(data)


def cmyk_jpeg(tile: np.ndarray) -> tuple[bytes, np.ndarray]:
    """A CMYK JPEG of the tile and the RGB it encodes: R = (255 - C)(255 - K) / 255, rounded."""
    data = encode(Image.fromarray(tile).convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as image:
        cmyk = np.asarray(image).astype(np.int32)
    ink, black = cmyk[..., :3], cmyk[..., 3:]
    white = 255 - black
    product = ink * white + 128
    return data, np.clip(white - (((product >> 8) + product) >> 8), 0, 255).astype(np.uint8)


def tiff_pixels(data: bytes) -> np.ndarray:
    return tifffile.imread(io.BytesIO(data))


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    return encode(Image.fromarray(array, mode) if mode else Image.fromarray(array), "PNG")


def grey(tile: np.ndarray) -> np.ndarray:
    """Greyscale as Pillow computes it (ITU-R 601-2 luma), repeated into three channels."""
    luma = np.asarray(Image.fromarray(tile).convert("L"))
    return np.repeat(luma[..., None], 3, axis=2)


def mosaic(images: list[np.ndarray], columns: int, rows: int) -> np.ndarray:
    """Tile ``columns`` x ``rows`` images (reused in turn when there are fewer)."""
    side = images[0].shape[0]
    canvas = np.empty((rows * side, columns * side, 3), np.uint8)
    for index in range(columns * rows):
        row, column = divmod(index, columns)
        canvas[row * side : (row + 1) * side, column * side : (column + 1) * side] = images[index % len(images)]
    return canvas


def declared_size_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header declares ``width`` x ``height`` (a decompression bomb)."""
    data = png(np.zeros((1, 1, 3), np.uint8))
    start = data.index(b"IHDR")
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return data[:start] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[start + 4 + 13 + 4 :]


def declared_size_tiff(width: int, height: int) -> bytes:
    """A 16x16 TIFF whose image width and length tags declare ``width`` x ``height``."""
    data = bytearray(encode_tiff(np.zeros((16, 16), np.uint8)))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages[0].tags
        offsets = {tag.code: tag.valueoffset for tag in tags.values() if tag.code in (256, 257)}
        types = {tag.code: tag.dtype for tag in tags.values() if tag.code in (256, 257)}
    for code, value in ((256, width), (257, height)):
        fmt = "<I" if types[code] == 4 else "<H"
        struct.pack_into(fmt, data, offsets[code], value)
    return bytes(data)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def after_ihdr(data: bytes) -> int:
    return data.index(b"IHDR") + 4 + 13 + 4


def text_bomb_png(tile: np.ndarray) -> bytes:
    """The tile with a zTXt chunk that inflates to 64 MiB of text."""
    data = png(tile)
    bomb = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * (64 * 2**20), 9))
    return data[: after_ihdr(data)] + bomb + data[after_ihdr(data) :]


def header_only_png(tile: np.ndarray) -> bytes:
    data = png(tile)
    return data[: after_ihdr(data)] + png_chunk(b"IEND", b"")


def corrupt_png_data(tile: np.ndarray) -> bytes:
    """The tile with 64 bytes of its compressed pixel data scrambled."""
    data = bytearray(png(tile))
    start = data.index(b"IDAT") + 200
    for index in range(start, start + 64):
        data[index] ^= 0x5A
    return bytes(data)


def orientation(value: int) -> Image.Exif:
    """EXIF data holding only the orientation tag (0x0112)."""
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def palette_image(tile: np.ndarray, colours: int = 64) -> Image.Image:
    return Image.fromarray(tile).quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def palette_transparency(tile: np.ndarray) -> tuple[bytes, np.ndarray]:
    """A palette PNG whose most common palette entry is transparent, and its RGB on white."""
    image = palette_image(tile)
    indices = np.asarray(image)
    transparent = int(np.bincount(indices.ravel()).argmax())
    data = encode(image, "PNG", transparency=transparent)
    expected = np.asarray(image.convert("RGB")).copy()
    expected[indices == transparent] = 255
    return data, expected


def rgba_with_hole(tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGBA: the tile with a fully transparent 40 px corner, and the expected RGB on white."""
    alpha = np.full(tile.shape[:2], 255, np.uint8)
    alpha[:40, :40] = 0
    expected = tile.copy()
    expected[:40, :40] = 255
    return np.dstack([tile, alpha]), expected


def la_with_hole(tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    luma = grey(tile)[..., 0]
    alpha = np.full(tile.shape[:2], 255, np.uint8)
    alpha[-30:, -30:] = 0
    expected = grey(tile).copy()
    expected[-30:, -30:] = 255
    return np.dstack([luma, alpha]), expected


def animated_gif(tile: np.ndarray) -> tuple[bytes, np.ndarray]:
    first = palette_image(tile, 255)
    second = Image.fromarray(255 - tile).quantize(255)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=200, loop=0)
    return data, np.asarray(first.convert("RGB"))


def animated_png(tile: np.ndarray) -> bytes:
    frames = [Image.fromarray(tile), Image.fromarray(np.ascontiguousarray(tile[::-1]))]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=200)


def multipage_tiff(tile: np.ndarray) -> bytes:
    pages = [Image.fromarray(tile), Image.fromarray(255 - tile)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:], compression="tiff_lzw")


def oversized_png(tile: np.ndarray) -> bytes:
    """A valid PNG followed by junk up to one MiB over the byte limit."""
    data = png(tile)
    return data + bytes(DEFAULT_LIMITS.max_bytes + 2**20 - len(data))


def tiff_five_channels(tile: np.ndarray) -> bytes:
    extra = np.dstack([tile, grey(tile)[..., :2]])
    return encode_tiff(extra, photometric="minisblack", planarconfig="contig")


def chelsea() -> np.ndarray:
    from skimage import data

    return data.chelsea()


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


# --------------------------------------------------------------------------- file cases


SAME_PIXELS = "same pixels"


@dataclass(frozen=True)
class FileCase:
    """One kind of image file and what every front end must do with it.

    Attributes:
        name: Identifier, used as the test id.
        filename: Name of the file written to disk.
        build: Encodes the file from the real sources; returns the bytes, or the bytes
            and the expected RGB pixels when they are not ``reference``'s.
        expect: :data:`ACCEPT` or :data:`REJECT`.
        message: For a rejected case, a regular expression the message must match after
            the ``<file name>: `` prefix; it includes the fix the message proposes.
        reference: For an accepted case, the RGB pixels the loader must return (None
            when ``build`` returns them).
        equivalent: The plain RGB tile whose prediction this case must match:
            :data:`SAME_PIXELS` for the expected pixels themselves, None when no plain
            tile has the same content at the same scale.
        original: For a lossy case, the pixels before encoding, which the decoded pixels
            must stay within :data:`JPEG_LOSS` of.
        warnings: Warning codes the loader or predictor must report.
        upload_name: Name under which the app receives the file (default ``filename``);
            a browser may send any name, including path separators.
        explain: Also run ``gastricvision explain`` on it (rejected cases, and accepted
            ones whose name or geometry changes explain's outputs).
    """

    name: str
    filename: str
    build: Callable[[Sources], bytes | tuple[bytes, np.ndarray]]
    expect: str
    message: str | None = None
    reference: Callable[[Sources], np.ndarray] | None = None
    equivalent: Callable[[Sources], np.ndarray] | str | None = None
    original: Callable[[Sources], np.ndarray] | None = None
    warnings: frozenset[str] = frozenset()
    upload_name: str | None = None
    explain: bool = False

    @property
    def shown_name(self) -> str:
        return self.upload_name or self.filename


def _tile(s: Sources) -> np.ndarray:
    return s.tile


def accepted(
    name: str,
    filename: str,
    build,
    reference=_tile,
    equivalent=SAME_PIXELS,
    warnings=(),
    **options,
) -> FileCase:
    """Build an accepted case, which predicts like its own expected pixels unless ``equivalent`` names other pixels."""
    return FileCase(
        name, filename, build, ACCEPT, reference=reference, equivalent=equivalent,
        warnings=frozenset(warnings), **options,
    )


def rejected(name: str, filename: str, build, message: str, **options) -> FileCase:
    return FileCase(name, filename, build, REJECT, message=message, explain=True, **options)


TRUNCATED = r"the {fmt} data is truncated or corrupt \(.+\); re-export or download the file again\."
UNREADABLE_HEADER = r"cannot read the image header \(.+\); re-export the file\."
NOT_AN_IMAGE = r"not a recognised image file \(first bytes .+\); save it as PNG, JPEG, TIFF, BMP, GIF or WebP\."
OVER_PIXELS = (
    r"image is {size} px \(\d+ megapixels\), above the "
    + f"{MEGAPIXEL_LIMIT:.0f}"
    + r" megapixel limit; cut it into tiles first\."
)
TOO_SMALL = r"image is only {size} px; tiles must be at least " + str(MIN_SIDE) + r" px on each side\. Export the tile at its full size\."
OVER_BYTES = (
    r"(file is [\d.]+ MiB, above|file is larger than) the "
    + f"{BYTE_LIMIT_MIB:.0f}"
    + r" MiB limit; crop or downscale it to tiles first\."
)

SHELL_NAME = "$(touch PWNED) `touch PWNED2`; rm -rf x & echo |*?<>'\".png"

FILE_CASES: list[FileCase] = [
    # The plain tile comes first: the Review page shows the first accepted upload.
    accepted("plain_png", "plain.png", lambda s: s.tile_bytes, explain=True),
    accepted("real_jpeg", "real-nct.jpg", lambda s: (s.real_jpeg, opencv_decode(s.real_jpeg)), reference=None),
    accepted("real_tiff", "real-nct.tif", lambda s: (s.real_tiff, tiff_pixels(s.real_tiff)), reference=None),
    accepted("jpeg_quality_95", "tile-q95.jpg", lambda s: jpeg(s.tile), reference=None, original=_tile),
    accepted("png_named_jpg", "really-a-png.jpg", lambda s: png(s.tile)),
    accepted("no_extension", "tile-without-suffix", lambda s: png(s.tile)),
    accepted("bmp", "tile.bmp", lambda s: encode(Image.fromarray(s.tile), "BMP")),
    accepted("webp_lossless", "tile.webp", lambda s: encode(Image.fromarray(s.tile), "WEBP", lossless=True)),
    accepted("rgba_opaque", "rgba-opaque.png", lambda s: png(np.dstack([s.tile, np.full(s.tile.shape[:2], 255, np.uint8)]))),
    accepted(
        "rgba_transparent", "rgba-hole.png", lambda s: (png(rgba_with_hole(s.tile)[0]), rgba_with_hole(s.tile)[1]),
        reference=None, warnings={"transparency"},
    ),
    accepted(
        "la_transparent", "la-hole.png", lambda s: (png(la_with_hole(s.tile)[0], "LA"), la_with_hole(s.tile)[1]),
        reference=None, warnings={"transparency", "greyscale"},
    ),
    accepted("palette_transparency", "palette-trns.png", lambda s: palette_transparency(s.tile), reference=None, warnings={"transparency"}),
    accepted("greyscale", "grey.png", lambda s: png(grey(s.tile)[..., 0]), reference=lambda s: grey(s.tile), warnings={"greyscale"}),
    accepted(
        "bilevel", "one-bit.png", lambda s: encode(Image.fromarray(s.tile).convert("1"), "PNG"),
        reference=lambda s: np.asarray(Image.fromarray(s.tile).convert("1").convert("RGB")),
    ),
    accepted(
        "grey_16bit_png", "grey16.png", lambda s: encode(Image.fromarray(grey(s.tile)[..., 0].astype(np.uint16) * 257), "PNG"),
        reference=lambda s: grey(s.tile), warnings={"greyscale"},
    ),
    accepted("rgb_16bit_tiff", "rgb16.tif", lambda s: encode_tiff(s.tile.astype(np.uint16) * 257, photometric="rgb")),
    accepted("float_tiff", "float32.tif", lambda s: encode_tiff(s.tile.astype(np.float32) / 255.0, photometric="rgb")),
    accepted("cmyk_jpeg", "cmyk.jpg", lambda s: cmyk_jpeg(s.tile), reference=None, original=_tile),
    accepted("cmyk_tiff", "cmyk.tif", lambda s: encode(Image.fromarray(s.tile).convert("CMYK"), "TIFF")),
    # Orientation 6: the stored pixels are the picture turned 90 degrees anticlockwise,
    # to be shown turned clockwise. A 160x120 crop shows a swapped width and height.
    accepted(
        "exif_rotated_jpeg", "exif-rotated.jpg", lambda s: jpeg(np.rot90(s.tile[:, :120], 1), exif=orientation(6)),
        reference=None, original=lambda s: s.tile[:, :120], explain=True,
    ),
    # Orientation 8: stored turned clockwise, shown turned anticlockwise.
    accepted(
        "exif_rotated_png", "exif-rotated.png",
        lambda s: encode(Image.fromarray(np.ascontiguousarray(np.rot90(s.tile[:, :120], -1))), "PNG", exif=orientation(8)),
        reference=lambda s: s.tile[:, :120], explain=True,
    ),
    accepted("animated_gif", "animated.gif", lambda s: animated_gif(s.tile), reference=None, warnings={"multi_frame"}),
    accepted("animated_png", "animated.png", lambda s: animated_png(s.tile), warnings={"multi_frame"}),
    accepted("multipage_tiff", "pages.tif", lambda s: multipage_tiff(s.tile), warnings={"multi_frame"}),
    # 8 x 8 copies of the tile: the predictor cuts exactly the tile 64 times.
    accepted(
        "large_grid", "grid-1280.png", lambda s: png(mosaic([s.tile], 8, 8)),
        reference=lambda s: mosaic([s.tile], 8, 8), equivalent=_tile, warnings={"tiled"},
    ),
    # A real 37.7 megapixel mosaic of LC25000 images, just under the pixel limit. It is
    # reduced before cutting, so no plain tile has the same content at the same scale.
    accepted(
        "very_large_real", "mosaic-6144.jpg", lambda s: jpeg(mosaic(s.large_images, 8, 8)),
        reference=None, original=lambda s: mosaic(s.large_images, 8, 8), equivalent=None, warnings={"tiled", "scale_mismatch"},
    ),
    accepted(
        "smallest_side", f"tile-{MIN_SIDE}px.png", lambda s: png(np.ascontiguousarray(s.tile[:MIN_SIDE, :MIN_SIDE])),
        reference=lambda s: s.tile[:MIN_SIDE, :MIN_SIDE], warnings={"scale_mismatch"},
    ),
    accepted("blank_white", "blank-white.png", lambda s: png(np.full((160, 160, 3), 255, np.uint8)), reference=lambda s: np.full((160, 160, 3), 255, np.uint8), warnings={"mostly_background"}),
    accepted("blank_black", "blank-black.png", lambda s: png(np.zeros((160, 160, 3), np.uint8)), reference=lambda s: np.zeros((160, 160, 3), np.uint8), warnings={"greyscale"}),
    # Not H&E at all: accepted, because nothing in the file is wrong; only a person can
    # tell that the predictions mean nothing.
    accepted("photo_cat", "chelsea.png", lambda s: png(chelsea()), reference=lambda s: chelsea(), equivalent=None),
    accepted("photo_astronaut", "astronaut.jpg", lambda s: jpeg(astronaut()), reference=None, original=lambda s: astronaut(), equivalent=None),
    accepted("name_spaces", "tile with  spaces .png", lambda s: s.tile_bytes, explain=True),
    accepted("name_unicode", "ünïcødé 胃 τομή 🔬.png", lambda s: s.tile_bytes, explain=True),
    accepted("name_shell", SHELL_NAME, lambda s: s.tile_bytes, explain=True),
    accepted("name_dashes", "--help -rf.png", lambda s: s.tile_bytes, explain=True),
    # A browser sends only a base name, but a hostile client may send any name.
    accepted("name_traversal", "dotdot-name.png", lambda s: s.tile_bytes, upload_name="../../escape/dotdot-name.png"),
    rejected("zero_bytes", "empty.png", lambda s: b"", r"file is empty \(0 bytes\); upload the tile again or re-export it\."),
    rejected("truncated_png", "truncated.png", lambda s: s.tile_bytes[: len(s.tile_bytes) // 2], TRUNCATED.format(fmt="PNG")),
    rejected("truncated_jpeg", "truncated.jpg", lambda s: s.real_jpeg[: len(s.real_jpeg) // 3], TRUNCATED.format(fmt="JPEG")),
    rejected("truncated_tiff", "truncated.tif", lambda s: s.real_tiff[: len(s.real_tiff) // 3], TRUNCATED.format(fmt="TIFF")),
    rejected("truncated_gif", "truncated.gif", lambda s: animated_gif(s.tile)[0][:2000], TRUNCATED.format(fmt="GIF")),
    rejected(
        "truncated_webp", "truncated.webp",
        lambda s: (lambda data: data[: len(data) // 2])(encode(Image.fromarray(s.tile), "WEBP", lossless=True)), UNREADABLE_HEADER,
    ),
    rejected("header_only_png", "header-only.png", lambda s: header_only_png(s.tile), TRUNCATED.format(fmt="PNG")),
    rejected("corrupt_png_data", "corrupt-data.png", lambda s: corrupt_png_data(s.tile), TRUNCATED.format(fmt="PNG")),
    rejected("text_named_png", "notes.png", lambda s: b"Slide 4, stomach, HE 20x\n", NOT_AN_IMAGE),
    rejected("html_named_png", "download.png", lambda s: b"<!DOCTYPE html><html><body>403 Forbidden</body></html>", NOT_AN_IMAGE),
    rejected("pdf_named_png", "report.png", lambda s: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", NOT_AN_IMAGE),
    rejected("png_bomb", "bomb.png", lambda s: declared_size_png(100_000, 100_000), OVER_PIXELS.format(size="100000x100000")),
    rejected("tiff_bomb", "bomb.tif", lambda s: declared_size_tiff(100_000, 100_000), OVER_PIXELS.format(size="100000x100000")),
    rejected(
        "real_over_pixel_limit", "mosaic-7680.jpg", lambda s: encode(Image.fromarray(mosaic(s.large_images, 10, 8)), "JPEG", quality=80),
        OVER_PIXELS.format(size="7680x6144"),
    ),
    rejected("png_text_bomb", "text-bomb.png", lambda s: text_bomb_png(s.tile), UNREADABLE_HEADER),
    rejected("one_pixel", "1x1.png", lambda s: png(s.tile[:1, :1]), TOO_SMALL.format(size="1x1")),
    rejected("two_pixels", "2x2.png", lambda s: png(s.tile[:2, :2]), TOO_SMALL.format(size="2x2")),
    rejected("thin_strip", "strip.png", lambda s: png(np.ascontiguousarray(np.tile(s.tile, (1, 25, 1))[: MIN_SIDE - 1])), TOO_SMALL.format(size=f"4000x{MIN_SIDE - 1}")),
    rejected("over_byte_limit", "padded.png", lambda s: oversized_png(s.tile), OVER_BYTES),
    rejected(
        "tiff_five_channels", "five-channels.tif", lambda s: tiff_five_channels(s.tile),
        r"TIFF with sample shape \(160, 160, 5\) is not an RGB or greyscale image; export the tile as an RGB TIFF or PNG\.",
    ),
]


def file_case_bytes(case: FileCase, sources: Sources) -> tuple[bytes, np.ndarray | None]:
    """Encode ``case``; return its bytes and, for an accepted case, its expected pixels."""
    built = case.build(sources)
    if isinstance(built, tuple):
        return built
    if case.expect == REJECT:
        return built, None
    return built, case.reference(sources)


# --------------------------------------------------------------------------- path cases


@dataclass(frozen=True)
class PathCase:
    """A path that is not a readable image file; only the library and the command line
    open paths, so the app has no counterpart.

    Attributes:
        name: Identifier, used as the test id.
        filename: Name of the path in the corpus folder.
        create: Makes the path inside the corpus folder.
        message: Regular expression the message must match after ``<path>: ``.
        cli_message: The same for ``gastricvision predict`` when it differs, because the
            command line expands folders into the images below them.
        skip_reason: Why the case cannot run on this machine, or None.
    """

    name: str
    filename: str
    create: Callable[[Path, Sources], None]
    message: str
    cli_message: str | None = None
    skip_reason: str | None = None


def _make_fifo(path: Path, sources: Sources) -> None:
    os.mkfifo(path)


def _make_folder(path: Path, sources: Sources) -> None:
    path.mkdir()
    (path / "readme.txt").write_text("not a tile")


def _make_dangling_link(path: Path, sources: Sources) -> None:
    path.symlink_to(path.parent / "no-such-target.png")


def _make_device_link(path: Path, sources: Sources) -> None:
    path.symlink_to("/dev/zero")


def _make_unreadable(path: Path, sources: Sources) -> None:
    path.write_bytes(sources.tile_bytes)
    path.chmod(0)


def _nothing(path: Path, sources: Sources) -> None:
    return None


RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

PATH_CASES: list[PathCase] = [
    PathCase("fifo", "fifo.png", _make_fifo, r"not a regular file \(a FIFO, socket or device\); give an image file\."),
    PathCase("device_link", "zero.png", _make_device_link, r"not a regular file \(a FIFO, socket or device\); give an image file\."),
    PathCase(
        "folder_named_png", "folder.png", _make_folder, r"is a folder, not an image; give the image files in it\.",
        cli_message=r"folder holds no image files \(\.bmp, .+\)\.",
    ),
    PathCase("missing_file", "missing.png", _nothing, r"file not found; check the path\."),
    PathCase("dangling_link", "dangling.png", _make_dangling_link, r"file not found; check the path\."),
    PathCase(
        "unreadable_file", "no-permission.png", _make_unreadable,
        r"permission denied; make the file readable for this user\.",
        skip_reason=(
            "running as root, where chmod 000 does not stop reads; the FIFO, device and "
            "folder cases cover paths that cannot be read as images"
        ) if RUNNING_AS_ROOT else None,
    ),
]


# --------------------------------------------------------------------------- archives


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_with_links(members: dict[str, bytes], links: dict[str, str]) -> bytes:
    """A zip of ``members`` plus symbolic link members (name to target)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_with_encrypted_first_member(members: dict[str, bytes]) -> bytes:
    """Set the "encrypted" flag (bit 0 of the general purpose flags) of the first member.

    zipfile can read encrypted members but not write them, so the flag is set in the
    member's local header and its central directory entry after writing.
    """
    data = bytearray(zip_bytes(members, compression=zipfile.ZIP_STORED))
    data[data.index(b"PK\x03\x04") + 6] |= 0x1
    data[data.index(b"PK\x01\x02") + 8] |= 0x1
    return bytes(data)


def zip_with_duplicates(tile: bytes) -> bytes:
    import warnings

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate
        archive.writestr("tiles/tile.png", tile)
        archive.writestr("tiles/tile.png", b"second copy, never extracted")
    return buffer.getvalue()


def zip_with_many_members(count: int) -> bytes:
    """A stored zip of ``count`` empty members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in range(count):
            archive.writestr(f"m/{index:06d}", b"")
    return buffer.getvalue()


def rar_with_link(tile: bytes) -> bytes:
    from tests.test_archives import build_rar4

    return build_rar4(
        [
            ("rar-tiles/tile.png", tile, 0o100644),
            ("rar-tiles/link.png", b"/etc/passwd", stat.S_IFLNK | 0o777),
            ("../rar-escape.png", tile, 0o100644),
        ]
    )


@dataclass(frozen=True)
class ArchiveCase:
    """An uploaded archive and what the Batch page and the library's extraction must do.

    Attributes:
        name: Identifier, used as the test id.
        filename: Upload and file name.
        build: Encodes the archive; takes the real sources and a folder outside the
            extraction destination, for members that name an absolute path.
        scored: Member paths whose tiles must be scored.
        rejected: Member path to a regular expression of its image error.
        skipped: Member name to the skip code the extraction must record; ``{outside}``
            in a name stands for the folder outside the destination.
        nested: Member paths of archives that must be listed and left unopened.
        archive_error: Regular expression of the message when the whole archive is
            rejected (after ``<file name>: ``).
        not_images: Member paths listed as not image files.
        cli_message: Regular expression of the error when the file is given to
            ``gastricvision predict`` (after ``<path>: ``).
    """

    name: str
    filename: str
    build: Callable[[Sources, Path], bytes]
    scored: tuple[str, ...] = ()
    rejected: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    nested: tuple[str, ...] = ()
    archive_error: str | None = None
    not_images: tuple[str, ...] = ()
    cli_message: str = r"is a zip archive, not an image; extract the tiles from it first\."


TINY_FILES = 1000

ARCHIVE_CASES: list[ArchiveCase] = [
    ArchiveCase(
        "zip_slip", "zip-slip.zip",
        lambda s, outside: zip_bytes({"../zip-slip.png": s.tile_bytes, "a/../../zip-slip-2.png": s.tile_bytes, "ok/tile.png": s.tile_bytes}),
        scored=("ok/tile.png",), skipped={"../zip-slip.png": "path_traversal", "a/../../zip-slip-2.png": "path_traversal"},
    ),
    ArchiveCase(
        "absolute_paths", "absolute.zip",
        lambda s, outside: zip_bytes({str(outside / "absolute.png"): s.tile_bytes, "C:\\Windows\\tile.png": s.tile_bytes, "ok.png": s.tile_bytes}),
        scored=("ok.png",), skipped={"{outside}/absolute.png": "absolute_path", "C:\\Windows\\tile.png": "absolute_path"},
    ),
    ArchiveCase(
        "symlink_members", "links.zip",
        lambda s, outside: zip_with_links({"escape/x.png": s.tile_bytes, "ok.png": s.tile_bytes}, {"passwd.png": "/etc/passwd", "escape": str(outside)}),
        scored=("escape/x.png", "ok.png"), skipped={"passwd.png": "symlink", "escape": "symlink"},
    ),
    ArchiveCase(
        "zip_bomb", "bomb.zip",
        lambda s, outside: zip_bytes({"tile.png": s.tile_bytes, "zeros.png": bytes(64 * 2**20)}),
        archive_error=r"rejected as a likely zip bomb, because member 'zeros\.png' expands .+; nothing was extracted\.",
    ),
    ArchiveCase(
        "nested_zip", "nested.zip",
        lambda s, outside: zip_bytes({"inner.zip": zip_bytes({"inner.png": s.tile_bytes}), "outer.png": s.tile_bytes}),
        scored=("outer.png",), nested=("inner.zip",),
    ),
    ArchiveCase(
        "many_tiny_files", "tiny-files.zip",
        lambda s, outside: zip_bytes(
            {**{f"notes/{i:04d}.txt": b"x" for i in range(TINY_FILES)}, **{f"dots/{i:04d}.png": png(s.tile[:1, :1]) for i in range(TINY_FILES)}, "tile.png": s.tile_bytes}
        ),
        scored=("tile.png",),
        rejected={f"dots/{i:04d}.png": TOO_SMALL.format(size="1x1") for i in range(TINY_FILES)},
        not_images=tuple(f"notes/{i:04d}.txt" for i in range(TINY_FILES)),
    ),
    ArchiveCase(
        "too_many_members", "too-many.zip", lambda s, outside: zip_with_many_members(100_001),
        archive_error=r"rejected, because it has more than 100,000 members \(the max_members limit\); nothing was extracted\.",
    ),
    ArchiveCase(
        "odd_member_names", "names.zip",
        lambda s, outside: zip_bytes({"tile with spaces.png": s.tile_bytes, "ünïcødé 胃.png": s.tile_bytes, "$(touch PWNED);`x`.png": s.tile_bytes}),
        scored=("tile with spaces.png", "ünïcødé 胃.png", "$(touch PWNED);`x`.png"),
    ),
    ArchiveCase(
        "bad_tile_inside", "with-bad-tile.zip",
        lambda s, outside: zip_bytes({"good.png": s.tile_bytes, "truncated.png": s.tile_bytes[:500], "notes.txt": b"stomach"}),
        scored=("good.png",), rejected={"truncated.png": TRUNCATED.format(fmt="PNG")}, not_images=("notes.txt",),
    ),
    ArchiveCase(
        "encrypted_member", "encrypted.zip",
        lambda s, outside: zip_with_encrypted_first_member({"secret.png": s.tile_bytes, "open.png": s.tile_bytes}),
        scored=("open.png",), skipped={"secret.png": "encrypted"},
    ),
    ArchiveCase(
        "duplicate_names", "duplicates.zip", lambda s, outside: zip_with_duplicates(s.tile_bytes),
        scored=("tiles/tile.png",), skipped={"tiles/tile.png": "duplicate"},
    ),
    ArchiveCase(
        "truncated_zip", "truncated.zip",
        lambda s, outside: zip_bytes({"a.png": s.tile_bytes, "b.png": s.tile_bytes})[:-100],
        archive_error=r"not a readable zip archive \(.+\)\.",
    ),
    ArchiveCase(
        "empty_zip", "empty.zip", lambda s, outside: zip_bytes({}),
        archive_error=r"the archive holds no image files; put the tiles themselves in the zip\.",
    ),
    ArchiveCase(
        "text_named_zip", "not-a.zip", lambda s, outside: b"these are not the tiles you are looking for\n",
        archive_error=r"not a zip or RAR archive \(the file starts with .+\); only zip and RAR archives can be extracted\.",
        cli_message=NOT_AN_IMAGE,
    ),
    ArchiveCase(
        "rar_hostile", "hostile.rar", lambda s, outside: rar_with_link(s.tile_bytes),
        scored=("rar-tiles/tile.png",), skipped={"rar-tiles/link.png": "symlink", "../rar-escape.png": "path_traversal"},
        cli_message=r"is a RAR archive, not an image; extract the tiles from it first\.",
    ),
]


# --------------------------------------------------------------------------- writing


@dataclass
class Corpus:
    """The corpus written to disk.

    Attributes:
        folder: Folder holding every file and path case.
        outside: Folder outside any extraction destination; must stay empty.
        sources: The real images the cases were built from.
        files: File case name to (path, bytes, expected pixels or None).
        paths: Path case name to path (cases skipped on this machine left out).
        archives: Archive case name to (path, bytes).
    """

    folder: Path
    outside: Path
    sources: Sources
    files: dict[str, tuple[Path, bytes, np.ndarray | None]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    archives: dict[str, tuple[Path, bytes]] = field(default_factory=dict)

    def listing(self) -> list[str]:
        """Every entry below the corpus and outside folders, relative, for before/after checks."""
        found = []
        for base in (self.folder, self.outside):
            for root, folders, names in os.walk(base):
                for entry in folders + names:
                    found.append(os.path.relpath(os.path.join(root, entry), base.parent))
        return sorted(found)


def write_corpus(base: Path, shared_data: Path) -> Corpus:
    """Encode every case into ``base/corpus`` (``base/outside`` stays empty)."""
    sources = load_sources(shared_data)
    corpus = Corpus(base / "corpus", base / "outside", sources)
    corpus.folder.mkdir(parents=True)
    corpus.outside.mkdir()

    for case in FILE_CASES:
        data, expected = file_case_bytes(case, sources)
        path = corpus.folder / case.filename
        path.write_bytes(data)
        corpus.files[case.name] = (path, data, expected)
    for case in PATH_CASES:
        if case.skip_reason:
            continue
        path = corpus.folder / case.filename
        case.create(path, sources)
        corpus.paths[case.name] = path
    for case in ARCHIVE_CASES:
        data = case.build(sources, corpus.outside)
        path = corpus.folder / case.filename
        path.write_bytes(data)
        corpus.archives[case.name] = (path, data)
    return corpus


def message_pattern(display: str, message: str) -> re.Pattern:
    """The whole message: the file's name as shown, then ``message``."""
    return re.compile(re.escape(display) + ": " + message)


CASE_NAMES = [case.name for case in FILE_CASES] + [case.name for case in PATH_CASES] + [case.name for case in ARCHIVE_CASES]
assert len(CASE_NAMES) == len(set(CASE_NAMES)), "corpus case names must be unique"
