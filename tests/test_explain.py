"""Class activation maps, their scores and masks, and the explain command."""

from __future__ import annotations

import ctypes
import gc

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from gastricvision.cli import main
from gastricvision.explain import (
    CAM_METHODS,
    COLORMAPS,
    CamMask,
    ExplanationError,
    compute_cam,
    faithfulness,
    overlay,
    randomisation_check,
    save_mask_png,
    segment_cam,
)
from gastricvision.imaging import LoadedImage, load_image
from gastricvision.inference import Predictor
from gastricvision.models import IMAGENET_MEAN, IMAGENET_STD, MODEL_SPECS, create_model
from gastricvision.weights import Manifest, load_model, save_model
from tests.helpers import read_rgb

# pytorch-grad-cam 1.5.7's ROAD imputer passes torch tensors to numpy functions.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")

CLASSIFIERS = [name for name, spec in MODEL_SPECS.items() if spec.task != "reconstruction"]
FAST_METHODS = [key for key, method in CAM_METHODS.items() if not method.slow]
SIZES = (80, 120, 160, 224)

# The small test classifiers are resnet10t for 64 px tiles, so that hundreds of CAM calls
# and ROAD's sparse solves stay fast on a shared CPU.
SMALL_TILE = 64
MARKER_SIDE = 16
MARKER_RGB = (0, 200, 0)  # H&E stains give no saturated green


def codes(warnings) -> list[str]:
    return [warning.code for warning in warnings]


def other_class(model, index: int) -> int:
    return (index + 1) % len(model.manifest.classes)


def save_small_classifier(folder, name, *, module=None, classes=("Normal", "Abnormal"), cam_layer=None):
    """Save a resnet10t for 64 px tiles through the weights API and load it back."""
    if module is None:
        torch.manual_seed(1)
        module = create_model("resnet10t", len(classes))
    manifest = Manifest(
        name=name,
        task="binary",
        architecture="resnet10t",
        classes=list(classes),
        input_size=SMALL_TILE,
        tile_size=SMALL_TILE,
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        cam_target_layer=cam_layer,
        training={"datasets": ["tests"]},
    )
    save_model(module, folder / name, manifest)
    return load_model(folder / name)


def add_marker(tile: np.ndarray, top: int, left: int) -> np.ndarray:
    marked = tile.copy()
    marked[top : top + MARKER_SIDE, left : left + MARKER_SIDE] = MARKER_RGB
    return marked


