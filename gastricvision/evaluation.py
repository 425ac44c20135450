"""Evaluate a model on a dataset split the way the predictor would score its tiles.

The trainer calls these functions to write the metrics of a new model into its
manifest, and ``gastricvision evaluate`` calls them again to reproduce those numbers:
both rebuild the same split (same files, class map, seed and fractions) and score every
tile through :func:`~gastricvision.preprocessing.plan_views`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from .datasets import TileRecord, expand_crops, make_splits, open_datasets
from .errors import DatasetError
from .metrics import classification_report, expected_calibration_error, reliability_bins, softmax
from .preprocessing import normalise, to_float_tensor
from .reconstruction import l1_error_map, reconstruct, reconstruction_plan, view_scores

__all__ = [
    "classifier_logits",
    "evaluate_loaded",
    "rebuild_split",
    "reconstruction_report",
    "reconstruction_scores",
    "scored_report",
    "split_note",
]

logger = logging.getLogger(__name__)



def split_note(training: dict) -> str:
    """Sentence saying what the held-out metrics were measured on."""
    note = (
        "Held-out tiles of a tile-level split of " + ", ".join(training.get("data_roots", [])) +
        " (split by source image; without patient or slide IDs, tiles of one patient can fall "
        "on both sides, which makes the figures optimistic)."
    )
    if training.get("data_note"):
        note += " " + training["data_note"]
    return note


def _loader(records, classes, tile_size, input_size, batch_size, workers):
    from .training.data import EvalTiles, collate_views

    dataset = EvalTiles(records, classes, tile_size=tile_size, input_size=input_size)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_views)


@torch.inference_mode()
def classifier_logits(
    module: torch.nn.Module,
    records: Sequence[TileRecord],
    classes: Sequence[str],
    *,
    tile_size: int,
    input_size: int,
    mean,
    std,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    workers: int = 0,
    progress=None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Logits of every view of every record, and the label index of each record."""
    module.eval()
    device = torch.device(device)
    view_logits: list[np.ndarray] = []
    labels: list[int] = []
    loader = _loader(records, classes, tile_size, input_size, batch_size, workers)
    for views, batch_labels, _, counts in progress(loader) if progress else loader:
        batch = normalise(views.to(device).float().div_(255.0), mean, std)
        logits = module(batch).float().cpu().numpy()
        view_logits.extend(np.split(logits, np.cumsum(counts)[:-1]))
        labels.extend(batch_labels.tolist())
    return view_logits, np.asarray(labels)


@torch.inference_mode()
def reconstruction_scores(
    module: torch.nn.Module,
    records: Sequence[TileRecord],
    *,
    tile_size: int,
    input_size: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Mean L1 reconstruction error per record (the predictor's anomaly score).

    Each record is scored as the predictor scores a tile (usually one whole-tile view, see
    :func:`~gastricvision.reconstruction.reconstruction_plan`), one record at a time.
    """
    from .training.data import read_record

    module.eval()
    device = torch.device(device)
    scores: list[float] = []
    for record in records:
        plan = reconstruction_plan(read_record(record), tile_size=tile_size, input_size=input_size)
        images = to_float_tensor(plan.views).to(device)
        errors = l1_error_map(images, reconstruct(module, images)).cpu()
        scores.append(float(view_scores(errors, plan).mean()))
    return np.asarray(scores)


def scored_report(view_logits: list[np.ndarray], labels: np.ndarray, classes: Sequence[str], temperature: float) -> dict:
    """Classification report of calibrated, view-averaged probabilities, with the
    calibration error before temperature scaling alongside."""
    calibrated = np.stack([softmax(v, temperature).mean(axis=0) for v in view_logits])
    raw = np.stack([softmax(v, 1.0).mean(axis=0) for v in view_logits])
    report = classification_report(calibrated, labels, classes)
    report["ece_before_temperature"] = expected_calibration_error(raw, labels)
    report["ece_after_temperature"] = report["ece"]
    report["temperature"] = temperature
    report["reliability"] = reliability_bins(calibrated, labels)
    return report


def reconstruction_report(scores: np.ndarray, records: Sequence[TileRecord]) -> dict:
    """Mean error overall and per source class (folder name)."""
    per_class: dict[str, list[float]] = defaultdict(list)
    for score, record in zip(scores, records):
        per_class[record.source_label].append(float(score))
    return {
        "count": int(len(scores)),
        "mean_error": float(np.mean(scores)) if len(scores) else float("nan"),
        "error_per_class": {name: float(np.mean(values)) for name, values in sorted(per_class.items())},
        "count_per_class": {name: len(values) for name, values in sorted(per_class.items())},
    }


def rebuild_split(training: dict, roots: Sequence[str] | None = None) -> dict[str, list[TileRecord]]:
    """Recreate the train/val/test split recorded in a manifest's ``training`` block.

    Args:
        training: The manifest's ``training`` dictionary.
        roots: Dataset folders to use instead of the recorded ones (same data elsewhere).
    """
    roots = list(roots or training.get("data_roots") or [])
    if not roots:
        raise DatasetError("No dataset folder given and none recorded in the manifest; pass --data ROOT.")
    missing = [root for root in roots if not Path(root).exists()]
    if missing:
        raise DatasetError(f"Dataset folder not found: {', '.join(missing)}; pass --data with the right path.")
    classes = training.get("classes_kept")
    records = open_datasets(roots, size=training.get("size"), class_map=training.get("class_map") or None, classes=classes)
    splits = make_splits(records, seed=int(training.get("split_seed", 0)), fractions=tuple(training.get("split_fractions", (0.7, 0.15, 0.15))))
    tile_size = int(training["tile_size"]) if "tile_size" in training else None
    if tile_size:
        splits = {name: expand_crops(items, tile_size) for name, items in splits.items()}
    return splits


def evaluate_loaded(loaded, roots: Sequence[str] | None = None, *, split: str = "test", device="cpu", workers: int = 0, progress=None) -> dict:
    """Evaluate a :class:`~gastricvision.weights.LoadedModel` on a rebuilt split."""
    manifest = loaded.manifest
    training = dict(manifest.training)
    training.setdefault("tile_size", manifest.tile_size)
    splits = rebuild_split(training, roots)
    records = splits[split] if split != "all" else [r for items in splits.values() for r in items]
    if not records:
        raise DatasetError(f"The {split} split is empty for these folders.")
    module = loaded.module.to(device)

    if manifest.task == "reconstruction":
        scores = reconstruction_scores(module, records, tile_size=manifest.tile_size, input_size=manifest.input_size, device=device)
        return reconstruction_report(scores, records)

    view_logits, labels = classifier_logits(
        module, records, manifest.classes, tile_size=manifest.tile_size, input_size=manifest.input_size,
        mean=manifest.mean, std=manifest.std, device=device, workers=workers, progress=progress,
    )
    return scored_report(view_logits, labels, manifest.classes, manifest.temperature)
