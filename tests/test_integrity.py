"""Weights integrity: a damaged or tampered model is rejected with its reason, the others work.

Each way of damaging a weights folder is one entry of :data:`TAMPERINGS`, applied to the
binary model of a copy of the test session's random weights. The library, the
``gastricvision`` command (``info``, ``predict``, ``explain``, ``evaluate``) and the
app (Home, Models and Review pages) must then name the binary model's problem and keep
using the other models.

The sha256 in a manifest detects a corrupt or swapped weights file. It cannot stop
someone who may write to the weights folder and rewrites the manifest too; the cases
marked "re-signed" show that even then nothing is unpickled.

The last tests check that no project code path unpickles anything: no ``torch.load``
other than the ImageNet initialisation (with ``weights_only=True``), and no pickle call
while every registry model is loaded.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from gastricvision.errors import ModelUnavailableError, WeightsError
from gastricvision.inference import Predictor
from gastricvision.weights import MANIFEST_NAME, WEIGHTS_NAME, file_sha256, load_all, load_model
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(900)

DAMAGED = "binary"
HEALTHY = "autoencoder"
SCANNED_FOLDERS = ("gastricvision", "app", "train", "bench")


# --------------------------------------------------------------------------- tamperings


def edit_manifest(folder: Path, change: Callable[[dict], object]) -> None:
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def resign(folder: Path) -> None:
    """Write the weights file's real sha256 into the manifest, as an attacker with write access could."""
    digest = file_sha256(folder / WEIGHTS_NAME)
    edit_manifest(folder, lambda manifest: manifest.update(sha256=digest))


def flip_middle_byte(folder: Path) -> None:
    path = folder / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate_weights(folder: Path) -> None:
    path = folder / WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def swap_in_other_model(folder: Path) -> None:
    shutil.copy(folder.parent / HEALTHY / WEIGHTS_NAME, folder / WEIGHTS_NAME)
    resign(folder)