def marker_batch(tiles, rng, count):
    """Random 64 px crops of real tiles, every second one with a green square."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    crops, labels = [], []
    for index in range(count):
        tile = tiles[rng.integers(len(tiles))]
        top, left = rng.integers(0, tile.shape[0] - SMALL_TILE + 1, size=2)
        crop = tile[top : top + SMALL_TILE, left : left + SMALL_TILE]
        label = index % 2
        if label:
            row, column = rng.integers(0, SMALL_TILE - MARKER_SIDE + 1, size=2)
            crop = add_marker(crop, row, column)
        crops.append(np.ascontiguousarray(crop))
        labels.append(label)
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    return (batch - mean) / std, torch.tensor(labels)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run these small single-tile workloads on one intra-op thread.

    On a machine whose cores are busy with other work, extra OpenMP threads mostly wait
    for each other: a resnet18 Grad-CAM took 1.2 s with two threads and 0.2 s with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def classifiers(random_weights):
    return {name: load_model(random_weights / name) for name in CLASSIFIERS}


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


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return save_small_classifier(tmp_path_factory.mktemp("small"), "student")


@pytest.fixture(scope="module")
def marker_model(tmp_path_factory, shared_data):
    """resnet10t trained to tell 64 px tissue crops with a green square from those without.

    Its maps must point at the square. The manifest declares ``layer3`` (4x4 cells at
    64 px) as the CAM layer, which also checks that the manifest's layer is the one used.
    """
    tiles = [read_rgb(path) for path in sorted((shared_data / "gashissdb" / "160").rglob("*.png"))]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    module = create_model("resnet10t", 2)
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    module.train()
    for _ in range(30):
        inputs, labels = marker_batch(tiles, rng, 16)
        loss = torch.nn.functional.cross_entropy(module(inputs), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    # Thirty steps leave BatchNorm's running statistics far from the data; recompute
    # them as plain averages so that eval mode matches training.
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None
    with torch.no_grad():
        for _ in range(4):
            module(marker_batch(tiles, rng, 32)[0])

    module.eval()
    inputs, labels = marker_batch(tiles, rng, 32)
    with torch.no_grad():
        accuracy = (module(inputs).argmax(dim=1) == labels).float().mean().item()
    assert accuracy >= 0.95, f"the marker model did not learn its task (accuracy {accuracy:.2f})"
    return save_small_classifier(
        tmp_path_factory.mktemp("marker"), "marker", module=module, classes=("Plain", "Marked"), cam_layer="layer3"
    )


@pytest.fixture()
def weights_env(random_weights, monkeypatch):
    monkeypatch.setenv("GASTRICVISION_WEIGHTS", str(random_weights))
    return random_weights


# --------------------------------------------------------------------------- maps


@pytest.mark.parametrize("method", FAST_METHODS)
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_cam_every_method_on_160px_tile(classifiers, tiles, name, method):
    model = classifiers[name]
    result = compute_cam(model, tiles[160], method=method)

    assert result.map.shape == (160, 160)
    assert result.map.dtype == np.float32
    assert result.map.min() >= 0.0
    assert result.map.max() <= 1.0
    assert result.map.max() == pytest.approx(1.0) or "empty_map" in codes(result.warnings)
    assert result.model == name
    assert result.method == method
    assert result.target_class == result.predicted_class
    assert result.target_class == model.manifest.classes[result.target_index]

    other = compute_cam(model, tiles[160], method=method, target=other_class(model, result.target_index))
    assert other.target_index != result.target_index
    if CAM_METHODS[method].class_specific:
        assert not np.allclose(result.map, other.map, atol=1e-3)
    else:
        np.testing.assert_allclose(result.map, other.map, atol=1e-5)


def test_scorecam_registry_model(classifiers, tiles):
    """Score-CAM runs one forward pass per channel (512 here), so one registry case."""
    result = compute_cam(classifiers["student"], tiles[160], method="scorecam")

    assert result.map.shape == (160, 160)
    assert result.map.dtype == np.float32
    assert 0.0 <= result.map.min() <= result.map.max() <= 1.0


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_cam_at_tile_size(classifiers, tiles, name, size):
    model = classifiers[name]
    tile_size = model.manifest.tile_size
    result = compute_cam(model, tiles[size], method="gradcam")

    assert result.map.shape == (size, size)
    assert result.map.dtype == np.float32
    assert 0.0 <= result.map.min() <= result.map.max() <= 1.0
    assert ("scale_mismatch" in codes(result.warnings)) == (size < tile_size)
    assert ("tiled" in codes(result.warnings)) == (size > 1.1 * tile_size)


def test_cam_accepts_loaded_image(classifiers, gashissdb_tile):
    image = load_image(gashissdb_tile)
    result = compute_cam(classifiers["tissue"], image)

    assert result.map.shape == (image.height, image.width)
    scale_warning = next(w for w in result.warnings if w.code == "scale_mismatch")
    assert str(gashissdb_tile) in scale_warning.message


def test_cam_default_target_is_prediction(classifiers, gashissdb_tile):
    image = load_image(gashissdb_tile)
    prediction = Predictor(loaded=dict(classifiers)).predict_image(image)

    for name in CLASSIFIERS:
        output = getattr(prediction, name)
        result = compute_cam(classifiers[name], image)
        assert result.target_class == output.label
        assert result.target_probability == pytest.approx(output.probabilities[output.label], abs=1e-4)


def test_cam_target_by_name_or_index(classifiers, tiles):
    model = classifiers["binary"]
    by_name = compute_cam(model, tiles[160], target="Abnormal")
    by_index = compute_cam(model, tiles[160], target=1)
    by_folded_name = compute_cam(model, tiles[160], target="abnormal")

    assert by_name.target_index == 1
    assert by_name.target_class == "Abnormal"
    np.testing.assert_array_equal(by_name.map, by_index.map)
    np.testing.assert_array_equal(by_name.map, by_folded_name.map)


@pytest.mark.parametrize("target", ["Cancer", 2, -1, True])
def test_cam_rejects_unknown_target(classifiers, tiles, target):
    with pytest.raises(ExplanationError, match="use one of Normal, Abnormal"):
        compute_cam(classifiers["binary"], tiles[160], target=target)


def test_cam_rejects_unknown_method(classifiers, tiles):
    with pytest.raises(ExplanationError, match="Unknown CAM method 'gradcam3'"):
        compute_cam(classifiers["binary"], tiles[160], method="gradcam3")


def test_cam_rejects_reconstruction_model(random_weights, tiles):
    autoencoder = load_model(random_weights / "autoencoder")
    with pytest.raises(ValueError, match="reconstruction_maps"):
        compute_cam(autoencoder, tiles[160])


def test_cam_rejects_non_rgb_array(classifiers, tiles):
    with pytest.raises(ValueError, match="uint8 RGB"):
        compute_cam(classifiers["binary"], tiles[160].astype(np.float32))


def test_cam_restores_model_state(random_weights, tiles):
    model = load_model(random_weights / "student")
    module = model.module
    module.train()
    parameters = list(module.parameters())
    parameters[0].requires_grad_(True)
    kept_grad = torch.ones_like(parameters[0])
    parameters[0].grad = kept_grad
    flags = [parameter.requires_grad for parameter in parameters]

    with torch.inference_mode():
        result = compute_cam(model, tiles[120], method="gradcam++")

    assert result.map.shape == (120, 120)
    assert all(submodule.training for submodule in module.modules())
    assert [parameter.requires_grad for parameter in parameters] == flags
    assert parameters[0].grad is kept_grad
    assert all(parameter.grad is None for parameter in parameters[1:])


def test_cam_uses_manifest_layer(marker_model):
    assert marker_model.manifest.cam_target_layer == "layer3"
    tile = np.full((SMALL_TILE, SMALL_TILE, 3), 200, dtype=np.uint8)
    result = compute_cam(marker_model, tile, method="gradcam", target="Marked")
    # layer3 of resnet10t has 4x4 cells at 64 px; layer4 would have 2x2.
    assert result.map.shape == (SMALL_TILE, SMALL_TILE)


def no_hooks(module: torch.nn.Module) -> bool:
    return all(
        not submodule._forward_hooks and not submodule._forward_pre_hooks and not submodule._backward_hooks
        for submodule in module.modules()
    )


def settled_rss(process) -> int:
    """Return the resident memory after freeing garbage and handing free heap pages back.

    Without ``malloc_trim``, glibc keeps freed blocks in its per-thread arenas, and the
    resident size of a long test process drifts by tens of MB for reasons unrelated to
    the code under test.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return process.memory_info().rss


