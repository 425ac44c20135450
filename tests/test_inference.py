"""Predictor: one structured result per tile from every model with weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gastricvision.imaging import load_image
from gastricvision.inference import Predictor
from gastricvision.preprocessing import plan_views, stitch
from tests.helpers import png_bytes, read_rgb


@pytest.fixture(scope="module")
def predictor(random_weights):
    return Predictor(random_weights)


def test_all_models_loaded(predictor):
    assert set(predictor.models) == {"binary", "student", "tissue", "autoencoder", "unet"}
    assert predictor.unavailable == {}


def test_result_has_every_output(predictor, gashissdb_tile):
    result = predictor.predict(gashissdb_tile)
    assert result.ok
    assert (result.width, result.height) == (160, 160)
    assert set(result.binary.probabilities) == {"Normal", "Abnormal"}
    assert sum(result.binary.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.binary.label in ("Normal", "Abnormal")
    assert list(result.tissue.probabilities) == ["ADI", "DEB", "LYM", "MUC", "MUS", "NOR", "STR", "TUM"]
    assert sum(result.tissue.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert set(result.reconstruction) == {"autoencoder", "unet"}
    assert all(0.0 < out.error < 1.0 for out in result.reconstruction.values())


def test_scale_warning_names_model_and_factor(predictor, gashissdb_tile):
    result = predictor.predict(gashissdb_tile)
    mismatch = [w.message for w in result.warnings if w.code == "scale_mismatch"]
    assert len(mismatch) == 1
    assert "tissue model was trained on 224 px tiles" in mismatch[0]
    assert "enlarged 1.40x" in mismatch[0]


def test_large_image_scored_as_tiles(predictor, shared_data):
    path = sorted((shared_data / "lc25000" / "colon_aca").glob("*.jpeg"))[0]
    result = predictor.predict(path)
    assert result.binary.views == 25
    assert any(w.code == "tiled" and "25 tiles of 160 px" in w.message for w in result.warnings)


def test_batch_matches_single(predictor, gashissdb_tile, normal_tile, gchtid_tile):
    paths = [gashissdb_tile, normal_tile, gchtid_tile]
    many = list(predictor.predict_many(paths, batch_tiles=2))
    for path, batched in zip(paths, many):
        single = predictor.predict(path)
        assert batched.name == str(path)
        for cls, value in single.binary.probabilities.items():
            assert batched.binary.probabilities[cls] == pytest.approx(value, abs=1e-4)
        assert batched.reconstruction["unet"].error == pytest.approx(single.reconstruction["unet"].error, abs=1e-5)


def test_bad_file_does_not_stop_batch(predictor, gashissdb_tile, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    results = list(predictor.predict_many([gashissdb_tile, broken, gashissdb_tile]))
    assert [r.ok for r in results] == [True, False, True]
    assert "broken.png" in results[1].error
    assert results[1].to_dict() == {"path": str(broken), "error": results[1].error}


def test_missing_model_reported(random_weights, gashissdb_tile, tmp_path):
    import shutil

    partial = tmp_path / "weights"
    shutil.copytree(random_weights / "binary", partial / "binary")
    result = Predictor(partial).predict(gashissdb_tile)
    assert result.binary is not None
    assert result.tissue is None
    assert "no manifest.json" in result.unavailable["tissue"]
    assert result.to_dict()["tissue"] is None


def test_blank_tile_flagged(predictor):
    blank = np.full((160, 160, 3), 250, np.uint8)
    result = predictor.predict(png_bytes(blank), name="blank.png")
    assert "mostly_background" in [w.code for w in result.warnings]


def test_temperature_softens_probabilities(random_weights, gashissdb_tile, tmp_path):
    import json
    import shutil

    shutil.copytree(random_weights / "binary", tmp_path / "binary")
    base = Predictor(tmp_path, ["binary"]).predict(gashissdb_tile).binary
    path = tmp_path / "binary" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["temperature"] = 10.0
    path.write_text(json.dumps(manifest))
    soft = Predictor(tmp_path, ["binary"]).predict(gashissdb_tile).binary
    assert abs(soft.probabilities["Abnormal"] - 0.5) < abs(base.probabilities["Abnormal"] - 0.5)


def test_stitch_inverts_plan(gashissdb_tile):
    tile = read_rgb(gashissdb_tile)
    big = np.concatenate([tile, tile[:, :80]], axis=1)  # 240 x 160
    plan = plan_views(big, tile_size=160, input_size=160)
    assert len(plan.boxes) == 2
    maps = torch.from_numpy(plan.views[..., 0].astype(np.float32))
    restored = stitch(maps, plan, big.shape[:2])
    assert restored.shape == (160, 240)
    assert np.abs(restored[:, :80] - big[:, :80, 0]).max() < 1e-3


def test_with_maps_keeps_scores(predictor, gashissdb_tile):
    image = load_image(gashissdb_tile)
    plain = predictor.predict_image(image)
    mapped = predictor.predict_image(image, with_maps=True)
    assert set(mapped.maps) == {"autoencoder", "unet"}
    assert plain.maps == {}
    for name in ("autoencoder", "unet"):
        assert mapped.reconstruction[name].error == pytest.approx(plain.reconstruction[name].error, abs=1e-5)
        assert mapped.maps[name].l1_map.shape == (160, 160)
    assert "maps" not in mapped.to_dict()