class TouchOnUnpickle:
    """Unpickling this object creates the file ``marker``: proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickle_payload(folder: Path) -> None:
    marker = folder.parent.parent / "unpickled-marker"
    (folder / WEIGHTS_NAME).write_bytes(pickle.dumps({"state_dict": TouchOnUnpickle(marker)}))
    resign(folder)


def torch_save_payload(folder: Path) -> None:
    import torch

    marker = folder.parent.parent / "unpickled-marker"
    torch.save({"state_dict": TouchOnUnpickle(marker)}, folder / WEIGHTS_NAME)
    resign(folder)


def safetensors_header_bomb(folder: Path) -> None:
    """A header that declares a length of 2**63 - 1 bytes."""
    (folder / WEIGHTS_NAME).write_bytes(struct.pack("<Q", 2**63 - 1) + b"{}")
    resign(folder)


def weights_fifo(folder: Path) -> None:
    (folder / WEIGHTS_NAME).unlink()
    os.mkfifo(folder / WEIGHTS_NAME)


def weights_device_link(folder: Path) -> None:
    (folder / WEIGHTS_NAME).unlink()
    (folder / WEIGHTS_NAME).symlink_to("/dev/zero")


@dataclass(frozen=True)
class Tampering:
    """One way to damage a weights folder.

    Attributes:
        name: Identifier, used as the test id.
        apply: Damages the folder of the model named by :data:`DAMAGED`.
        reason: Regular expression searched in the reason given for the model.
        missing: The model counts as missing (ModelUnavailableError) rather than rejected.
    """

    name: str
    apply: Callable[[Path], None]
    reason: str
    missing: bool = False


SHA_MISMATCH = r"model\.safetensors: sha256 [0-9a-f]{12}\.\.\. does not match the manifest \([0-9a-f]{12}\.\.\.\); the file is corrupt or was changed\. Restore it\."
UNREADABLE_SAFETENSORS = r"model\.safetensors: cannot read the safetensors file \(.+\)\."

TAMPERINGS = [
    Tampering("flipped_byte", flip_middle_byte, SHA_MISMATCH),
    Tampering("truncated_weights", truncate_weights, SHA_MISMATCH),
    Tampering("wrong_manifest_sha", lambda f: edit_manifest(f, lambda m: m.update(sha256="ab" * 32)), SHA_MISMATCH),
    Tampering("sha_not_a_digest", lambda f: edit_manifest(f, lambda m: m.update(sha256="latest")), r"invalid manifest: sha256 must be a 64-character hex digest"),
    Tampering("other_model_resigned", swap_in_other_model, r"tensors do not fit architecture 'resnet18' \(.+\)\."),
    Tampering("pickle_resigned", pickle_payload, UNREADABLE_SAFETENSORS),
    Tampering("torch_save_resigned", torch_save_payload, UNREADABLE_SAFETENSORS),
    Tampering("header_bomb_resigned", safetensors_header_bomb, UNREADABLE_SAFETENSORS),
    Tampering("schema_version_2", lambda f: edit_manifest(f, lambda m: m.update(schema_version=2)), r"manifest schema version 2 is not supported \(expected 1\); retrain the model or update GastricVision\."),
    Tampering("schema_version_missing", lambda f: edit_manifest(f, lambda m: m.pop("schema_version")), r"manifest schema version None is not supported"),
    Tampering("unknown_field", lambda f: edit_manifest(f, lambda m: m.update(loader="torch.load")), r"unknown manifest fields loader\."),
    Tampering("missing_field", lambda f: edit_manifest(f, lambda m: m.pop("classes")), r"manifest is missing classes\."),
    Tampering("mistyped_field", lambda f: edit_manifest(f, lambda m: m.update(input_size="160")), r"input_size must be an integer from 8 to 4096, not '160'"),
    Tampering("nan_temperature", lambda f: edit_manifest(f, lambda m: m.update(temperature=float("nan"))), r"temperature must be a number from 0\.05 to 20, not nan"),
    Tampering("manifest_not_json", lambda f: (f / MANIFEST_NAME).write_text("{'name': 'binary'"), r"manifest\.json: not valid JSON \(.+\); restore the file from the release\."),
    Tampering("manifest_json_list", lambda f: (f / MANIFEST_NAME).write_text("[]"), r"manifest\.json: the manifest must be a JSON object\."),
    Tampering("manifest_names_other_model", lambda f: edit_manifest(f, lambda m: m.update(name="student")), r"manifest names the model 'student', not 'binary'\."),
    Tampering("missing_weights", lambda f: (f / WEIGHTS_NAME).unlink(), r"manifest present but model\.safetensors is missing; restore it\.", missing=True),
    Tampering("missing_manifest", lambda f: (f / MANIFEST_NAME).unlink(), r"no manifest\.json; train the model or copy its weights folder here\.", missing=True),
    Tampering("weights_fifo", weights_fifo, r"model\.safetensors is missing", missing=True),
    Tampering("weights_device_link", weights_device_link, r"model\.safetensors is missing", missing=True),
]
TAMPERING_IDS = [t.name for t in TAMPERINGS]


def damaged_copy(random_weights: Path, destination: Path, tampering: Tampering, names=(DAMAGED, HEALTHY)) -> Path:
    folder = destination / "weights"
    for name in names:
        shutil.copytree(random_weights / name, folder / name)
    tampering.apply(folder / DAMAGED)
    return folder


# --------------------------------------------------------------------------- library


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=TAMPERING_IDS)
def test_library_rejects_tampered_model(tampering, random_weights, tmp_path):
    weights = damaged_copy(random_weights, tmp_path, tampering)
    loaded, unavailable = load_all(weights, [DAMAGED, HEALTHY])

    assert set(loaded) == {HEALTHY}
    assert set(unavailable) == {DAMAGED}
    assert unavailable[DAMAGED].startswith(str(weights / DAMAGED))
    assert re.search(tampering.reason, unavailable[DAMAGED]), unavailable[DAMAGED]
    if tampering.name != "manifest_names_other_model":
        expected = ModelUnavailableError if tampering.missing else WeightsError
        with pytest.raises(expected):
            load_model(weights / DAMAGED)
    assert not (tmp_path / "unpickled-marker").exists()


def test_predictor_keeps_healthy_models(random_weights, tmp_path, gashissdb_tile):
    weights = damaged_copy(random_weights, tmp_path, TAMPERINGS[0])
    predictor = Predictor(weights, [DAMAGED, HEALTHY])
    result = predictor.predict(gashissdb_tile)

    assert result.ok
    assert result.binary is None
    assert "does not match the manifest" in result.unavailable[DAMAGED]
    assert result.reconstruction[HEALTHY].error > 0


# --------------------------------------------------------------------------- command line


def run_cli(*args, weights: Path, cwd: Path):
    env = {**os.environ, "GASTRICVISION_WEIGHTS": str(weights), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "gastricvision", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def mixed_weights(random_weights, tmp_path_factory) -> Path:
    """Every registry model: binary tampered, tissue with an unknown schema, unet without
    a manifest, student and autoencoder intact."""
    folder = tmp_path_factory.mktemp("mixed") / "weights"
    shutil.copytree(random_weights, folder)
    flip_middle_byte(folder / "binary")
    edit_manifest(folder / "tissue", lambda manifest: manifest.update(schema_version=7))
    (folder / "unet" / MANIFEST_NAME).unlink()
    return folder


MIXED_REASONS = {
    "binary": "does not match the manifest",
    "tissue": "manifest schema version 7 is not supported",
    "unet": "no manifest.json",
}


def test_cli_info_names_each_problem(mixed_weights, tmp_path):
    completed = run_cli("info", "--json", weights=mixed_weights, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    models = json.loads(completed.stdout)["models"]
    assert {name: entry["status"] for name, entry in models.items()} == {
        "binary": "rejected", "student": "loaded", "tissue": "rejected", "autoencoder": "loaded", "unet": "missing",
    }
    for name, reason in MIXED_REASONS.items():
        assert reason in models[name]["reason"]

    text = run_cli("info", weights=mixed_weights, cwd=tmp_path).stdout
    assert any(line.startswith("binary       rejected: ") and MIXED_REASONS["binary"] in line for line in text.splitlines())
    assert any(line.startswith("student      resnet10t | classes Normal, Abnormal") for line in text.splitlines())


def test_cli_predict_uses_healthy_models(mixed_weights, tmp_path, gashissdb_tile):
    completed = run_cli("predict", "--json", gashissdb_tile, weights=mixed_weights, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["binary"] is None
    assert result["tissue"] is None
    assert set(result["student"]["probabilities"]) == {"Normal", "Abnormal"}
    assert set(result["reconstruction"]) == {"autoencoder"}
    for name, reason in MIXED_REASONS.items():
        assert reason in result["unavailable"][name]
        notes = [line for line in completed.stderr.splitlines() if line.startswith(f"note: model {name} not available: ")]
        assert len(notes) == 1, completed.stderr
        assert reason in notes[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["explain", "--out", "maps"], ["evaluate"]], ids=["explain", "evaluate"])
def test_cli_single_model_commands_exit_2(command, mixed_weights, tmp_path, gashissdb_tile):
    arguments = [command[0], "--model", "binary", *command[1:]] + ([gashissdb_tile] if command[0] == "explain" else [])
    completed = run_cli(*arguments, weights=mixed_weights, cwd=tmp_path)
    assert completed.returncode == 2, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, completed.stderr
    assert MIXED_REASONS["binary"] in errors[0]
    assert "Traceback" not in completed.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- app


@pytest.fixture()
def app_with_mixed_weights(mixed_weights, monkeypatch, shared_data, tmp_path):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GASTRICVISION_WEIGHTS", str(mixed_weights))
    monkeypatch.setenv("GASTRICVISION_DATA_ROOTS", str(shared_data))
    monkeypatch.setenv("GASTRICVISION_CACHE", str(tmp_path / "cache"))
    return AppTest.from_file(str(REPO / "app" / "Home.py"), default_timeout=600)


def test_home_page_lists_reasons(app_with_mixed_weights):
    at = app_with_mixed_weights.run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    infos = " ".join(i.value for i in at.info)
    for name, reason in MIXED_REASONS.items():
        assert f"- **{name}**: " in infos
        assert reason in infos
    statuses = {row["model"]: row["status"] for row in at.dataframe[0].value.to_dict("records")}
    assert statuses == {"binary": "not available", "student": "loaded", "tissue": "not available", "autoencoder": "loaded", "unet": "not available"}


def test_models_page_shows_reasons(app_with_mixed_weights):
    at = app_with_mixed_weights.run()
    at.switch_page("views/models.py").run()
    assert not at.exception
    subheaders = [s.value for s in at.subheader]
    for name in ("binary", "tissue", "unet"):
        assert f"{name} (not available)" in subheaders
    for name in ("student", "autoencoder"):
        assert name in subheaders
    infos = [i.value for i in at.info]
    for name, reason in MIXED_REASONS.items():
        assert any(i.startswith("Not available: ") and reason in i for i in infos), name


def test_review_page_uses_healthy_models(app_with_mixed_weights, gashissdb_tile, random_weights):
    at = app_with_mixed_weights.run()
    at.switch_page("views/review.py").run()
    at.file_uploader(key="review_uploads").set_value(("tile.png", gashissdb_tile.read_bytes(), "image/png")).run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]

    expected = Predictor(random_weights, ["student", "autoencoder"]).predict(gashissdb_tile)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["P(Abnormal), student model"] == f"{expected.student.probabilities['Abnormal']:.3f}"
    assert metrics["Anomaly score, autoencoder"] == f"{expected.reconstruction['autoencoder'].error:.4f}"
    assert "P(Abnormal), binary model" not in metrics
    infos = " ".join(i.value for i in at.info)
    assert "The binary model is not available: " in infos
    assert MIXED_REASONS["binary"] in infos
    assert "The tissue model is not available: " in infos


# --------------------------------------------------------------------------- no unpickling


def python_files() -> list[Path]:
    return sorted(path for folder in SCANNED_FOLDERS for path in (REPO / folder).rglob("*.py"))


def call_name(node: ast.Call) -> str:
    """Dotted name of the called function, e.g. ``torch.load``; '' for other callees."""
    parts = []
    target = node.func
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if isinstance(target, ast.Name):
        parts.append(target.id)
        return ".".join(reversed(parts))
    return ""


UNPICKLING_CALLS = {
    "torch.load", "torch.jit.load", "pickle.load", "pickle.loads", "pickle.Unpickler",
    "cPickle.load", "joblib.load", "dill.load", "dill.loads", "marshal.loads", "shelve.open",
}


def test_no_unpickling_call_outside_imagenet_init():
    calls = []
    for path in python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "torch", "joblib", "dill", "marshal"):
                imported = {alias.name for alias in node.names}
                assert not imported & {"load", "loads", "Unpickler"}, f"{path}:{node.lineno} imports an unpickler"
            if not isinstance(node, ast.Call):
                continue
            name = call_name(node)
            keywords = {k.arg: k.value for k in node.keywords}
            if name in UNPICKLING_CALLS:
                calls.append((path.relative_to(REPO).as_posix(), node.lineno, name, keywords))
            if name in ("np.load", "numpy.load"):
                allowed = keywords.get("allow_pickle")
                assert not (isinstance(allowed, ast.Constant) and allowed.value), f"{path}:{node.lineno} allows pickles"

    assert [(path, name) for path, _, name, _ in calls] == [("gastricvision/models.py", "torch.load")], calls
    weights_only = calls[0][3].get("weights_only")
    assert isinstance(weights_only, ast.Constant) and weights_only.value is True


def test_loading_every_model_unpickles_nothing(random_weights, monkeypatch):
    import torch

    def fail_if_called(*args, **kwargs):
        raise AssertionError("a weights file was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, fail_if_called)
    loaded, unavailable = load_all(random_weights)
    assert unavailable == {}
    assert len(loaded) == 5