def test_cam_calls_keep_memory_flat(small_model, tiles):
    """300 CAM calls on one model: resident memory stays within 40 MB and no hooks remain."""
    tile = np.ascontiguousarray(tiles[160][:SMALL_TILE, :SMALL_TILE])
    process = psutil.Process()
    methods = ["gradcam", "layercam", "eigencam"]
    for index in range(60):
        compute_cam(small_model, tile, method=methods[index % 3])
    before = settled_rss(process)

    for index in range(300):
        compute_cam(small_model, tile, method=methods[index % 3])
    growth = settled_rss(process) - before

    print(f"resident memory grew by {growth / 2**20:.1f} MB over 300 CAM calls")
    assert growth < 40 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MB over 300 CAM calls"
    assert no_hooks(small_model.module)


def test_cam_releases_hooks_on_error(small_model, tiles, monkeypatch):
    module = small_model.module
    head_forward = module.fc.forward

    def fail_during_cam(features):
        # Only the CAM pass has an input that requires gradients.
        if features.requires_grad:
            raise RuntimeError("simulated failure in the CAM pass")
        return head_forward(features)

    monkeypatch.setattr(module.fc, "forward", fail_during_cam)
    module.train()
    try:
        with pytest.raises(RuntimeError, match="simulated failure"):
            compute_cam(small_model, tiles[80])
        assert no_hooks(module)
        assert module.training
    finally:
        module.eval()


