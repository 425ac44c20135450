"""Model cards: what each registry model is, what trained it, and how well it did.

:func:`model_card` reads a model's manifest (or the reason it could not be loaded) into
a :class:`ModelCard` that front ends show as they like: architecture, classes, scales,
training data and command, the held-out metrics, the confusion matrix, ROC curve points
and reliability bins.

A model trained on stand-in data (anything other than GasHisSDB or GCHTID, the
datasets the tasks are defined on) is flagged (:attr:`ModelCard.stand_in`) with a note
that says so (:func:`training_data_note`), because its numbers say little about gastric
tissue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import MODEL_SPECS
from .weights import Manifest

__all__ = [
    "ModelCard",
    "is_stand_in",
    "ordinal",
    "model_card",
    "training_data_note",
    "training_folder_overlap",
    "uses_task_datasets",
]

# Folder-name fragments of the datasets the project's tasks are defined on.
TASK_DATASET_MARKERS = ("gashissdb", "gchtid", "hmu-gc-he-30k")

HEADLINE_METRICS = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("macro_f1", "Macro F1"),
    ("auroc", "AUROC"),
    ("ece", "ECE (calibration error)"),
)


def ordinal(number: float) -> str:
    """Return a rounded number with its English ordinal suffix: 1st, 2nd, 3rd, 11th, 62nd."""
    value = int(round(number))
    if value % 100 in (11, 12, 13):
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")
    return f"{value}{suffix}"


def uses_task_datasets(training: dict[str, Any]) -> bool:
    """True when any training dataset path names GasHisSDB or GCHTID."""
    datasets = [str(item).lower() for item in training.get("datasets", [])]
    return any(marker in item for item in datasets for marker in TASK_DATASET_MARKERS)


def training_data_note(manifest: Manifest) -> str | None:
    """Sentence warning that a model was not trained on its task's real data, or None.

    The manifest's ``training.data_note`` is used as written. Without one, a model whose
    training datasets name neither GasHisSDB nor GCHTID gets a generic note.
    """
    training = manifest.training or {}
    note = str(training.get("data_note") or "").strip()
    if note:
        return note
    if not uses_task_datasets(training):
        datasets = ", ".join(map(str, training.get("datasets", []))) or "no datasets recorded"
        return (
            f"Trained on {datasets}, not on GasHisSDB or GCHTID; its outputs say little "
            "about gastric tissue."
        )
    return None


def is_stand_in(manifest: Manifest) -> bool:
    """True when the training data was a stand-in for GasHisSDB or GCHTID.

    That is the case when no training dataset names them, or when the manifest's
    ``training.data_note`` calls the data a stand-in (the shipped weights mix a few
    GasHisSDB tiles with other datasets and say so in that note).
    """
    training = manifest.training or {}
    note = str(training.get("data_note") or "").lower()
    return not uses_task_datasets(training) or "stand-in" in note or "stand in" in note


def training_folder_overlap(
    manifest: Manifest, folder: str | os.PathLike, *, base: str | os.PathLike | None = None
) -> str | None:
    """Return the training data root that ``folder`` shares tiles with, or None.

    ``folder`` shares tiles with a root when it is that root, lies inside it or contains
    it. Relative roots are resolved against ``base`` (default: the working directory).

    NOTE: the manifest records roots as the trainer gave them; a relative root is only
    right when ``base`` is the folder the trainer ran in (the repository root for the
    shipped weights and for ``make app``).
    """
    training = manifest.training or {}
    roots = training.get("data_roots") or []
    target = Path(os.path.realpath(folder))
    base_path = Path(base) if base is not None else Path.cwd()
    for root in roots:
        candidate = Path(str(root)).expanduser()
        if not candidate.is_absolute():
            candidate = base_path / candidate
        resolved = Path(os.path.realpath(candidate))
        if resolved == target or resolved in target.parents or target in resolved.parents:
            return str(root)
    return None


@dataclass
class ModelCard:
    """Everything a front end shows about one registry model.

    Attributes:
        name: Registry name.
        description: One line from the registry.
        available: True when the weights loaded.
        reason: Why the model is not available (None when it is).
        manifest: The manifest, when it could be read.
        data_note: What the manifest says about the training data, or a generated
            warning (see :func:`training_data_note`).
        stand_in: True when the training data was a stand-in (see :func:`is_stand_in`).
        headline: Metric label to value, from the test split, for the metrics present.
        split_note: What the metrics were measured on.
        confusion_matrix: Test confusion matrix (rows true, columns predicted), if any.
        roc: ``{"fpr", "tpr", "positive_class"}`` of a binary model, if recorded.
        reliability: ``{"edges", "confidence", "accuracy", "count"}`` bins, if recorded.
        reconstruction: Test error per class and the training percentiles of a
            reconstruction model, if recorded.
    """

    name: str
    description: str
    available: bool
    reason: str | None = None
    manifest: Manifest | None = None
    data_note: str | None = None
    stand_in: bool = False
    headline: dict[str, float] = field(default_factory=dict)
    split_note: str = ""
    confusion_matrix: list[list[int]] | None = None
    roc: dict[str, Any] | None = None
    reliability: dict[str, Any] | None = None
    reconstruction: dict[str, Any] | None = None

    @property
    def training(self) -> dict[str, Any]:
        return dict(self.manifest.training) if self.manifest else {}

    @property
    def command(self) -> str:
        return str(self.training.get("command") or "")

    @property
    def datasets(self) -> list[str]:
        return [str(item) for item in self.training.get("datasets", [])]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value else None  # drops NaN


def model_card(name: str, manifest: Manifest | None, reason: str | None = None) -> ModelCard:
    """Build the card of registry model ``name``.

    Args:
        name: Registry name.
        manifest: Its manifest when the weights loaded (or at least the manifest read).
        reason: Why the model is not available; None when it loaded.
    """
    spec = MODEL_SPECS.get(name)
    card = ModelCard(
        name=name,
        description=spec.description if spec else "",
        available=reason is None and manifest is not None,
        reason=reason,
        manifest=manifest,
    )
    if manifest is None:
        return card

    card.data_note = training_data_note(manifest)
    card.stand_in = is_stand_in(manifest)
    metrics = manifest.metrics or {}
    test = metrics.get("test") or {}
    card.split_note = str(metrics.get("note") or "")
    for key, label in HEADLINE_METRICS:
        value = _number(test.get(key))
        if value is not None:
            card.headline[label] = value

    matrix = test.get("confusion_matrix")
    if isinstance(matrix, list) and matrix and all(isinstance(row, list) for row in matrix):
        card.confusion_matrix = matrix
    roc = test.get("roc")
    if isinstance(roc, dict) and roc.get("fpr") and roc.get("tpr"):
        card.roc = roc
    reliability = test.get("reliability")
    if isinstance(reliability, dict) and reliability.get("count"):
        card.reliability = reliability

    if manifest.task == "reconstruction":
        reference = manifest.anomaly_reference or {}
        card.reconstruction = {
            "mean_error": _number(test.get("mean_error")),
            "error_per_class": dict(test.get("error_per_class") or {}),
            "count_per_class": dict(test.get("count_per_class") or {}),
            "training_percentiles": dict(reference.get("percentiles") or {}),
            "training_count": reference.get("count"),
        }
        value = _number(test.get("mean_error"))
        if value is not None:
            card.headline["Mean L1 error (test)"] = value
    return card
