"""The Streamlit app, driven page by page with Streamlit's AppTest.

Models are random weights saved by the test session: every model, or a partial set with
metrics in the binary model's manifest. Dataset folders are the real test tiles, allowed
through GASTRICVISION_DATA_ROOTS.
"""

from __future__ import annotations

import io
import re
import tempfile
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gastricvision.inference import Predictor
from gastricvision.metrics import classification_report, reliability_bins
from gastricvision.weights import read_manifest, write_manifest
from tests.conftest import REPO

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = REPO / "app" / "Home.py"
# Model runs on a shared CPU take seconds; one script run may score many tiles.
RUN_TIMEOUT = 600


def write_example_metrics(folder: Path, name: str = "binary", seed: int = 0, data_roots: list[str] = ()) -> None:
    """Fill a classifier manifest's metrics with a report of synthetic predictions.

    The numbers come from gastricvision.metrics on random probabilities, so the Models
    page has a confusion matrix, ROC curve and reliability diagram to draw.
    """
    manifest = read_manifest(folder / name)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(manifest.classes), size=200)
    logits = rng.normal(size=(200, len(manifest.classes)))
    logits[np.arange(200), labels] += 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    report = classification_report(probabilities, labels, manifest.classes)
    report["reliability"] = reliability_bins(probabilities, labels)
    manifest.metrics = {"split_level": "tile", "note": "Synthetic predictions for the app tests.", "test": report}
    manifest.training = {
        **manifest.training,
        "data_note": "Stand-in data, not GasHisSDB or GCHTID: synthetic metrics for tests.",
        "command": f"gastricvision train {name} --data tests",
        "data_roots": list(data_roots),
    }
    write_manifest(manifest, folder / name)


@pytest.fixture(scope="module")
def partial_weights(tmp_path_factory, shared_data) -> Path:
    """Random weights of the binary and U-Net models only, with metrics for binary.

    The binary manifest names the GasHisSDB test tiles as training data, so pages that
    open that folder warn that it overlaps the training data.
    """
    from tests.helpers import save_random_weights

    folder = tmp_path_factory.mktemp("partial-weights")
    save_random_weights(folder, names=["binary", "unet"])
    write_example_metrics(folder, data_roots=[str(shared_data / "gashissdb")])
    return folder


@pytest.fixture()
def app_env(monkeypatch, shared_data, tmp_path):
    monkeypatch.setenv("GASTRICVISION_DATA_ROOTS", str(shared_data))
    monkeypatch.setenv("GASTRICVISION_CACHE", str(tmp_path / "cache"))

    def use(weights: Path) -> None:
        monkeypatch.setenv("GASTRICVISION_WEIGHTS", str(weights))

    return use


