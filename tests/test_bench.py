"""The benchmark scripts run and print every figure (tiny settings, numbers not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def test_train_throughput_prints_rates():
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_throughput.py"), "--models", "autoencoder,unet", "--steps", "1", "--batch-size", "2", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    assert "autoencoder" in completed.stdout
    assert completed.stdout.count("images/s") == 2


def test_inference_benchmark_prints_targets(random_weights, shared_data, tmp_path):
    record = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "bench" / "benchmark.py"), "--tiles", str(shared_data / "gashissdb" / "160"),
         "--weights", str(random_weights), "--folder-tiles", "4", "--naive-tiles", "1", "--repeats", "1",
         "--batch-tiles", "4", "--rounds", "2", "--json", str(record)],
        capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr
    for text in ("1. forward passes", "2. review panel", "3. folder scoring", "4. naive baseline", "round 2:", "target >= 0.9", "target <= 1.5", "target >= 5"):
        assert text in completed.stdout, text
    assert record.is_file()
