"""Display copies of tiles: enlarged with visible pixels, or reduced to thumbnails."""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from gastricvision.datasets import TileRecord
from gastricvision.errors import ImageError
from gastricvision.imaging import LoadedImage

from .compute import decode_file

THUMBNAIL_SIDE = 128


def enlarge(array: np.ndarray, side: int = 448) -> np.ndarray:
    """Scale a tile so that its longer side is ``side`` px.

    Enlarging repeats pixels (nearest neighbour), so the enlarged view adds no detail
    that the tile does not have; reducing uses Lanczos filtering.
    """
    image = Image.fromarray(array)
    scale = side / max(image.size)
    if abs(scale - 1.0) < 1e-6:
        return array
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return np.asarray(image.resize(size, resample))


def load_record(record: TileRecord) -> LoadedImage:
    """Decode a dataset tile through the per-file cache.

    Raises:
        ImageError: The file is missing, unreadable or not an image.
    """
    try:
        stat = record.path.stat()
    except OSError as exc:
        raise ImageError(f"{record.relative_path}: cannot read the file ({exc.strerror}).") from None
    return decode_file(str(record.path), int(stat.st_size), int(stat.st_mtime_ns), record.relative_path)


@st.cache_data(max_entries=2048, show_spinner=False)
def _thumbnail(path: str, size: int, mtime_ns: int, name: str, side: int) -> np.ndarray:
    image = decode_file(path, size, mtime_ns, name)
    return enlarge(image.array, side) if max(image.array.shape[:2]) > side else image.array


def thumbnail(record: TileRecord, side: int = THUMBNAIL_SIDE) -> np.ndarray | None:
    """Return a small copy of a dataset tile, or None when it cannot be read."""
    try:
        stat = record.path.stat()
        return _thumbnail(str(record.path), int(stat.st_size), int(stat.st_mtime_ns), record.relative_path, side)
    except (OSError, ImageError):
        return None
