"""Weights folders: safetensors plus manifest, verified on load, never unpickled."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from gastricvision.errors import ModelUnavailableError, WeightsError
from gastricvision.models import create_model
from gastricvision.weights import MANIFEST_NAME, WEIGHTS_NAME, load_all, load_model
from tests.helpers import save_random_weights


@pytest.fixture()
def weights(tmp_path):
    save_random_weights(tmp_path, ["binary", "autoencoder"])
    return tmp_path


def test_round_trip_keeps_tensors(tmp_path):
    manifests = save_random_weights(tmp_path, ["binary"], seed=5)
    torch.manual_seed(5)
    original = create_model("resnet18", 2)
    loaded = load_model(tmp_path / "binary")
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
    assert loaded.manifest.sha256 == manifests["binary"].sha256
    assert not loaded.module.training


def test_manifest_fields(weights):
    manifest = json.loads((weights / "binary" / MANIFEST_NAME).read_text())
    assert manifest["schema_version"] == 1
    assert manifest["classes"] == ["Normal", "Abnormal"]
    assert manifest["cam_target_layer"] == "layer4"
    assert manifest["versions"]["torch"] == torch.__version__
    assert len(manifest["sha256"]) == 64


def test_tampered_weights_rejected(weights):
    path = weights / "binary" / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"sha256 .* does not match the manifest"):
        load_model(weights / "binary")


def test_wrong_sha_in_manifest_rejected(weights):
    path = weights / "binary" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"does not match the manifest"):
        load_model(weights / "binary")


def test_unknown_schema_rejected(weights):
    path = weights / "binary" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"schema version 99 is not supported"):
        load_model(weights / "binary")


def test_invalid_field_rejected(weights):
    path = weights / "binary" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["temperature"] = -1
    path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"temperature must be a number"):
        load_model(weights / "binary")


def test_broken_json_rejected(weights):
    (weights / "binary" / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(WeightsError, match=r"not valid JSON"):
        load_model(weights / "binary")


def test_missing_weights_file(weights):
    (weights / "binary" / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelUnavailableError, match=r"model\.safetensors is missing"):
        load_model(weights / "binary")


def test_pickle_file_is_never_loaded(weights):
    # A pickle in place of the safetensors file fails the sha256 check; even with a
    # matching digest, safetensors cannot parse it, so no code runs.
    import hashlib
    import pickle

    path = weights / "binary" / WEIGHTS_NAME
    path.write_bytes(pickle.dumps({"x": 1}))
    manifest_path = weights / "binary" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"cannot read the safetensors file"):
        load_model(weights / "binary")


def test_others_load_when_one_is_rejected(weights):
    (weights / "binary" / WEIGHTS_NAME).write_bytes(b"tampered")
    loaded, unavailable = load_all(weights)
    assert set(loaded) == {"autoencoder"}
    assert "does not match" in unavailable["binary"]
    assert "no manifest.json" in unavailable["tissue"]


def test_wrong_architecture_tensors_rejected(weights):
    shutil.copy(weights / "autoencoder" / WEIGHTS_NAME, weights / "binary" / WEIGHTS_NAME)
    path = weights / "binary" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["sha256"] = json.loads((weights / "autoencoder" / MANIFEST_NAME).read_text())["sha256"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"tensors do not fit architecture 'resnet18'"):
        load_model(weights / "binary")


def test_no_torch_load_outside_imagenet_init():
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "gastricvision"
    calls = []
    for path in package.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line:
                calls.append((path.name, number, line.strip()))
    assert len(calls) == 1, calls
    assert calls[0][0] == "models.py"
    assert "weights_only=True" in calls[0][2]
