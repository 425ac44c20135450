"""Every training recipe runs end to end on a few real tiles; resume and DDP work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gastricvision.inference import Predictor
from gastricvision.training import main as train_main
from gastricvision.weights import load_model

pytestmark = pytest.mark.slow

QUICK = ["--tile-size", "64", "--input-size", "64", "--epochs", "1", "--limit", "16", "--batch-size", "8", "--workers", "0", "--log-every", "1"]


def train(recipe: str, out: Path, *extra: str) -> dict:
    status = train_main(recipe, [*extra, *QUICK, "--out", str(out), "--export", str(out / "export")])
    assert status == 0
    return json.loads((out / "export" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory, shared_data) -> Path:
    out = tmp_path_factory.mktemp("binary")
    train("binary", out, "--data", str(shared_data / "gashissdb"), "--arch", "resnet18")
    return out


def test_binary_run_folder_complete(binary_run):
    for name in ("split.csv", "split.json", "checkpoint.safetensors", "checkpoint.json", "history.csv", "metrics.json"):
        assert (binary_run / name).is_file(), name
    manifest = json.loads((binary_run / "export" / "manifest.json").read_text())
    assert manifest["classes"] == ["Normal", "Abnormal"]
    assert manifest["tile_size"] == 64
    assert manifest["training"]["epochs_run"] == 1
    assert manifest["training"]["command"].startswith("gastricvision train binary --data")
    assert 0.0 <= manifest["metrics"]["test"]["accuracy"] <= 1.0
    assert manifest["metrics"]["test"]["count"] == 18  # 2 test images x 9 crops of 64 px
    assert "tile-level split" in manifest["metrics"]["note"]
    assert 0.05 <= manifest["temperature"] <= 20


def test_trained_weights_load_in_predictor(binary_run, gashissdb_tile, tmp_path):
    os.symlink(binary_run / "export", tmp_path / "binary")
    result = Predictor(tmp_path, ["binary"]).predict(gashissdb_tile)
    assert result.binary.views == 9
    assert sum(result.binary.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_evaluate_reproduces_manifest(binary_run, tmp_path):
    os.symlink(binary_run / "export", tmp_path / "binary")
    completed = subprocess.run(
        [sys.executable, "-m", "gastricvision", "evaluate", "--model", "binary", "--weights", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "ece_after_temperature"):
        # The temperature is fitted in float32, whose last digits differ between CPUs.
        tolerance = 1e-5 if key in ("auroc", "ece_after_temperature") else 1e-9
        assert report["report"][key] == pytest.approx(report["manifest"][key], abs=tolerance), key
    assert report["report"]["confusion_matrix"] == report["manifest"]["confusion_matrix"]


def test_resume_continues_history(binary_run, shared_data):
    history_before = json.loads((binary_run / "history.json").read_text())
    status = train_main("binary", ["--data", str(shared_data / "gashissdb"), "--arch", "resnet18", *QUICK[:-6], "--epochs", "2",
                                   "--limit", "16", "--batch-size", "8", "--workers", "0", "--out", str(binary_run), "--resume",
                                   "--export", str(binary_run / "export")])
    assert status == 0
    history = json.loads((binary_run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[0] == history_before[0]


def test_time_budget_stops_training(tmp_path, shared_data):
    manifest = train("binary", tmp_path, "--data", str(shared_data / "gashissdb"), "--arch", "resnet18", "--max-minutes", "0.0001")
    assert manifest["training"]["stopped_because"].startswith("time budget")


def test_distill_uses_teacher_and_unlabelled(binary_run, tmp_path, shared_data):
    manifest = train(
        "distill", tmp_path, "--teacher", str(binary_run / "export"), "--data", str(shared_data / "gashissdb"),
        "--unlabelled", str(shared_data / "kather-2016"), "--arch", "resnet10t",
    )
    assert manifest["name"] == "student"
    assert manifest["training"]["teacher"]["sha256"] == load_model(binary_run / "export").manifest.sha256
    assert manifest["training"]["datasets"][-1].endswith("kather-2016 (unlabelled)")


def test_tissue_from_nct_with_class_map(tmp_path, shared_data):
    manifest = train("tissue", tmp_path, "--data", str(shared_data / "nct-crc-he" / "CRC-VAL-HE-7K"), "--class-map", "nct-crc-he")
    assert manifest["architecture"] == "tf_efficientnet_lite0"
    assert manifest["training"]["imagenet_init"] is True
    assert manifest["classes"] == ["ADI", "DEB", "LYM", "MUC", "MUS", "NOR", "STR", "TUM"]
    assert "NORM" not in json.dumps(manifest["training"]["counts"])
    assert manifest["metrics"]["test"]["per_class"]["NOR"]["support"] > 0


@pytest.mark.parametrize("recipe", ["autoencoder", "unet"])
def test_reconstruction_recipes(recipe, tmp_path, shared_data):
    manifest = train(recipe, tmp_path, "--data", str(shared_data / "gashissdb"), "--data", str(shared_data / "gchtid"))
    assert manifest["task"] == "reconstruction"
    reference = manifest["anomaly_reference"]
    assert reference["count"] > 0
    assert reference["percentiles"]["50"] > 0
    assert set(manifest["metrics"]["test"]["error_per_class"]) <= {"Normal", "Abnormal", "STR"}


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ddp_two_cpu_processes(tmp_path, shared_data):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         "-m", "gastricvision", "train", "binary", "--data", str(shared_data / "gashissdb"), "--arch", "resnet18",
         "--device", "cpu", *QUICK, "--out", str(tmp_path), "--export", str(tmp_path / "export")],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["training"]["device"] == "cpu x2"
    assert "rank 0 of 2" in completed.stderr or "rank 1 of 2" in completed.stderr