# --------------------------------------------------------------------------- marker model


@pytest.mark.slow
@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_cam_points_at_marker(marker_model, tiles, method):
    tile = add_marker(tiles[160][:SMALL_TILE, :SMALL_TILE], 40, 8)
    result = compute_cam(marker_model, tile, method=method)

    assert result.target_class == "Marked"
    row, column = np.unravel_index(np.argmax(result.map), result.map.shape)
    assert 40 - 8 <= row < 40 + MARKER_SIDE + 8
    assert 8 - 8 <= column < 8 + MARKER_SIDE + 8


@pytest.mark.slow
@pytest.mark.parametrize("method", FAST_METHODS)
def test_stitched_cam_points_at_marker(marker_model, tiles, method):
    """A 224 px tile is cut into 16 crops of 64 px; the stitched map must find the square."""
    tile = add_marker(tiles[224], 150, 30)
    result = compute_cam(marker_model, tile, method=method, target="Marked")

    assert result.map.shape == (224, 224)
    assert "tiled" in codes(result.warnings)
    inside = result.map[150 : 150 + MARKER_SIDE, 30 : 30 + MARKER_SIDE].mean()
    assert inside > 0.5
    assert inside > 3 * result.map.mean()


@pytest.mark.slow
@pytest.mark.parametrize("method", [key for key, method in CAM_METHODS.items() if method.class_specific])
def test_marker_maps_differ_by_class(marker_model, tiles, method):
    """Random weights do not always separate classes (Score-CAM of a random binary
    resnet gives almost the same map for both), so this uses the trained model."""
    tile = add_marker(tiles[160][:SMALL_TILE, :SMALL_TILE], 24, 40)
    marked = compute_cam(marker_model, tile, method=method, target="Marked")
    plain = compute_cam(marker_model, tile, method=method, target="Plain")

    assert not np.allclose(marked.map, plain.map, atol=1e-3)


@pytest.mark.slow
def test_marker_map_beats_random_maps(marker_model, tiles):
    tile = add_marker(tiles[160][:SMALL_TILE, :SMALL_TILE], 24, 40)
    cam = compute_cam(marker_model, tile, method="gradcam")
    result = faithfulness(marker_model, tile, cam)

    assert result.better_than_random
    assert result.score > result.random_baseline + 0.05
    assert result.target_class == "Marked"


@pytest.mark.slow
def test_marker_map_differs_from_randomised(marker_model, tiles):
    tile = add_marker(tiles[160][:SMALL_TILE, :SMALL_TILE], 24, 40)
    result = randomisation_check(marker_model, tile, method="gradcam", target="Marked")

    assert result.rank_correlation < 0.5


# --------------------------------------------------------------------------- overlay


def test_overlay_jet_maximum_is_red(tiles):
    # A ramp from 0 at the left to 1 at the right: a map of random weights can be empty.
    ramp = np.tile(np.linspace(0.0, 1.0, 160, dtype=np.float32), (160, 1))
    coloured = overlay(tiles[160], ramp, colormap="jet", opacity=1.0)

    red, green, blue = coloured[80, 159]
    assert red >= 128
    assert green <= 30
    assert blue <= 30
    red, green, blue = coloured[80, 0]
    assert blue >= 128
    assert red <= 30


