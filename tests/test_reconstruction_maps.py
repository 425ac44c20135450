"""Reconstructions and error maps of single tiles, at the tile's own size."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from gastricvision.imaging import load_image
from gastricvision.inference import Predictor
from gastricvision.preprocessing import to_float_tensor
from gastricvision.reconstruction import (
    UNUSUAL_PERCENTILE,
    error_overlay,
    reconstruction_maps,
    reference_percentiles,
    ssim_error_map,
)
from gastricvision.weights import load_model, read_manifest, write_manifest
from tests.helpers import png_bytes, read_rgb

RECONSTRUCTION_MODELS = ("autoencoder", "unet")
SIZES = (80, 120, 160, 224)


def codes(warnings) -> list[str]:
    return [warning.code for warning in warnings]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run these small single-tile workloads on one intra-op thread (see test_explain)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(random_weights):
    return {name: load_model(random_weights / name) for name in RECONSTRUCTION_MODELS}


@pytest.fixture(scope="module")
def tiles(gashissdb_tile, gchtid_tile):
    """Real tiles at the four sizes. The 80 and 120 px ones are crops of a 160 px tile."""
    tile = read_rgb(gashissdb_tile)
    return {
        80: np.ascontiguousarray(tile[40:120, 40:120]),
        120: np.ascontiguousarray(tile[:120, 20:140]),
        160: tile,
        224: read_rgb(gchtid_tile),
    }


def model_with_reference(random_weights, tmp_path, scores):
    """A copy of the autoencoder whose manifest ranks tiles against ``scores``."""
    folder = tmp_path / "autoencoder"
    shutil.copytree(random_weights / "autoencoder", folder)
    manifest = read_manifest(folder)
    manifest.anomaly_reference = reference_percentiles(scores)
    write_manifest(manifest, folder)
    return load_model(folder)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", RECONSTRUCTION_MODELS)
def test_maps_at_tile_size(models, tiles, name, size):
    model = models[name]
    result = reconstruction_maps(model, tiles[size])
    tile_size = model.manifest.tile_size

    assert result.reconstruction.shape == (size, size, 3)
    assert result.reconstruction.dtype == np.uint8
    for error_map in (result.l1_map, result.ssim_map):
        assert error_map.shape == (size, size)
        assert error_map.dtype == np.float32
        assert 0.0 <= error_map.min() <= error_map.max() <= 1.0
    assert 0.0 < result.score < 1.0
    assert result.model == name
    assert result.percentile is None
    assert not result.unusual
    assert "no_anomaly_reference" in codes(result.warnings)
    assert ("scale_mismatch" in codes(result.warnings)) == (size < tile_size)
    # Tiles up to a megapixel go through whole: no crops, so no "tiled" warning.
    assert "tiled" not in codes(result.warnings)


@pytest.mark.parametrize("name", RECONSTRUCTION_MODELS)
def test_single_view_maps_match_pixels(models, tiles, name):
    """At exactly the training tile size nothing is resized, so the maps are exact."""
    model = models[name]
    side = model.manifest.tile_size
    tile = np.ascontiguousarray(tiles[160][:side, :side])
    result = reconstruction_maps(model, tile)

    original = tile.astype(np.float32) / 255
    rebuilt = result.reconstruction.astype(np.float32) / 255
    # The reconstruction PNG is rounded to 8 bits, so allow half a grey level per pixel.
    np.testing.assert_allclose(result.l1_map, np.abs(original - rebuilt).mean(axis=2), atol=0.5 / 255 + 1e-6)
    assert result.score == pytest.approx(float(result.l1_map.mean()), abs=1e-5)

    rebuilt_tensor = to_float_tensor(result.reconstruction[None])
    expected_ssim = ssim_error_map(to_float_tensor(tile[None]), rebuilt_tensor)[0].numpy()
    np.testing.assert_allclose(result.ssim_map, expected_ssim, atol=0.02)


@pytest.mark.parametrize("size", (80, 224))
def test_score_matches_predictor(models, tiles, size):
    predictor = Predictor(loaded=dict(models))
    image = load_image(png_bytes(tiles[size]), name=f"tile-{size}.png")
    prediction = predictor.predict_image(image)

    for name, model in models.items():
        result = reconstruction_maps(model, image)
        assert result.score == pytest.approx(prediction.reconstruction[name].error, rel=1e-4)
        if size < model.manifest.tile_size:
            assert any(f"tile-{size}.png" in warning.message for warning in result.warnings)


def test_unusual_tile_flagged(random_weights, tiles, tmp_path):
    model = model_with_reference(random_weights, tmp_path, np.linspace(0.0001, 0.001, 500))
    result = reconstruction_maps(model, tiles[160])

    assert result.percentile == pytest.approx(100.0)
    assert result.percentile >= UNUSUAL_PERCENTILE
    assert result.unusual
    assert "unusual_tile" in codes(result.warnings)
    assert "no_anomaly_reference" not in codes(result.warnings)


def test_typical_tile_not_flagged(random_weights, tiles, tmp_path):
    model = model_with_reference(random_weights, tmp_path, np.linspace(0.9, 1.0, 500))
    result = reconstruction_maps(model, tiles[160])

    assert result.percentile == pytest.approx(0.0)
    assert not result.unusual
    assert "unusual_tile" not in codes(result.warnings)


def test_maps_restore_train_mode(random_weights, tiles):
    model = load_model(random_weights / "unet")
    model.module.train()
    with torch.inference_mode():
        reconstruction_maps(model, tiles[120])

    assert all(submodule.training for submodule in model.module.modules())


def test_maps_reject_classifier(random_weights, tiles):
    with pytest.raises(ValueError, match="compute_cam"):
        reconstruction_maps(load_model(random_weights / "binary"), tiles[160])


def test_error_overlay_scales_to_vmax(models, tiles):
    result = reconstruction_maps(models["autoencoder"], tiles[160])
    brightest = np.unravel_index(np.argmax(result.l1_map), result.l1_map.shape)

    own_scale = error_overlay(tiles[160], result.l1_map, colormap="jet", opacity=1.0)
    assert own_scale.shape == (160, 160, 3)
    assert own_scale.dtype == np.uint8
    red, green, blue = own_scale[brightest]
    assert red >= 128
    assert green <= 30
    assert blue <= 30

    wide_scale = error_overlay(tiles[160], result.l1_map, vmax=100.0, colormap="jet", opacity=1.0)
    red, green, blue = wide_scale[brightest]
    assert blue >= 128
    assert red <= 30


@pytest.mark.parametrize("name", RECONSTRUCTION_MODELS)
def test_whole_tile_view_excludes_padding(models, tiles, name):
    """A 150 px tile is padded to 160 px for the network; the score covers the tile only."""
    from gastricvision.reconstruction import l1_error_map, reconstruct, reconstruction_plan, view_scores
    from gastricvision.preprocessing import to_float_tensor

    model = models[name]
    tile = np.ascontiguousarray(tiles[160][:150, :150])
    plan = reconstruction_plan(tile, tile_size=model.manifest.tile_size, input_size=model.manifest.input_size)
    assert plan.whole
    assert plan.views.shape == (1, 160, 160, 3)

    images = to_float_tensor(plan.views)
    with torch.no_grad():
        errors = l1_error_map(images, reconstruct(model.module, images))
    expected = float(errors[0, :150, :150].mean())
    assert float(view_scores(errors, plan)[0]) == pytest.approx(expected, rel=1e-6)
    assert reconstruction_maps(model, tile).score == pytest.approx(expected, rel=1e-4)
