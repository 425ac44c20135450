"""Class activation maps of the classifiers, and tools to judge and use them.

:func:`compute_cam` runs one of the pytorch-grad-cam methods in :data:`CAM_METHODS` on
the layer that the model's manifest declares (``cam_target_layer``, filled in from
:func:`gastricvision.models.cam_target_layer_name`). The tile goes through the same scale
policy as prediction (:mod:`gastricvision.preprocessing`). A tile larger than the model's
training tile is cut into crops at the training scale, and the per-crop maps are stitched
back with overlapping crops averaged. A smaller tile is enlarged first, with a
``scale_mismatch`` warning. The map is always returned at the tile's own size, scaled to
[0, 1] over the whole tile (not per crop, so a crop with little evidence stays dim).

Around a map:

- :func:`overlay` colours it over the tile;
- :func:`faithfulness` scores it with ROAD ("A Consistent and Efficient Evaluation
  Strategy for Attribution Methods", arXiv 2202.00449) against random maps;
- :func:`randomisation_check` compares it with the map of the same architecture with
  random weights (the model parameter randomisation test of Adebayo et al., "Sanity
  Checks for Saliency Maps", NeurIPS 2018, arXiv 1810.03292);
- :func:`segment_cam` thresholds it into a mask, and :func:`save_mask_png` writes that.

CAMs need gradients, so every call here enables them locally, even inside
``torch.inference_mode``. The model's train/eval flags, the ``requires_grad`` flags and
``.grad`` of its parameters are restored afterwards, and the hooks are removed whether
the call succeeds or raises.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from .errors import GastricVisionError, TileWarning, WeightsError
from .imaging import LoadedImage
from .models import cam_target_layer_name, create_model
from .preprocessing import ViewPlan, normalise, plan_views, stitch, to_float_tensor
from .reconstruction import _rgb_array
from .weights import LoadedModel

__all__ = [
    "CAM_METHODS",
    "COLORMAPS",
    "ROAD_PERCENTILES",
    "CamMask",
    "CamMethod",
    "CamResult",
    "ExplanationError",
    "FaithfulnessResult",
    "SanityResult",
    "compute_cam",
    "faithfulness",
    "overlay",
    "randomisation_check",
    "resolve_target",
    "save_mask_png",
    "segment_cam",
]

logger = logging.getLogger(__name__)


class ExplanationError(GastricVisionError):
    """An explanation request with an unknown method, class, colormap or threshold."""


@dataclass(frozen=True)
class CamMethod:
    """A class activation map method offered to users.

    Attributes:
        label: Display name.
        slow: True when a map takes one forward pass per feature channel and view
            (Score-CAM: 512 to 1,280 passes per view for the registry's networks), so a
            front end should ask before running it.
        class_specific: False when the map ignores the target class (EigenCAM shows the
            first principal component of the activations, whatever the class).
        implementation: Class name in :mod:`pytorch_grad_cam`.
    """

    label: str
    slow: bool
    class_specific: bool
    implementation: str


CAM_METHODS: dict[str, CamMethod] = {
    "gradcam": CamMethod("Grad-CAM", False, True, "GradCAM"),
    "gradcam++": CamMethod("Grad-CAM++", False, True, "GradCAMPlusPlus"),
    "hirescam": CamMethod("HiResCAM", False, True, "HiResCAM"),
    "xgradcam": CamMethod("XGrad-CAM", False, True, "XGradCAM"),
    "layercam": CamMethod("LayerCAM", False, True, "LayerCAM"),
    "eigencam": CamMethod("EigenCAM", False, False, "EigenCAM"),
    "scorecam": CamMethod("Score-CAM", True, True, "ScoreCAM"),
}

_OPENCV_COLORMAPS = {
    "jet": cv2.COLORMAP_JET,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "turbo": cv2.COLORMAP_TURBO,
}
COLORMAPS: tuple[str, ...] = tuple(_OPENCV_COLORMAPS)

# Views per CAM call: bounds the activations and gradients held at once for large tiles.
CAM_CHUNK = 16

# Five removal levels, not pytorch-grad-cam's default nine, because each level costs two
# sparse linear solves per map and view.
ROAD_PERCENTILES: tuple[int, ...] = (10, 30, 50, 70, 90)

# Random baseline maps have this many cells across one training tile, between the sizes of
# the last feature maps of the registry networks (5x5 at 160 px, 7x7 at 224 px). They are
# then about as smooth as a CAM, so ROAD removes blobs of tissue, not scattered pixels.
RANDOM_MAP_CELLS = 6

# Spearman correlation is computed on maps reduced to at most this side in pixels. CAMs
# are enlarged from feature maps of 5 to 7 cells per training tile, so this keeps their
# detail and keeps large tiles fast.
SANITY_MAX_SIDE = 256


# --------------------------------------------------------------------------- results


@dataclass
class CamResult:
    """A class activation map of one tile.

    Attributes:
        map: ``(H, W)`` float32 in [0, 1] at the tile's own size.
        model: Registry name of the model.
        method: Key of :data:`CAM_METHODS`.
        target_index: Logit index of the explained class.
        target_class: Name of the explained class.
        warnings: Scale changes, and ``empty_map`` when no region raised the class score.
        target_probability: Calibrated probability of the target class, averaged over
            the crops like the prediction.
        predicted_class: The model's most probable class for the tile.
    """

    map: np.ndarray
    model: str
    method: str
    target_index: int
    target_class: str
    warnings: list[TileWarning] = field(default_factory=list)
    target_probability: float = float("nan")
    predicted_class: str = ""


@dataclass
class FaithfulnessResult:
    """ROAD score of a map, next to the score of random maps of the same tile.

    The score is ROAD's combined measure. At each of :attr:`percentiles`, pixels ranked
    by the map are replaced by noisy linear interpolation of their neighbours, once
    starting from the least relevant and once from the most relevant. The score is half
    the difference between the target class probabilities after the two removals,
    averaged over the percentiles. It lies in [-0.5, 0.5], and a higher score means that
    the map ranks pixels more the way the model uses them.

    Attributes:
        score: ROAD score of the map.
        random_baseline: Mean ROAD score of the random maps.
        better_than_random: ``score > random_baseline``.
        baseline_scores: ROAD score of each random map. Their spread shows how much of
            the gap can be chance.
        percentiles: Removal percentiles that were averaged.
        target_index: Class whose probability was measured.
        target_class: Its name.
    """

    score: float
    random_baseline: float
    better_than_random: bool
    baseline_scores: list[float] = field(default_factory=list)
    percentiles: tuple[int, ...] = ROAD_PERCENTILES
    target_index: int = 0
    target_class: str = ""


@dataclass
class SanityResult:
    """Model randomisation test: the map of a model next to that of random weights.

    A map that stays much the same when the learnt weights are replaced by random ones
    shows the image's structure, not what the model learnt. A map that depends on the
    learnt weights has a low rank correlation.

    Attributes:
        rank_correlation: Spearman correlation of the two maps, in [-1, 1], or NaN when
            either map is constant (for example empty), because ranks are then undefined.
        randomised_map: ``(H, W)`` map of the randomised model, for the same class.
        trained_map: ``(H, W)`` map of the model as loaded.
        method: Key of :data:`CAM_METHODS`.
        target_index: Logit index of the explained class.
        target_class: Its name.
        warnings: Warnings of both maps, without repeats.
    """

    rank_correlation: float
    randomised_map: np.ndarray
    trained_map: np.ndarray | None = None
    method: str = ""
    target_index: int = 0
    target_class: str = ""
    warnings: list[TileWarning] = field(default_factory=list)


@dataclass
class CamMask:
    """The region of a map above a threshold.

    Attributes:
        mask: ``(H, W)`` bool, True where the map is strictly above ``threshold``.
        threshold: Map value used as the threshold.
        area_fraction: Fraction of the tile inside the mask, in [0, 1].
        method: ``otsu`` or ``percentile``.
    """

    mask: np.ndarray
    threshold: float
    area_fraction: float
    method: str


# --------------------------------------------------------------------------- CAMs


def compute_cam(
    model: LoadedModel,
    image: np.ndarray | LoadedImage,
    *,
    method: str = "gradcam",
    target: str | int | None = None,
    probabilities: Sequence[float] | Mapping[str, float] | None = None,
) -> CamResult:
    """Compute a class activation map of one tile at the tile's own size.

    Args:
        model: A loaded classifier.
        image: ``(H, W, 3)`` ``uint8`` RGB array, or a decoded tile.
        method: Key of :data:`CAM_METHODS`.
        target: Class name or logit index to explain; the predicted class when None.
        probabilities: The tile's calibrated class probabilities from this model, as the
            Predictor returns them (``ClassifierOutput.probabilities``). When given, the
            forward pass that would compute them is skipped.

    Raises:
        ExplanationError: Unknown method or class.
        WeightsError: The declared target layer is not a module of the network.
        ValueError: ``model`` is a reconstruction model, or ``image`` is not RGB uint8.
    """
    cam_method = _cam_method(method)
    _require_classifier(model)
    requested_index = None if target is None else resolve_target(model, target)
    array, name = _rgb_array(image)
    plan = _plan(model, array, name)

    with _explaining(model.module):
        inputs = _network_input(model, plan)
        if probabilities is None:
            probabilities = _class_probabilities(model, inputs)
        else:
            probabilities = _known_probabilities(model, probabilities)
        target_index = int(np.argmax(probabilities)) if requested_index is None else requested_index
        view_maps = _view_maps(model, method, inputs, target_index)

    tile_map = _unit_range(stitch(view_maps, plan, array.shape[:2]))
    classes = model.manifest.classes
    notes = list(plan.warnings)
    if not tile_map.any():
        notes.append(
            TileWarning(
                "empty_map",
                f"{cam_method.label} found no region of {name} that raises the {model.name} "
                f"model's score for {classes[target_index]}, so the map is empty.",
            )
        )
    return CamResult(
        map=tile_map,
        model=model.name,
        method=method,
        target_index=target_index,
        target_class=classes[target_index],
        warnings=notes,
        target_probability=float(probabilities[target_index]),
        predicted_class=classes[int(np.argmax(probabilities))],
    )


def _cam_method(method: str) -> CamMethod:
    try:
        return CAM_METHODS[method]
    except (KeyError, TypeError):
        raise ExplanationError(
            f"Unknown CAM method {method!r}: use one of {', '.join(CAM_METHODS)}."
        ) from None


def _require_classifier(model: LoadedModel) -> None:
    if model.manifest.task == "reconstruction":
        raise ValueError(
            f"{model.name} is a reconstruction model and has no classes to explain; use "
            "gastricvision.reconstruction.reconstruction_maps for its error maps."
        )


def _plan(model: LoadedModel, array: np.ndarray, name: str) -> ViewPlan:
    manifest = model.manifest
    return plan_views(
        array,
        tile_size=manifest.tile_size,
        input_size=manifest.input_size,
        model_name=f"the {manifest.name} model",
        name=name,
    )


def _device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _network_input(model: LoadedModel, plan: ViewPlan) -> torch.Tensor:
    batch = to_float_tensor(plan.views).to(_device(model.module))
    return normalise(batch, model.manifest.mean, model.manifest.std)


def _class_probabilities(model: LoadedModel, inputs: torch.Tensor) -> np.ndarray:
    """Calibrated class probabilities averaged over the views, as the Predictor does."""
    temperature = model.manifest.temperature
    with torch.no_grad():
        parts = [
            torch.softmax(model.module(inputs[start : start + CAM_CHUNK]).float() / temperature, dim=1)
            for start in range(0, len(inputs), CAM_CHUNK)
        ]
    return torch.cat(parts).mean(dim=0).cpu().numpy()


def _known_probabilities(model: LoadedModel, probabilities: Sequence[float] | Mapping[str, float]) -> np.ndarray:
    classes = model.manifest.classes
    if isinstance(probabilities, Mapping):
        probabilities = [probabilities[name] for name in classes]
    values = np.asarray(probabilities, dtype=np.float64)
    if values.shape != (len(classes),):
        raise ValueError(f"Expected {len(classes)} probabilities for the {model.name} model, got shape {values.shape}.")
    return values


def resolve_target(model: LoadedModel, target: str | int) -> int:
    """Return the logit index of a class given by name (case-insensitive) or index.

    Raises:
        ExplanationError: No such class.
    """
    classes = model.manifest.classes
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if 0 <= int(target) < len(classes):
            return int(target)
    elif isinstance(target, str):
        if target in classes:
            return classes.index(target)
        folded = [name.casefold() for name in classes]
        if target.casefold() in folded:
            return folded.index(target.casefold())

    raise ExplanationError(
        f"Unknown target class {target!r} for the {model.name} model: use one of "
        f"{', '.join(classes)} or an index from 0 to {len(classes) - 1}."
    )


def _target_layer(model: LoadedModel) -> nn.Module:
    layer_name = model.manifest.cam_target_layer or cam_target_layer_name(model.manifest.architecture)
    try:
        return model.module.get_submodule(layer_name)
    except AttributeError:
        raise WeightsError(
            f"{model.folder}: the manifest's CAM target layer {layer_name!r} is not a module "
            f"of {model.manifest.architecture}; fix cam_target_layer in its manifest.json."
        ) from None


def _view_maps(model: LoadedModel, method: str, inputs: torch.Tensor, target_index: int) -> np.ndarray:
    """``(N, h, w)`` non-negative maps at feature-map resolution, one per view."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_type = _unscaled_cam_type(CAM_METHODS[method].implementation)
    # Score-CAM masks a copy of the input with every channel's map at once (for
    # tf_efficientnet_lite0, 1,280 x 3 x 224 x 224 floats, 0.8 GB per view), so it runs
    # one view at a time.
    chunk_size = 1 if method == "scorecam" else CAM_CHUNK
    maps = []
    with _released(cam_type(model=model.module, target_layers=[_target_layer(model)])) as cam:
        for start in range(0, len(inputs), chunk_size):
            chunk = inputs[start : start + chunk_size].detach().clone()
            if cam.uses_gradients:
                # Parameters are frozen, so the gradient path starts at the input.
                chunk.requires_grad_(True)
            targets = [ClassifierOutputTarget(target_index) for _ in range(len(chunk))]
            maps.append(cam(input_tensor=chunk, targets=targets))
    return np.concatenate(maps)


class _FeatureResolutionMaps:
    """Mixin for pytorch-grad-cam classes that returns maps without per-image scaling.

    The library scales every image's map to [0, 1] and resizes it to the input. Views of
    one tile must keep their relative strength until they are stitched, and stitching
    does the resizing, so this keeps the ReLU and drops the rest.

    NOTE: overrides ``compute_cam_per_layer`` and ``aggregate_multi_layers`` of
    ``BaseCAM`` as they are in grad-cam 1.5.7; check them when upgrading.
    """

    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        recorded = self.activations_and_grads
        activations = [tensor.cpu().numpy() for tensor in recorded.activations]
        gradients = [tensor.cpu().numpy() for tensor in recorded.gradients]
        per_layer = []
        for index, layer in enumerate(self.target_layers):
            layer_map = self.get_cam_image(
                input_tensor,
                layer,
                targets,
                activations[index] if index < len(activations) else None,
                gradients[index] if index < len(gradients) else None,
                eigen_smooth,
            )
            per_layer.append(np.maximum(layer_map, 0)[:, None])
        return per_layer

    def aggregate_multi_layers(self, cam_per_target_layer):
        return np.concatenate(cam_per_target_layer, axis=1).mean(axis=1)


@functools.cache
def _unscaled_cam_type(implementation: str) -> type:
    import pytorch_grad_cam

    base = getattr(pytorch_grad_cam, implementation)
    return type(f"Unscaled{implementation}", (_FeatureResolutionMaps, base), {})


@contextmanager
def _released(cam) -> Iterator:
    """Yield ``cam`` and remove its hooks afterwards.

    ``BaseCAM.__exit__`` also removes them, but it swallows ``IndexError``, which would
    hide a failure from the caller.
    """
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()
        cam.outputs = None


_module_locks: "weakref.WeakKeyDictionary[nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_module_locks_guard = threading.Lock()


def _module_lock(module: nn.Module) -> threading.Lock:
    with _module_locks_guard:
        lock = _module_locks.get(module)
        if lock is None:
            lock = _module_locks[module] = threading.Lock()
        return lock


@contextmanager
def _explaining(module: nn.Module) -> Iterator[None]:
    """Run gradient-based explanation code on ``module`` and leave it as it was.

    Puts the network in eval mode with frozen parameters and enables gradients, also
    inside ``torch.inference_mode``. Afterwards it restores every module's train/eval
    flag and every parameter's ``requires_grad`` and ``.grad``. Calls on the same
    network are serialised, because CAM hooks are registered on the shared modules.

    NOTE: a plain forward pass of the same network in another thread (a Predictor
    sharing the cached model) while hooks are registered can add its activations to
    the hook's record, so the map of that call may be wrong.
    """
    with _module_lock(module):
        modes = [(submodule, submodule.training) for submodule in module.modules()]
        parameters = [(parameter, parameter.requires_grad, parameter.grad) for parameter in module.parameters()]
        try:
            module.eval()
            for parameter, _, _ in parameters:
                parameter.requires_grad_(False)
            with torch.inference_mode(False), torch.enable_grad():
                yield
        finally:
            for submodule, training in modes:
                submodule.training = training
            for parameter, requires_grad, grad in parameters:
                parameter.requires_grad_(requires_grad)
                parameter.grad = grad


def _unit_range(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the minimum and maximum. A constant map becomes zeros."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- overlay


def overlay(
    image: np.ndarray,
    cam_map: np.ndarray,
    *,
    colormap: str = "jet",
    opacity: float = 0.5,
) -> np.ndarray:
    """Blend a coloured map over a tile.

    Args:
        image: ``(H, W, 3)`` ``uint8`` RGB tile (``(H, W)`` greyscale is accepted).
        cam_map: ``(H, W)`` map in [0, 1]. Values outside are clipped, and NaN counts as 0.
        colormap: One of :data:`COLORMAPS` (OpenCV's colormaps, converted to RGB).
        opacity: Weight of the colour, from 0 (tile only) to 1 (colour only).

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB.

    Raises:
        ExplanationError: Unknown colormap or opacity outside [0, 1].
        ValueError: ``image`` is not ``uint8``, or ``cam_map`` does not have its height
            and width.
    """
    if colormap not in _OPENCV_COLORMAPS:
        raise ExplanationError(f"Unknown colormap {colormap!r}: use one of {', '.join(COLORMAPS)}.")
    if not 0.0 <= float(opacity) <= 1.0:
        raise ExplanationError(f"Invalid opacity {opacity!r}: use a number from 0 to 1.")

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 tile, got dtype {image.dtype}.")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    cam_map = np.asarray(cam_map)
    if cam_map.shape != image.shape[:2]:
        raise ValueError(f"Map shape {cam_map.shape} does not match the tile's {image.shape[:2]}.")

    levels = np.round(np.clip(np.nan_to_num(cam_map, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    # OpenCV colormaps return BGR.
    colour = cv2.cvtColor(cv2.applyColorMap(levels, _OPENCV_COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * colour.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- faithfulness


class _CalibratedProbability:
    """pytorch-grad-cam target: the calibrated probability of one class."""

    def __init__(self, index: int, temperature: float):
        self.index = index
        self.temperature = temperature

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float() / self.temperature, dim=-1)[..., self.index]


def faithfulness(
    model: LoadedModel,
    image: np.ndarray | LoadedImage,
    cam: CamResult,
    *,
    seed: int = 0,
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    baseline_maps: int = 2,
) -> FaithfulnessResult:
    """Score how well ``cam`` ranks the pixels the model uses, against random maps.

    Runs ROAD (pytorch_grad_cam.metrics.road.ROADCombined) on the model's input views of
    the tile, with the map cut into the same views, and again with ``baseline_maps``
    smooth random maps of the tile. Pixels with equal map values (large zero regions
    are common after the ReLU) are ranked in random order, so that each percentile
    removes the stated share of pixels. Each ROAD evaluation solves one sparse linear
    system per percentile, direction and view. With the defaults, a 160 px tile and the
    student network took 9 s on one thread of a busy two-core CPU.

    Args:
        model: The classifier that ``cam`` explains.
        image: The tile ``cam`` was computed on.
        cam: Result of :func:`compute_cam` for ``model`` and ``image``.
        seed: Seeds the random maps, the tie-breaking and ROAD's imputation noise; the
            global random state is left unchanged.
        percentiles: Removal percentiles to average over.
        baseline_maps: Number of random maps averaged into the baseline.

    Raises:
        ValueError: ``cam`` does not belong to this model or tile, or bad arguments.
    """
    from pytorch_grad_cam.metrics.road import ROADCombined

    _require_classifier(model)
    array, name = _rgb_array(image)
    if cam.model != model.name:
        raise ValueError(f"The map was computed with the {cam.model} model, not {model.name}.")
    if cam.map.shape != array.shape[:2]:
        raise ValueError(f"The map's shape {cam.map.shape} does not match the tile's {array.shape[:2]}.")
    if baseline_maps < 1 or not percentiles:
        raise ValueError("faithfulness needs at least one baseline map and one percentile.")

    plan = _plan(model, array, name)
    metric = ROADCombined(percentiles=list(percentiles))
    target = _CalibratedProbability(cam.target_index, model.manifest.temperature)
    rng = np.random.default_rng(seed)

    def road_score(tile_map: np.ndarray) -> float:
        view_maps = _maps_for_views(tile_map, plan, model.manifest.input_size, rng)
        scores = metric(inputs, view_maps, [target] * len(inputs), model.module)
        return float(np.mean(scores))

    with _explaining(model.module), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inputs = _network_input(model, plan)
        score = road_score(cam.map)
        baseline_scores = [
            road_score(_random_map(rng, array.shape[:2], model.manifest.tile_size))
            for _ in range(baseline_maps)
        ]

    baseline = float(np.mean(baseline_scores))
    logger.info(
        "ROAD of %s %s map for %s: %.4f (random maps %.4f)",
        model.name, cam.method, cam.target_class, score, baseline,
    )
    return FaithfulnessResult(
        score=score,
        random_baseline=baseline,
        better_than_random=score > baseline,
        baseline_scores=baseline_scores,
        percentiles=tuple(int(p) for p in percentiles),
        target_index=cam.target_index,
        target_class=cam.target_class,
    )


def _maps_for_views(tile_map: np.ndarray, plan: ViewPlan, input_size: int, rng: np.random.Generator) -> np.ndarray:
    """Cut a tile-level map into ``(N, input_size, input_size)`` maps matching the views.

    The inverse of :func:`~gastricvision.preprocessing.stitch`: resize to the working
    image, crop each view's box, resize to the network input. A random offset below
    1e-6 puts equal values in random order. It can also swap values that differ by less
    than that, which does not change which blob of tissue a percentile removes.
    """
    work_h, work_w = plan.working_size
    working = cv2.resize(tile_map.astype(np.float32), (work_w, work_h), interpolation=cv2.INTER_LINEAR)
    views = np.empty((len(plan.boxes), input_size, input_size), dtype=np.float32)
    for index, (left, top, size) in enumerate(plan.boxes):
        crop = working[top : top + size, left : left + size]
        views[index] = cv2.resize(crop, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
    views = np.clip(views, 0.0, 1.0)
    return (views + rng.uniform(0.0, 1e-6, size=views.shape)).astype(np.float32)


def _random_map(rng: np.random.Generator, size: tuple[int, int], tile_size: int) -> np.ndarray:
    """Draw a smooth random map: uniform values on a coarse grid, enlarged bilinearly."""
    height, width = size
    rows = max(1, round(RANDOM_MAP_CELLS * height / tile_size))
    columns = max(1, round(RANDOM_MAP_CELLS * width / tile_size))
    grid = rng.uniform(0.0, 1.0, size=(rows, columns)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- sanity check


def randomisation_check(
    model: LoadedModel,
    image: np.ndarray | LoadedImage,
    *,
    method: str = "gradcam",
    target: str | int | None = None,
    seed: int = 0,
) -> SanityResult:
    """Compare the map of ``model`` with that of the same architecture with random weights.

    The model registry builds the randomised network with the default timm
    initialisation, drawn from ``seed`` without changing the global random state. It
    explains the same class as the trained network. ``model`` itself is not modified.

    Raises:
        ExplanationError: Unknown method or class.
        ValueError: ``model`` is a reconstruction model.
    """
    trained = compute_cam(model, image, method=method, target=target)

    randomised_model = _randomised_copy(model, seed)
    randomised = compute_cam(randomised_model, image, method=method, target=trained.target_index)

    notes = list(trained.warnings)
    notes += [note for note in randomised.warnings if note not in notes]
    correlation = _rank_correlation(trained.map, randomised.map)
    if np.isnan(correlation):
        notes.append(
            TileWarning(
                "constant_map",
                "One of the two maps is constant, so their rank correlation is undefined.",
            )
        )
    return SanityResult(
        rank_correlation=correlation,
        randomised_map=randomised.map,
        trained_map=trained.map,
        method=method,
        target_index=trained.target_index,
        target_class=trained.target_class,
        warnings=notes,
    )


def _randomised_copy(model: LoadedModel, seed: int) -> LoadedModel:
    manifest = model.manifest
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = create_model(manifest.architecture, manifest.num_classes)
    module.to(_device(model.module)).eval()
    return LoadedModel(manifest, module, model.folder)


def _rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    from scipy.stats import spearmanr

    height, width = first.shape
    scale = min(1.0, SANITY_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        first = cv2.resize(first, size, interpolation=cv2.INTER_AREA)
        second = cv2.resize(second, size, interpolation=cv2.INTER_AREA)
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return float("nan")
    return float(spearmanr(first.ravel(), second.ravel()).statistic)


# --------------------------------------------------------------------------- masks


def segment_cam(cam_map: np.ndarray, *, method: str = "otsu", percentile: float = 80.0) -> CamMask:
    """Threshold a map into the region that drove the decision.

    Args:
        cam_map: ``(H, W)`` map, usually :attr:`CamResult.map`.
        method: ``otsu`` (Otsu's threshold on the map's histogram) or ``percentile``.
        percentile: For ``percentile``: the map value at this percentile is the
            threshold, so about ``100 - percentile`` % of the tile is kept when the map
            has few ties.

    The mask contains the pixels strictly above the threshold, so a constant map (an
    empty CAM) gives an empty mask.

    Raises:
        ExplanationError: Unknown method, or a percentile outside [0, 100).
        ValueError: ``cam_map`` is not two-dimensional.
    """
    values = np.nan_to_num(np.asarray(cam_map, dtype=np.float32), nan=0.0)
    if values.ndim != 2:
        raise ValueError(f"Expected an (H, W) map, got shape {values.shape}.")

    if method == "otsu":
        from skimage.filters import threshold_otsu

        threshold = float(values.flat[0]) if np.ptp(values) == 0 else float(threshold_otsu(values))
    elif method == "percentile":
        if not 0.0 <= float(percentile) < 100.0:
            raise ExplanationError(f"Invalid percentile {percentile!r}: use a number from 0 to below 100.")
        threshold = float(np.percentile(values, percentile))
    else:
        raise ExplanationError(f"Unknown threshold method {method!r}: use otsu or percentile.")

    mask = values > threshold
    return CamMask(mask=mask, threshold=threshold, area_fraction=float(mask.mean()), method=method)


def save_mask_png(mask: CamMask | np.ndarray, path: str | os.PathLike) -> Path:
    """Write a mask as an 8-bit greyscale PNG, 255 inside and 0 outside.

    Missing parent folders are created. Returns the path written.
    """
    array = mask.mask if isinstance(mask, CamMask) else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"Expected an (H, W) mask, got shape {array.shape}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(array.astype(bool), 255, 0).astype(np.uint8)).save(path, format="PNG")
    return path