@pytest.mark.parametrize("colormap", COLORMAPS)
def test_overlay_every_colormap(tiles, colormap):
    ramp = np.tile(np.linspace(0, 1, 160, dtype=np.float32), (160, 1))
    coloured = overlay(tiles[160], ramp, colormap=colormap, opacity=0.5)

    assert coloured.shape == (160, 160, 3)
    assert coloured.dtype == np.uint8
    assert not np.array_equal(coloured[:, 0], coloured[:, -1])


def test_overlay_opacity_zero_keeps_tile(tiles):
    ramp = np.tile(np.linspace(0, 1, 160, dtype=np.float32), (160, 1))
    np.testing.assert_array_equal(overlay(tiles[160], ramp, opacity=0.0), tiles[160])


def test_overlay_rejects_bad_options(tiles):
    cam_map = np.zeros((160, 160), dtype=np.float32)
    with pytest.raises(ExplanationError, match="Unknown colormap 'rainbow'"):
        overlay(tiles[160], cam_map, colormap="rainbow")
    with pytest.raises(ExplanationError, match="opacity"):
        overlay(tiles[160], cam_map, opacity=1.5)
    with pytest.raises(ValueError, match="does not match"):
        overlay(tiles[160], np.zeros((80, 80), dtype=np.float32))


# --------------------------------------------------------------------------- faithfulness


def test_faithfulness_result_fields(small_model, tiles):
    tile = np.ascontiguousarray(tiles[160][:SMALL_TILE, :SMALL_TILE])
    cam = compute_cam(small_model, tile)
    rng_state = torch.get_rng_state()
    result = faithfulness(small_model, tile, cam, percentiles=(30, 70), baseline_maps=2)

    assert -0.5 <= result.score <= 0.5
    assert -0.5 <= result.random_baseline <= 0.5
    assert len(result.baseline_scores) == 2
    assert result.random_baseline == pytest.approx(np.mean(result.baseline_scores))
    assert result.better_than_random == (result.score > result.random_baseline)
    assert result.percentiles == (30, 70)
    assert result.target_index == cam.target_index
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_faithfulness_repeats_with_seed(small_model, tiles):
    tile = np.ascontiguousarray(tiles[160][:SMALL_TILE, :SMALL_TILE])
    cam = compute_cam(small_model, tile)
    first = faithfulness(small_model, tile, cam, seed=3, percentiles=(50,), baseline_maps=1)
    second = faithfulness(small_model, tile, cam, seed=3, percentiles=(50,), baseline_maps=1)

    assert first.score == second.score
    assert first.random_baseline == second.random_baseline


def test_faithfulness_registry_model_tiled(classifiers, tiles):
    model = classifiers["student"]
    cam = compute_cam(model, tiles[224])
    result = faithfulness(model, tiles[224], cam, percentiles=(50,), baseline_maps=1)

    assert np.isfinite(result.score)
    assert np.isfinite(result.random_baseline)


def test_faithfulness_rejects_mismatched_cam(classifiers, tiles):
    cam = compute_cam(classifiers["student"], tiles[80])
    with pytest.raises(ValueError, match="student model, not binary"):
        faithfulness(classifiers["binary"], tiles[80], cam)
    with pytest.raises(ValueError, match="does not match"):
        faithfulness(classifiers["student"], tiles[120], cam)


# --------------------------------------------------------------------------- sanity check


def test_randomisation_check_fields(small_model, tiles):
    tile = np.ascontiguousarray(tiles[160][:SMALL_TILE, :SMALL_TILE])
    weights_before = {key: value.clone() for key, value in small_model.module.state_dict().items()}
    # LayerCAM keeps positive gradients only, so random weights rarely give an empty map.
    result = randomisation_check(small_model, tile, method="layercam", target="Normal", seed=5)

    assert -1.0 <= result.rank_correlation <= 1.0
    assert result.randomised_map.shape == tile.shape[:2]
    assert result.randomised_map.dtype == np.float32
    np.testing.assert_array_equal(result.trained_map, compute_cam(small_model, tile, method="layercam", target="Normal").map)
    assert result.target_class == "Normal"
    assert not np.array_equal(result.trained_map, result.randomised_map)
    for key, value in small_model.module.state_dict().items():
        assert torch.equal(value, weights_before[key]), key


