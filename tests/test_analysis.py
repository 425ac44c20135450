"""Library code behind the app: folder scores, embeddings, review exports, browsing, model cards."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gastricvision import analysis
from gastricvision.browsing import configured_roots, resolve_inside, subfolders
from gastricvision.datasets import TileRecord, open_dataset
from gastricvision.errors import DatasetError, GastricVisionError, WeightsError
from gastricvision.inference import Predictor
from gastricvision.modelcards import is_stand_in, model_card, training_data_note, training_folder_overlap
from gastricvision.review import (
    PanelImage,
    UncertainBand,
    compose_panel,
    flatten_numbers,
    numbers_csv,
    result_row,
    review_numbers,
    rows_csv,
)
from gastricvision.weights import load_model, read_manifest


@pytest.fixture(scope="module")
def predictor(random_weights) -> Predictor:
    return Predictor(random_weights)


@pytest.fixture()
def small_dataset(tmp_path, shared_data) -> Path:
    """Four real GasHisSDB tiles in class folders, plus one corrupt file."""
    root = tmp_path / "tiles"
    source = shared_data / "gashissdb" / "160"
    for label in ("Normal", "Abnormal"):
        (root / label).mkdir(parents=True)
        for path in sorted((source / label).glob("*.png"))[:2]:
            shutil.copy(path, root / label / path.name)
    (root / "Abnormal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def make_scores(probabilities, labels, classes=("Normal", "Abnormal")) -> analysis.FolderScores:
    records = [
        TileRecord(Path(f"/data/{i:02d}.png"), label, label or "", Path("/data"))
        for i, label in enumerate(labels)
    ]
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return analysis.FolderScores(
        model="binary",
        model_sha256="0" * 64,
        classes=tuple(classes),
        records=records,
        probabilities=probabilities,
        features=np.eye(len(labels), dtype=np.float32),
        file_sha256=[""] * len(labels),
    )


# --------------------------------------------------------------------------- features


def test_classify_images_matches_predictor(predictor, gashissdb_tile, gchtid_tile):
    images = [predictor.load(gashissdb_tile), predictor.load(gchtid_tile)]
    for name in ("binary", "tissue"):
        probabilities, features = analysis.classify_images(predictor.models[name], images)
        for image, row in zip(images, probabilities):
            expected = getattr(predictor.predict_image(image), name).probabilities
            assert np.allclose(row, [expected[c] for c in predictor.models[name].manifest.classes], atol=1e-5)
        assert features.shape[0] == 2
        assert features.dtype == np.float32


def test_classify_images_rejects_reconstruction_model(predictor, gashissdb_tile):
    with pytest.raises(WeightsError, match="reconstruction model"):
        analysis.classify_images(predictor.models["autoencoder"], [predictor.load(gashissdb_tile)])


# --------------------------------------------------------------------------- folder scores


def test_score_records_skips_corrupt_file(predictor, small_dataset, tmp_path):
    records = open_dataset(small_dataset).records
    scores = analysis.score_records(predictor.models["binary"], records, cache=analysis.ScoreCache(tmp_path / "cache"))
    assert len(scores) == 4
    assert [path for path, _ in scores.errors] == ["Abnormal/broken.png"]
    assert "not a recognised image file" in scores.errors[0][1]
    assert np.allclose(scores.probabilities.sum(axis=1), 1.0)
    assert all(len(digest) == 64 for digest in scores.file_sha256)


def test_score_records_reuses_cache(predictor, small_dataset, tmp_path, monkeypatch):
    records = open_dataset(small_dataset).records
    cache = analysis.ScoreCache(tmp_path / "cache")
    model = predictor.models["binary"]
    first = analysis.score_records(model, records, cache=cache)

    def fail(*args, **kwargs):
        raise AssertionError("classify_images must not run for cached tiles")

    monkeypatch.setattr(analysis, "classify_images", fail)
    progress = []
    second = analysis.score_records(model, records, cache=cache, progress=lambda done, total: progress.append((done, total)))
    assert second.from_cache == 5
    assert np.array_equal(first.probabilities, second.probabilities)
    assert np.allclose(first.features, second.features)
    assert second.errors == first.errors
    assert progress[-1] == (5, 5)


def test_score_records_rescores_changed_file(predictor, small_dataset, tmp_path):
    records = open_dataset(small_dataset).records
    cache = analysis.ScoreCache(tmp_path / "cache")
    model = predictor.models["binary"]
    analysis.score_records(model, records, cache=cache)
    changed = records[0].path
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    again = analysis.score_records(model, records, cache=cache)
    assert again.from_cache == 4


def test_score_cache_separates_models(predictor, small_dataset, tmp_path):
    records = open_dataset(small_dataset).records
    cache = analysis.ScoreCache(tmp_path / "cache")
    analysis.score_records(predictor.models["binary"], records, cache=cache)
    other = analysis.score_records(predictor.models["student"], records, cache=cache)
    assert other.from_cache == 0
    assert cache.clear(predictor.models["binary"].manifest.sha256) == 5


def test_score_cache_unwritable_folder_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(GastricVisionError, match="GASTRICVISION_CACHE"):
        analysis.ScoreCache(blocker / "cache")


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GASTRICVISION_CACHE", str(tmp_path / "c"))
    assert analysis.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GASTRICVISION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert analysis.default_cache_dir() == tmp_path / "xdg" / "gastricvision"


def test_folder_scores_correctness_and_loss():
    scores = make_scores([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], ["Normal", "Normal", "Abnormal", "TUM"])
    assert scores.label_index.tolist() == [0, 0, 1, -1]
    assert scores.correct.tolist() == [True, False, False, False]
    assert scores.known.tolist() == [True, True, True, False]
    assert np.allclose(scores.loss[:3], -np.log([0.9, 0.2, 0.4]))
    assert np.isnan(scores.loss[3])
    assert scores.confusion_matrix().tolist() == [[1, 1], [1, 0]]


def test_folder_scores_select_filters():
    scores = make_scores([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], ["Normal", "Normal", "Abnormal", "TUM"])
    assert scores.select(correctness="wrong").tolist() == [2, 1]
    assert scores.select(correctness="correct").tolist() == [0]
    assert scores.select(true_classes=["Normal"], predicted_classes=["Abnormal"]).tolist() == [1]
    assert scores.select(confidence=(0.65, 0.85)).tolist() == [3, 1]
    assert scores.select(order="confidence, high first").tolist() == [0, 1, 3, 2]
    assert scores.select(order="loss, high first").tolist() == [1, 2, 0, 3]
    assert scores.select(order="path").tolist() == [0, 1, 2, 3]


def test_folder_scores_select_rejects_unknown_filter():
    scores = make_scores([[0.9, 0.1]], ["Normal"])
    with pytest.raises(ValueError, match="correctness"):
        scores.select(correctness="maybe")
    with pytest.raises(ValueError, match="sort order"):
        scores.select(order="random")


def test_scores_csv_lists_probabilities():
    scores = make_scores([[0.9, 0.1], [0.3, 0.7]], ["Normal", None])
    lines = analysis.scores_csv(scores).splitlines()
    assert lines[0] == "path,true_class,predicted_class,confidence,correct,loss,p_Normal,p_Abnormal"
    assert lines[1].startswith("00.png,Normal,Normal,0.9,True,")
    assert lines[2] == "01.png,,Abnormal,0.7,,,0.3,0.7"


def test_describe_scores_accuracy():
    described = analysis.describe_scores(make_scores([[0.9, 0.1], [0.2, 0.8]], ["Normal", "Normal"]))
    assert described["accuracy"] == 0.5
    assert described["confusion_matrix"] == [[1, 1], [0, 0]]


# --------------------------------------------------------------------------- sampling


def records_of(counts: dict[str, int]) -> list[TileRecord]:
    return [
        TileRecord(Path(f"/d/{label}/{i:03d}.png"), label, label, Path("/d"))
        for label, count in counts.items()
        for i in range(count)
    ]


def test_balanced_sample_equal_classes():
    sample = analysis.balanced_sample(records_of({"A": 50, "B": 50, "C": 50}), 30, seed=1)
    assert [r.label for r in sample].count("A") == 10
    assert [r.label for r in sample].count("C") == 10


def test_balanced_sample_fills_from_larger_class():
    sample = analysis.balanced_sample(records_of({"A": 3, "B": 50}), 20, seed=1)
    assert len(sample) == 20
    assert [r.label for r in sample].count("A") == 3


def test_balanced_sample_is_deterministic():
    records = records_of({"A": 40, "B": 40})
    first = analysis.balanced_sample(records, 10, seed=7, shuffle=True)
    assert first == analysis.balanced_sample(list(reversed(records)), 10, seed=7, shuffle=True)
    assert first != analysis.balanced_sample(records, 10, seed=8, shuffle=True)


def test_balanced_sample_more_than_available():
    sample = analysis.balanced_sample(records_of({"A": 2, "B": 1}), 10)
    assert len(sample) == 3


# --------------------------------------------------------------------------- embeddings


def test_project_features_pca():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, 8))
    features[:, 0] *= 10
    projection = analysis.project_features(features, method="pca")
    assert projection.coordinates.shape == (20, 2)
    assert projection.method == "pca"
    assert projection.explained_variance[0] > 0.5


def test_project_features_tsne():
    features = np.random.default_rng(0).normal(size=(12, 16))
    projection = analysis.project_features(features, method="tsne")
    assert projection.coordinates.shape == (12, 2)
    assert projection.method == "tsne"


def test_project_features_tsne_falls_back_on_few_points():
    projection = analysis.project_features(np.random.default_rng(0).normal(size=(5, 4)), method="tsne")
    assert projection.method == "pca"
    assert "t-SNE needs" in projection.note


def test_project_features_single_tile():
    projection = analysis.project_features(np.ones((1, 4)))
    assert projection.coordinates.tolist() == [[0.0, 0.0]]


def test_project_features_unknown_method():
    with pytest.raises(ValueError, match="umap"):
        analysis.project_features(np.ones((4, 4)), method="umap")


def test_nearest_neighbours_by_cosine():
    features = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    neighbours = analysis.nearest_neighbours(features, 0, k=2)
    assert [n.index for n in neighbours] == [1, 2]
    assert neighbours[0].similarity == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    assert len(analysis.nearest_neighbours(features, 0, k=10)) == 3


def test_nearest_neighbours_index_out_of_range():
    with pytest.raises(IndexError):
        analysis.nearest_neighbours(np.ones((2, 2)), 5)


# --------------------------------------------------------------------------- review export


@pytest.mark.parametrize(
    "probability, call",
    [(0.2, "Normal"), (0.35, "Uncertain"), (0.5, "Uncertain"), (0.65, "Uncertain"), (0.651, "Abnormal")],
)
def test_uncertain_band_call(probability, call):
    assert UncertainBand(0.35, 0.65).call(probability) == call


def test_uncertain_band_rejects_reversed_limits():
    with pytest.raises(GastricVisionError, match="lower one first"):
        UncertainBand(0.7, 0.3)


def test_review_numbers_and_csv(predictor, gashissdb_tile):
    result = predictor.predict(gashissdb_tile)
    numbers = review_numbers(result, band=UncertainBand(0.4, 0.6), weights_sha256={"binary": "ab" * 32})
    assert numbers["binary"]["p_abnormal"] == result.binary.probabilities["Abnormal"]
    assert numbers["binary"]["call"] in ("Normal", "Uncertain", "Abnormal")
    assert numbers["binary"]["weights_sha256"] == "ab" * 32
    assert set(numbers["tissue"]["probabilities"]) == set(result.tissue.probabilities)
    assert "p_abnormal" not in numbers["tissue"]
    assert numbers["reconstruction"]["unet"]["score"] == result.reconstruction["unet"].error
    json.dumps(numbers)

    rows = dict(line.split(",", 1) for line in numbers_csv(numbers).splitlines()[1:])
    assert float(rows["binary.probabilities.Abnormal"]) == pytest.approx(result.binary.probabilities["Abnormal"])
    assert rows["uncertain_band.low"] == "0.4"


def test_review_numbers_rejected_tile_raises(predictor):
    result = predictor.predict(b"not an image", name="notes.txt")
    with pytest.raises(GastricVisionError, match="notes.txt"):
        review_numbers(result, band=UncertainBand())


def test_flatten_numbers_lists():
    pairs = flatten_numbers({"a": {"b": 1}, "c": [{"d": 2}, 3]})
    assert pairs == [("a.b", 1), ("c.0.d", 2), ("c.1", 3)]


def test_result_row_for_rejected_tile(predictor):
    row = result_row(predictor.predict(b"junk", name="junk.png"), UncertainBand())
    assert row["file"] == "junk.png"
    assert "junk.png" in row["error"]
    assert row["binary_p_abnormal"] is None


def test_result_row_and_csv(predictor, gashissdb_tile):
    row = result_row(predictor.predict(gashissdb_tile), UncertainBand(), true_class="Abnormal")
    assert row["true_class"] == "Abnormal"
    assert row["binary_call"] in ("Normal", "Uncertain", "Abnormal")
    assert row["autoencoder_score"] > 0
    text = rows_csv([row, {"file": "x.png", "error": "bad"}])
    assert text.splitlines()[0].startswith("file,true_class,error,width,height,binary_p_abnormal")
    assert text.splitlines()[2].startswith("x.png,,bad")


def test_compose_panel_draws_png(predictor, gashissdb_tile):
    image = predictor.load(gashissdb_tile)
    numbers = review_numbers(predictor.predict_image(image), band=UncertainBand())
    numbers["warnings"] = [{"code": "scale_mismatch", "message": "A long warning sentence. " * 12}]
    overlays = [PanelImage(f"map {i}", image.array, "target Abnormal\np = 0.5") for i in range(6)]
    data = compose_panel(image.array, numbers, [("Class activation maps", overlays)])
    with Image.open(io.BytesIO(data)) as panel:
        assert panel.format == "PNG"
        assert panel.width == 1280
        assert panel.height > 900


# --------------------------------------------------------------------------- browsing


@pytest.fixture()
def browse_root(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "GasHisSDB" / "160").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "inner").symlink_to(root / "GasHisSDB", target_is_directory=True)
    (root / "file.txt").write_text("x")
    return root


def test_resolve_inside_accepts_nested_folder(browse_root):
    assert resolve_inside(browse_root, "GasHisSDB/160") == (browse_root / "GasHisSDB" / "160").resolve()
    assert resolve_inside(browse_root, "") == browse_root.resolve()
    assert resolve_inside(browse_root, "inner") == (browse_root / "GasHisSDB").resolve()


@pytest.mark.parametrize(
    "relative, message",
    [
        ("../secret", "'..' is not allowed"),
        ("GasHisSDB/../../secret", "'..' is not allowed"),
        ("/etc", "not an absolute"),
        ("~/data", "not an absolute"),
        ("C:\\Windows", "not an absolute"),
        ("escape", "symbolic link leads outside"),
        ("missing", "folder not found"),
        ("file.txt", "is a file"),
        ("a\x00b", "NUL"),
    ],
)
def test_resolve_inside_rejects(browse_root, relative, message):
    with pytest.raises(DatasetError, match=message):
        resolve_inside(browse_root, relative)


def test_subfolders_hides_escaping_links(browse_root):
    assert subfolders(browse_root, browse_root) == ["GasHisSDB", "inner"]


def test_configured_roots_from_environment(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    environ = {"GASTRICVISION_DATA_ROOTS": os.pathsep.join([str(first), str(tmp_path / "none"), str(second), str(first)])}
    assert configured_roots(environ) == [first.resolve(), second.resolve()]


def test_configured_roots_default_home_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert configured_roots({}) == []
    (tmp_path / "data").mkdir()
    assert configured_roots({}) == [(tmp_path / "data").resolve()]


# --------------------------------------------------------------------------- model cards


def test_model_card_from_random_weights(random_weights):
    manifest = read_manifest(random_weights / "binary")
    card = model_card("binary", manifest)
    assert card.available
    assert card.stand_in
    assert "not on GasHisSDB or GCHTID" in card.data_note
    assert card.headline == {}


def test_model_card_with_metrics(random_weights):
    manifest = load_model(random_weights / "binary").manifest
    manifest.training = {"datasets": ["/data/GasHisSDB"], "data_note": "", "command": "gastricvision train binary"}
    manifest.metrics = {
        "note": "Held-out tiles.",
        "test": {
            "accuracy": 0.9, "auroc": 0.95, "ece": float("nan"),
            "confusion_matrix": [[5, 1], [0, 4]],
            "roc": {"positive_class": "Abnormal", "fpr": [0, 0.2, 1], "tpr": [0, 0.9, 1]},
            "reliability": {"edges": [0, 0.5, 1], "confidence": [None, 0.8], "accuracy": [None, 0.9], "count": [0, 10]},
        },
    }
    card = model_card("binary", manifest)
    assert not card.stand_in
    assert card.data_note is None
    assert card.headline == {"Accuracy": 0.9, "AUROC": 0.95}
    assert card.confusion_matrix == [[5, 1], [0, 4]]
    assert card.roc["tpr"] == [0, 0.9, 1]
    assert card.reliability["count"] == [0, 10]
    assert card.command == "gastricvision train binary"


def test_stand_in_note_in_manifest(random_weights):
    manifest = read_manifest(random_weights / "tissue")
    manifest.training = {"datasets": ["../shared/data/gashissdb"], "data_note": "Stand-in data, not GasHisSDB or GCHTID."}
    assert is_stand_in(manifest)
    assert training_data_note(manifest) == "Stand-in data, not GasHisSDB or GCHTID."


def test_model_card_unavailable():
    card = model_card("unet", None, "weights/unet: no manifest.json")
    assert not card.available
    assert card.reason == "weights/unet: no manifest.json"
    assert "U-Net" in card.description


def test_training_folder_overlap(random_weights, tmp_path):
    manifest = read_manifest(random_weights / "binary")
    data = tmp_path / "data"
    (data / "gashissdb" / "160").mkdir(parents=True)
    (data / "other").mkdir()
    manifest.training = {"data_roots": ["data/gashissdb"]}
    assert training_folder_overlap(manifest, data / "gashissdb", base=tmp_path) == "data/gashissdb"
    assert training_folder_overlap(manifest, data / "gashissdb" / "160", base=tmp_path) == "data/gashissdb"
    assert training_folder_overlap(manifest, data, base=tmp_path) == "data/gashissdb"
    assert training_folder_overlap(manifest, data / "other", base=tmp_path) is None


def test_training_folder_overlap_without_roots(random_weights, tmp_path):
    manifest = read_manifest(random_weights / "binary")
    assert training_folder_overlap(manifest, tmp_path) is None
