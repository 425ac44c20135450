"""The weights in weights/ load, predict on real tiles, and reproduce their manifests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gastricvision.inference import Predictor
from gastricvision.models import MODEL_SPECS
from gastricvision.weights import load_all

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "weights"


def test_every_model_is_shipped():
    loaded, unavailable = load_all(WEIGHTS)
    assert unavailable == {}
    assert set(loaded) == set(MODEL_SPECS)


def test_shipped_weights_under_60_mb():
    total = sum(path.stat().st_size for path in WEIGHTS.rglob("*") if path.is_file())
    assert total < 60 * 2**20


def test_manifests_say_stand_in_data():
    for name in MODEL_SPECS:
        manifest = json.loads((WEIGHTS / name / "manifest.json").read_text())
        assert "not GasHisSDB or GCHTID" in manifest["training"]["data_note"], name
        assert "tile-level split" in manifest["metrics"]["note"], name
        assert manifest["training"]["command"].startswith(f"gastricvision train "), name


def test_predict_uses_shipped_weights(gashissdb_tile):
    result = Predictor(WEIGHTS).predict(gashissdb_tile)
    assert result.unavailable == {}
    assert result.binary.label == "Abnormal"
    assert result.binary.probabilities["Abnormal"] > 0.5
    assert all(output.percentile is not None for output in result.reconstruction.values())


def evaluate(name: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "gastricvision", "evaluate", "--model", name, "--weights", str(WEIGHTS), "--json"],
        capture_output=True, text=True, timeout=1800, cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["binary", "tissue"])
def test_evaluate_reproduces_classifier_metrics(name):
    report = evaluate(name)
    for key in ("count", "accuracy", "balanced_accuracy", "macro_f1", "auroc", "ece_after_temperature"):
        # The temperature is fitted in float32, whose last digits differ between CPUs.
        tolerance = 1e-5 if key in ("auroc", "ece_after_temperature") else 1e-9
        assert report["report"][key] == pytest.approx(report["manifest"][key], abs=tolerance), key
    assert report["report"]["confusion_matrix"] == report["manifest"]["confusion_matrix"]


@pytest.mark.slow
def test_evaluate_reproduces_autoencoder_errors():
    report = evaluate("autoencoder")
    assert report["report"]["mean_error"] == pytest.approx(report["manifest"]["mean_error"], rel=1e-6)
    assert report["report"]["error_per_class"] == pytest.approx(report["manifest"]["error_per_class"], rel=1e-6)