def test_randomisation_check_empty_map_is_nan(small_model, tiles):
    tile = np.ascontiguousarray(tiles[160][:SMALL_TILE, :SMALL_TILE])
    empty = compute_cam(small_model, tile, target="Abnormal")
    assert "empty_map" in codes(empty.warnings), "precondition: this random model gives an empty map"

    result = randomisation_check(small_model, tile, target="Abnormal")

    assert np.isnan(result.rank_correlation)
    assert "constant_map" in codes(result.warnings)


def test_randomisation_check_repeats_with_seed(small_model, tiles):
    tile = np.ascontiguousarray(tiles[160][:SMALL_TILE, :SMALL_TILE])
    first = randomisation_check(small_model, tile, method="layercam", seed=5)
    second = randomisation_check(small_model, tile, method="layercam", seed=5)
    third = randomisation_check(small_model, tile, method="layercam", seed=6)

    assert first.rank_correlation == second.rank_correlation
    np.testing.assert_array_equal(first.randomised_map, second.randomised_map)
    assert not np.array_equal(first.randomised_map, third.randomised_map)


def test_randomisation_check_efficientnet(classifiers, tiles):
    result = randomisation_check(classifiers["tissue"], tiles[160], method="layercam")

    assert result.randomised_map.shape == (160, 160)
    assert np.isfinite(result.rank_correlation)
    assert "scale_mismatch" in codes(result.warnings)


# --------------------------------------------------------------------------- masks


def test_segment_percentile_area():
    ramp = np.tile(np.linspace(0, 1, 100, dtype=np.float32), (50, 1))
    result = segment_cam(ramp, method="percentile", percentile=80)

    assert result.method == "percentile"
    assert result.threshold == pytest.approx(0.8)
    assert result.area_fraction == pytest.approx(0.2)
    assert result.mask.dtype == bool
    assert result.mask[:, -1].all()
    assert not result.mask[:, 0].any()


def test_segment_otsu_splits_two_levels():
    rng = np.random.default_rng(0)
    cam_map = np.full((40, 60), 0.1, dtype=np.float32)
    cam_map[:, 45:] = 0.9
    cam_map += rng.uniform(-0.05, 0.05, cam_map.shape).astype(np.float32)
    result = segment_cam(cam_map, method="otsu")

    assert 0.15 < result.threshold < 0.85
    assert result.area_fraction == pytest.approx(0.25)
    assert result.mask[:, 45:].all()


def test_segment_real_cam(classifiers, tiles):
    cam = compute_cam(classifiers["binary"], tiles[160])
    result = segment_cam(cam.map)

    assert result.mask.shape == (160, 160)
    assert 0.0 < result.threshold < 1.0
    assert result.area_fraction == pytest.approx(result.mask.mean())
    assert 0.0 < result.area_fraction < 1.0


@pytest.mark.parametrize("method", ["otsu", "percentile"])
def test_segment_constant_map_is_empty(method):
    result = segment_cam(np.zeros((32, 32), dtype=np.float32), method=method)

    assert not result.mask.any()
    assert result.area_fraction == 0.0


def test_segment_rejects_bad_options():
    cam_map = np.zeros((8, 8), dtype=np.float32)
    with pytest.raises(ExplanationError, match="Unknown threshold method 'mean'"):
        segment_cam(cam_map, method="mean")
    with pytest.raises(ExplanationError, match="percentile"):
        segment_cam(cam_map, method="percentile", percentile=100)


def test_save_mask_png_round_trip(tmp_path):
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:15, 10:30] = True
    path = save_mask_png(CamMask(mask, 0.5, float(mask.mean()), "otsu"), tmp_path / "nested" / "mask.png")

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.mode == "L"
        pixels = np.asarray(image)
    assert pixels.shape == (30, 40)
    assert set(np.unique(pixels)) == {0, 255}
    np.testing.assert_array_equal(pixels == 255, mask)
    assert save_mask_png(mask, tmp_path / "plain.png").is_file()


