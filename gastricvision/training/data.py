"""Torch datasets over :class:`~gastricvision.datasets.TileRecord` lists.

Training samples are crops at the model's training tile size (random position, then
augmentation); evaluation samples follow the predictor's scale policy exactly
(:func:`~gastricvision.preprocessing.plan_views`), so that ``gastricvision evaluate``
measures what ``gastricvision predict`` returns.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..datasets import TileRecord
from ..errors import ImageError
from ..imaging import load_image
from ..preprocessing import plan_views, resize_uint8
from .augment import AugmentConfig, augment_tile

__all__ = ["EvalTiles", "ImageCache", "TrainTiles", "collate_views", "default_workers"]

logger = logging.getLogger(__name__)


def default_workers() -> int:
    """Loader processes: one core is left for the training process itself."""
    return min(8, max(0, (os.cpu_count() or 2) - 1))


class ImageCache:
    """Decoded images kept in memory up to ``max_bytes`` (least recently used first out).

    Large source images are cut into many crops; caching avoids decoding a 768 px JPEG
    once per crop. Each loader process holds its own cache.
    """

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, path) -> np.ndarray:
        key = str(path)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        array = load_image(path).array
        self._items[key] = array
        self._bytes += array.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes
        return array


def read_record(record: TileRecord) -> np.ndarray:
    """Decode the image of ``record`` and cut out its crop, if it has one."""
    array = load_image(record.path).array
    if record.crop is not None:
        left, top, size = record.crop
        array = array[top : top + size, left : left + size]
    return np.ascontiguousarray(array)


def _crop_record(array: np.ndarray, record: TileRecord, tile: int, rng: np.random.Generator | None) -> np.ndarray:
    """Cut the training crop of ``record``: its grid cell, or a crop of a whole image."""
    height, width = array.shape[:2]
    if record.crop is not None:
        left, top, size = record.crop
        if rng is not None:
            # Jitter the grid cell by up to a quarter tile, staying inside the image.
            left = int(np.clip(left + rng.integers(-size // 4, size // 4 + 1), 0, width - size))
            top = int(np.clip(top + rng.integers(-size // 4, size // 4 + 1), 0, height - size))
        return array[top : top + size, left : left + size]

    if min(height, width) < tile:
        factor = tile / min(height, width)
        array = resize_uint8(array, round(width * factor), round(height * factor))
        height, width = array.shape[:2]
    if rng is None:
        top, left = (height - tile) // 2, (width - tile) // 2
    else:
        top, left = int(rng.integers(0, height - tile + 1)), int(rng.integers(0, width - tile + 1))
    return array[top : top + tile, left : left + tile]


class TrainTiles(Dataset):
    """Augmented training crops with integer labels (-1 for unlabelled records)."""

    def __init__(
        self,
        records: Sequence[TileRecord],
        classes: Sequence[str],
        *,
        tile_size: int,
        input_size: int,
        augment: AugmentConfig | None = AugmentConfig(),
        seed: int = 0,
        cache_bytes: int = 1 << 30,
    ):
        self.records = list(records)
        self.class_index = {name: i for i, name in enumerate(classes)}
        self.tile_size = tile_size
        self.input_size = input_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache = ImageCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def label_of(self, record: TileRecord) -> int:
        return self.class_index.get(record.label, -1) if record.label is not None else -1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        try:
            array = self.cache.get(record.path)
        except ImageError as exc:
            # The split was made from the file list; a file that broke since is replaced
            # by another so that one bad tile does not end a long run.
            logger.warning("Skipping unreadable training tile: %s", exc)
            return self[(index + 1) % len(self)]
        crop = _crop_record(array, record, self.tile_size, rng)
        if self.augment is not None:
            crop = augment_tile(crop, rng, self.augment)
        crop = resize_uint8(np.ascontiguousarray(crop), self.input_size, self.input_size)
        tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)
        return tensor, self.label_of(record)


class EvalTiles(Dataset):
    """Evaluation samples: every view the predictor would score, with the label."""

    def __init__(self, records: Sequence[TileRecord], classes: Sequence[str], *, tile_size: int, input_size: int):
        self.records = list(records)
        self.class_index = {name: i for i, name in enumerate(classes)}
        self.tile_size = tile_size
        self.input_size = input_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        record = self.records[index]
        plan = plan_views(read_record(record), tile_size=self.tile_size, input_size=self.input_size)
        views = torch.from_numpy(plan.views).permute(0, 3, 1, 2)
        label = self.class_index.get(record.label, -1) if record.label is not None else -1
        return views, label, index


def collate_views(batch):
    """Concatenate variable numbers of views; keep per-sample view counts."""
    views = torch.cat([item[0] for item in batch])
    labels = torch.tensor([item[1] for item in batch])
    indices = torch.tensor([item[2] for item in batch])
    counts = [len(item[0]) for item in batch]
    return views, labels, indices, counts