def start(page: str | None = None, dataset: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    if dataset is not None:
        at.text_input(key="gv_relative").set_value(dataset).run()
    if page is not None:
        at.switch_page(page).run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return values[0]


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# --------------------------------------------------------------------------- configuration


def test_config_avoids_file_watcher_and_telemetry():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["showErrorDetails"] == "none"
    assert 64 <= config["server"]["maxUploadSize"] <= 2048


def test_library_never_imports_streamlit():
    for path in (REPO / "gastricvision").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+streamlit", path.read_text(), re.MULTILINE), path


def test_app_has_no_model_code():
    for path in (REPO / "app").rglob("*.py"):
        text = path.read_text()
        assert "import torch" not in text, path
        assert "import timm" not in text, path


# --------------------------------------------------------------------------- home and models


def test_home_partial_models(app_env, partial_weights):
    app_env(partial_weights)
    at = start()
    assert_clean(at)
    infos = " ".join(i.value for i in at.info)
    for name in ("student", "tissue", "autoencoder"):
        assert f"- **{name}**: " in infos
    warnings = " ".join(w.value for w in at.warning)
    assert "binary: stand-in training data." in warnings
    assert "synthetic metrics for tests" in warnings
    assert any("$GV train binary --data" in c.value for c in at.code)


def test_models_page_cards(app_env, partial_weights):
    app_env(partial_weights)
    at = start("views/models.py")
    assert_clean(at)
    subheaders = [s.value for s in at.subheader]
    assert "binary" in subheaders
    assert "tissue (not available)" in subheaders
    assert any(c.value.startswith(".venv/bin/gastricvision train tissue") for c in at.code)
    assert metric(at, "Accuracy") == f"{read_manifest(partial_weights / 'binary').metrics['test']['accuracy']:.3f}"
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # confusion matrix, ROC curve, reliability diagram of binary


# --------------------------------------------------------------------------- sidebar


@pytest.mark.parametrize(
    "relative, message",
    [("..", "'..' is not allowed"), ("/etc", "not an absolute"), ("no-such-folder", "folder not found")],
)
def test_sidebar_rejects_folder(app_env, partial_weights, relative, message):
    app_env(partial_weights)
    at = start(dataset=relative)
    assert not at.exception
    assert any(message in e.value for e in at.error)
    assert at.title[0].value == "GastricVision"


def test_sidebar_opens_gashissdb(app_env, partial_weights):
    app_env(partial_weights)
    at = start(dataset="gashissdb")
    assert_clean(at)
    assert at.success[0].value.startswith("gashissdb layout, 160 px: 16 tiles")


# --------------------------------------------------------------------------- review


def test_review_bad_uploads_keep_good_tile(app_env, random_weights, gashissdb_tile):
    app_env(random_weights)
    at = start("views/review.py")
    at.file_uploader(key="review_uploads").set_value(
        [
            ("broken.png", b"\x89PNG\r\n\x1a\n truncated", "image/png"),
            ("tile.png", gashissdb_tile.read_bytes(), "image/png"),
            ("notes.txt", b"some notes", "text/plain"),
            ("tiles.zip", zip_bytes({"a.png": gashissdb_tile.read_bytes()}), "application/zip"),
        ]
    ).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 3
    assert errors[0].startswith("broken.png: ")
    assert errors[1].startswith("notes.txt: not a recognised image file")
    assert errors[2].startswith("tiles.zip: is an archive; upload it on the Batch scoring page")

    expected = Predictor(random_weights).predict(gashissdb_tile)
    assert metric(at, "P(Abnormal), binary model") == f"{expected.binary.probabilities['Abnormal']:.3f}"
    assert metric(at, "P(Abnormal), student model") == f"{expected.student.probabilities['Abnormal']:.3f}"
    assert metric(at, "Anomaly score, autoencoder") == f"{expected.reconstruction['autoencoder'].error:.4f}"
    assert len(at.get("download_button")) == 3
    warnings = " ".join(w.value for w in at.warning)
    assert "**Different scale from training.**" in warnings


def test_review_large_upload_and_bomb(app_env, partial_weights):
    from PIL import Image

    app_env(partial_weights)
    rng = np.random.default_rng(0)
    large = io.BytesIO()
    Image.fromarray(rng.integers(120, 230, size=(500, 700, 3), dtype=np.uint8)).save(large, format="PNG")
    bomb = io.BytesIO()
    Image.new("L", (8000, 6000)).save(bomb, format="PNG")

    at = start("views/review.py")
    at.file_uploader(key="review_uploads").set_value(
        [("bomb.png", bomb.getvalue(), "image/png"), ("large.png", large.getvalue(), "image/png")]
    ).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1
    assert errors[0].startswith("bomb.png: image is 8000x6000 px (48 megapixels)")
    infos = " ".join(i.value for i in at.info)
    assert "large.png (700x500 px) is larger than the 160 px tiles" in infos
    assert re.fullmatch(r"\d\.\d{3}", metric(at, "P(Abnormal), binary model"))


def test_review_opacity_reuses_cached_map(app_env, random_weights, normal_tile, monkeypatch):
    import streamlit as st

    from gastricvision import explain
    from gastricvision.inference import Predictor

    app_env(random_weights)
    st.cache_data.clear()
    calls = []
    predictions = []
    original = explain.compute_cam
    original_predict = Predictor.predict_image

    def counting(*args, **kwargs):
        calls.append(kwargs.get("method"))
        return original(*args, **kwargs)

    def counting_predict(self, *args, **kwargs):
        predictions.append(1)
        return original_predict(self, *args, **kwargs)

    monkeypatch.setattr(explain, "compute_cam", counting)
    monkeypatch.setattr(Predictor, "predict_image", counting_predict)
    at = start("views/review.py")
    at.file_uploader(key="review_uploads").set_value(("normal.png", normal_tile.read_bytes(), "image/png")).run()
    assert_clean(at)
    assert calls == ["gradcam", "gradcam"]
    assert len(predictions) == 1

    at.slider(key="review_cam_opacity").set_value(0.9).run()
    at.selectbox(key="review_cam_colormap").set_value("viridis").run()
    at.slider(key="gv_band_slider").set_value((0.2, 0.8)).run()
    assert_clean(at)
    assert calls == ["gradcam", "gradcam"]
    assert len(predictions) == 1

    at.selectbox(key="review_cam_method").set_value("eigencam").run()
    assert_clean(at)
    assert calls == ["gradcam", "gradcam", "eigencam", "eigencam"]


def test_review_dataset_tile_shows_truth(app_env, partial_weights):
    app_env(partial_weights)
    at = start("views/review.py", dataset="gashissdb")
    at.radio(key="review_source").set_value("Dataset folder").run()
    assert_clean(at)
    assert any(m.value == "True class (from the folder): **Abnormal**" for m in at.markdown)
    infos = " ".join(i.value for i in at.info)
    assert "The tissue model is not available" in infos

    at.selectbox(key="review_class").set_value("Normal").run()
    at.button[1].click().run()  # Next
    assert at.number_input(key="review_number").value == 2
    assert any(m.value == "True class (from the folder): **Normal**" for m in at.markdown)
    assert_clean(at)


# --------------------------------------------------------------------------- gallery


def test_gallery_scores_filters_and_caches(app_env, partial_weights):
    app_env(partial_weights)
    at = start("views/gallery.py", dataset="gashissdb")
    assert_clean(at)
    assert metric(at, "Tiles scored") == "16"
    assert metric(at, "From the cache") == "0"
    assert any("shares tiles with the binary model's training data" in w.value for w in at.warning)

    cells = at.selectbox(key="gallery_cell").options
    assert cells[0] == "all cells"
    chosen = cells[1]
    count = int(chosen.rsplit("(", 1)[1].rstrip(")"))
    at.selectbox(key="gallery_cell").set_value(chosen).run()
    assert_clean(at)
    assert any(m.value == f"**{count:,} tiles** match the filters." for m in at.markdown)

    inspect = [b for b in at.button if b.key and b.key.startswith("gallery_inspect_")]
    assert len(inspect) == count
    inspect[0].click().run()
    assert_clean(at)
    assert any("Nearest neighbours" in m.value for m in at.markdown)

    again = start("views/gallery.py", dataset="gashissdb")
    assert metric(again, "From the cache") == "16"


def test_gallery_unexpected_error_shows_generic_message(app_env, partial_weights, monkeypatch):
    from gastricvision import analysis

    def broken(*args, **kwargs):
        raise RuntimeError("projection exploded")

    monkeypatch.setattr(analysis, "project_features", broken)
    app_env(partial_weights)
    at = start("views/gallery.py", dataset="gashissdb")
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors == ["Something went wrong in this part of the page. The details are in the server log; try again, or reload the page."]
    assert not any("projection exploded" in e for e in errors)
    assert metric(at, "Tiles scored") == "16"
    assert any(b.key and b.key.startswith("gallery_inspect_") for b in at.button)


# --------------------------------------------------------------------------- teaching


def test_teaching_quiz_to_summary(app_env, partial_weights):
    app_env(partial_weights)
    at = start("views/teaching.py", dataset="gashissdb")
    assert_clean(at)
    at.number_input(key="quiz_count").set_value(2).run()
    at.number_input(key="quiz_seed").set_value(3).run()
    at.button[0].click().run()  # Start the quiz
    assert_clean(at)

    for number in range(2):
        assert at.radio(key=f"quiz_answer_{number}").options == ["Abnormal", "Normal"]
        at.radio(key=f"quiz_answer_{number}").set_value("Abnormal").run()
        at.button[0].click().run()  # Submit the answer
        assert_clean(at)
        assert any(m.value.startswith("True class: **") for m in at.markdown)
        assert any("Rank correlation" in c.value or "undefined" in c.value for c in at.caption)
        at.button(key="quiz_next").click().run()

    assert_clean(at)
    assert at.subheader[0].value == "Summary"
    assert metric(at, "Your score").endswith("of 2")
    assert metric(at, "The binary model").endswith("of 2")
    assert len(at.get("download_button")) == 1


def test_teaching_needs_two_classes(app_env, partial_weights):
    app_env(partial_weights)
    at = start("views/teaching.py", dataset="gashissdb")
    at.multiselect(key="quiz_classes").set_value(["Normal"]).run()
    assert_clean(at)
    assert any("at least two classes" in i.value for i in at.info)


# --------------------------------------------------------------------------- batch


def test_batch_upload_zip_skips_hostile_members(app_env, partial_weights, gashissdb_tile, normal_tile, tmp_path, monkeypatch):
    app_env(partial_weights)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))

    tiles = zip_bytes(
        {
            "tiles/a.png": gashissdb_tile.read_bytes(),
            "tiles/b.png": normal_tile.read_bytes(),
            "../escape.png": gashissdb_tile.read_bytes(),
            "tiles/readme.txt": b"notes",
            "tiles/inner.zip": zip_bytes({"c.png": normal_tile.read_bytes()}),
            "tiles/broken.png": b"\x89PNG\r\n\x1a\n broken",
        }
    )
    bomb = zip_bytes({"zeros.png": bytes(64 * 1024 * 1024)})
    at = start("views/batch.py")
    at.radio(key="batch_source").set_value("Upload tiles or archives").run()
    at.file_uploader(key="batch_uploads").set_value(
        [
            ("tiles.zip", tiles, "application/zip"),
            ("bomb.zip", bomb, "application/zip"),
            ("single.png", normal_tile.read_bytes(), "image/png"),
        ]
    ).run()
    at.button(key="batch_run_uploads").click().run()
    assert not at.exception

    assert metric(at, "Tiles scored") == "3"
    assert metric(at, "Files rejected") == "2"
    errors = [e.value for e in at.error]
    assert any(e.startswith("bomb.zip: ") for e in errors)
    assert any(e.startswith("tiles.zip/tiles/broken.png: ") for e in errors)
    skipped = " ".join(t.value for t in at.text)
    assert "tiles.zip: ../escape.png:" in skipped
    assert "tiles.zip: tiles/readme.txt: not an image file" in skipped
    assert "inner.zip: an archive inside the archive is not opened" in skipped
    assert len(at.get("download_button")) == 1
    assert list(temporary.iterdir()) == []


def test_batch_dataset_folder(app_env, partial_weights):
    app_env(partial_weights)
    at = start("views/batch.py", dataset="gashissdb")
    at.number_input(key="batch_count").set_value(4).run()
    at.button(key="batch_run_dataset").click().run()
    assert_clean(at)
    assert metric(at, "Tiles scored") == "4"
    assert at.subheader[0].value == "Results: 4 tiles of gashissdb"