# --------------------------------------------------------------------------- command line


def test_cli_explain_writes_cam_files(weights_env, gashissdb_tile, tmp_path, capsys):
    status = main(["explain", str(gashissdb_tile), "--model", "binary", "--method", "hirescam", "--out", str(tmp_path)])
    output = capsys.readouterr().out

    assert status == 0
    prefix = tmp_path / "Abnormal-00051.binary.hirescam"
    with Image.open(f"{prefix}.overlay.png") as image:
        assert image.size == (160, 160)
        assert image.mode == "RGB"
    cam_map = np.load(f"{prefix}.map.npy")
    assert cam_map.shape == (160, 160)
    assert cam_map.dtype == np.float32
    assert 0.0 <= cam_map.min() <= cam_map.max() <= 1.0
    with Image.open(f"{prefix}.mask.png") as image:
        assert image.size == (160, 160)
    assert "HiResCAM" in output
    assert "faithfulness" not in output


def test_cli_explain_score(random_weights, gashissdb_tile, tmp_path, capsys, monkeypatch):
    weights = tmp_path / "weights"
    save_small_classifier(weights, "student")
    monkeypatch.setenv("GASTRICVISION_WEIGHTS", str(weights))
    status = main(["explain", str(gashissdb_tile), "--model", "student", "--target", "Normal", "--score", "--out", str(tmp_path / "out")])
    output = capsys.readouterr().out

    assert status == 0
    assert "Grad-CAM for Normal" in output
    assert "faithfulness (ROAD)" in output
    assert (tmp_path / "out" / "Abnormal-00051.student.gradcam.map.npy").is_file()


def test_cli_explain_reconstruction_files(weights_env, gchtid_tile, tmp_path, capsys):
    status = main(["explain", str(gchtid_tile), "--model", "autoencoder", "--out", str(tmp_path)])
    output = capsys.readouterr().out

    assert status == 0
    with Image.open(tmp_path / "STR_458.autoencoder.reconstruction.png") as image:
        assert image.size == (224, 224)
    assert np.load(tmp_path / "STR_458.autoencoder.l1.npy").shape == (224, 224)
    assert np.load(tmp_path / "STR_458.autoencoder.ssim.npy").shape == (224, 224)
    assert (tmp_path / "STR_458.autoencoder.l1.png").is_file()
    assert "autoencoder error" in output


def test_cli_explain_bad_file_exit_2(weights_env, gashissdb_tile, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(gashissdb_tile.read_bytes()[:300])
    status = main(["explain", str(broken), str(gashissdb_tile), "--model", "student", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()

    assert status == 2
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "broken.png" in errors[0]
    assert (tmp_path / "out" / "Abnormal-00051.student.gradcam.overlay.png").is_file()
    assert not list((tmp_path / "out").glob("broken*"))


def test_cli_explain_unknown_target_exit_2(weights_env, gashissdb_tile, tmp_path, capsys):
    status = main(["explain", str(gashissdb_tile), "--model", "binary", "--target", "Cancer", "--out", str(tmp_path)])
    captured = capsys.readouterr()

    assert status == 2
    assert captured.err.strip() == (
        "error: Unknown target class 'Cancer' for the binary model: use one of Normal, Abnormal "
        "or an index from 0 to 1."
    )
    assert captured.out == ""


def test_known_probabilities_skip_forward(classifiers, tiles):
    model = classifiers["tissue"]
    plain = compute_cam(model, tiles[224])
    result = Predictor(loaded={"tissue": model}).predict_image(LoadedImage(tiles[224], "tile", "PNG", "RGB", "0" * 64))
    shortcut = compute_cam(model, tiles[224], probabilities=result.tissue.probabilities)

    assert shortcut.target_index == plain.target_index
    assert shortcut.target_probability == pytest.approx(plain.target_probability, abs=1e-5)
    assert np.allclose(shortcut.map, plain.map, atol=1e-5)
