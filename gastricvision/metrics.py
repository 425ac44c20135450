"""Classification metrics, calibration error and temperature scaling.

Counting metrics come from scikit-learn; expected calibration error and temperature
scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) are short
enough to write here, and are checked against hand-computed cases in the tests.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

__all__ = [
    "classification_report",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_bins",
    "softmax",
]

logger = logging.getLogger(__name__)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence, with equal-width bins.

    ECE = sum over bins of (bin size / N) * |accuracy in bin - mean confidence in bin|.
    A confidence of exactly 0 falls in the first bin; bins are closed on the right.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict:
    """Per-bin mean confidence, accuracy and count, for a reliability diagram."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = {"edges": edges.tolist(), "confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        in_bin = index == b
        rows["count"].append(int(in_bin.sum()))
        rows["confidence"].append(float(confidence[in_bin].mean()) if in_bin.any() else None)
        rows["accuracy"].append(float(correct[in_bin].mean()) if in_bin.any() else None)
    return rows


def _nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(
    view_logits: Sequence[np.ndarray],
    labels: np.ndarray,
    grid: np.ndarray | None = None,
) -> float:
    """Find the temperature that minimises the negative log-likelihood on a split.

    Args:
        view_logits: Per sample, an ``(views, classes)`` array of logits. Probabilities
            are averaged over views after scaling, as the predictor does.
        labels: True class index per sample.
        grid: Candidate temperatures (default: 400 values from 0.05 to 20, log-spaced).

    A grid search is used instead of gradient descent: it cannot diverge, and one
    scalar needs no more.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 1.0
    if grid is None:
        # Clipped because logspace's end point can exceed 20 by a rounding error, and the
        # manifest accepts temperatures from 0.05 to 20 only.
        grid = np.clip(np.logspace(np.log10(0.05), np.log10(20.0), 400), 0.05, 20.0)
    # Samples with the same number of views are stacked, so each candidate costs a few
    # array operations instead of one per sample.
    groups: dict[int, list[int]] = {}
    for index, views in enumerate(view_logits):
        groups.setdefault(len(views), []).append(index)
    stacked = [(np.stack([view_logits[i] for i in members]), labels[members]) for members in groups.values()]

    best_t, best_nll = 1.0, np.inf
    for t in grid:
        total = 0.0
        for logits, group_labels in stacked:
            probabilities = softmax(logits, t).mean(axis=1)
            total += _nll(probabilities, group_labels) * len(group_labels)
        nll = total / len(labels)
        if nll < best_nll - 1e-12:
            best_t, best_nll = float(t), nll
    logger.info("Fitted temperature %.3f (validation NLL %.4f)", best_t, best_nll)
    return round(best_t, 6)


def classification_report(
    probabilities: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
) -> dict:
    """Accuracy, balanced accuracy, per-class precision/recall/F1, macro-F1, AUROC,
    confusion matrix, ECE and ROC curve points, as plain JSON-ready values.

    AUROC is one-vs-rest macro for more than two classes, over the classes present in
    ``labels``; it is None when fewer than two classes are present.
    """
    from sklearn import metrics

    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    predictions = probabilities.argmax(axis=1)
    indices = list(range(len(classes)))

    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predictions, labels=indices, zero_division=0
    )
    report = {
        "count": int(len(labels)),
        "accuracy": float(metrics.accuracy_score(labels, predictions)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(labels, predictions)),
        "macro_f1": float(metrics.f1_score(labels, predictions, labels=indices, average="macro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": metrics.confusion_matrix(labels, predictions, labels=indices).tolist(),
        "ece": expected_calibration_error(probabilities, labels),
        "auroc": None,
        "roc": None,
    }

    present = sorted(set(labels.tolist()))
    if len(present) >= 2:
        if len(classes) == 2:
            scores = probabilities[:, 1]
            report["auroc"] = float(metrics.roc_auc_score(labels, scores))
            fpr, tpr, _ = metrics.roc_curve(labels, scores)
            report["roc"] = {"positive_class": classes[1], "fpr": fpr.tolist(), "tpr": tpr.tolist()}
        else:
            aucs = [
                metrics.roc_auc_score(labels == i, probabilities[:, i])
                for i in present
            ]
            report["auroc"] = float(np.mean(aucs))
    return report

