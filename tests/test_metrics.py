"""Metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from gastricvision.metrics import classification_report, expected_calibration_error, fit_temperature, reliability_bins, softmax


def test_ece_hand_computed():
    # Confidences 0.9, 0.9 (one right, one wrong) and 0.6 (right), 15 bins:
    # bin (0.867, 0.933]: 2/3 * |0.5 - 0.9| = 0.2667; bin (0.533, 0.6]: 1/3 * |1 - 0.6| = 0.1333.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    labels = np.array([0, 1, 1])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.4, abs=1e-9)


def test_ece_zero_when_calibrated():
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probabilities, np.array([0, 1])) == 0.0


def test_report_hand_computed():
    # True: N N N A A; predicted: N N A A N.
    probabilities = np.array([[0.8, 0.2], [0.7, 0.3], [0.4, 0.6], [0.1, 0.9], [0.55, 0.45]])
    labels = np.array([0, 0, 0, 1, 1])
    report = classification_report(probabilities, labels, ["Normal", "Abnormal"])
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert report["confusion_matrix"] == [[2, 1], [1, 1]]
    assert report["per_class"]["Normal"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["Abnormal"]["recall"] == pytest.approx(1 / 2)
    f1_normal = 2 * (2 / 3) * (2 / 3) / (4 / 3)
    f1_abnormal = 0.5
    assert report["macro_f1"] == pytest.approx((f1_normal + f1_abnormal) / 2)
    # AUROC: positives score 0.9 and 0.45, negatives 0.2, 0.3, 0.6: 5 of 6 pairs ranked right.
    assert report["auroc"] == pytest.approx(5 / 6)
    assert report["roc"]["positive_class"] == "Abnormal"


def test_multiclass_auroc_skips_absent_classes():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    report = classification_report(probabilities, np.array([0, 1, 0]), ["a", "b", "c"])
    assert report["auroc"] == pytest.approx(1.0)
    assert report["per_class"]["c"]["support"] == 0


def test_temperature_fit_recovers_overconfidence():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    true_logit = rng.normal(0, 1.0, 2000)
    # Outcomes drawn from sigmoid(true_logit); the model reports 3x the logit.
    labels = (rng.random(2000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    view_logits = [np.array([[0.0, 3.0 * z]]) for z in true_logit]
    temperature = fit_temperature(view_logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.15)


def test_softmax_temperature():
    probabilities = softmax(np.array([[0.0, 2.0]]), temperature=2.0)
    assert probabilities[0, 1] == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_reliability_bins_counts():
    probabilities = np.array([[0.95, 0.05], [0.55, 0.45], [0.52, 0.48]])
    bins = reliability_bins(probabilities, np.array([0, 1, 0]), bins=10)
    assert sum(bins["count"]) == 3
    assert bins["count"][9] == 1
    assert bins["count"][5] == 2
    assert bins["accuracy"][5] == pytest.approx(0.5)
