"""Reconstructions, error maps and anomaly scores of the autoencoder and the U-Net.

The autoencoder reconstructs its whole input through a bottleneck. The U-Net has skip
connections and would learn to copy its input, so it is trained and run as an
inpainting network: square patches of :data:`PATCH` pixels are hidden (set to grey, with
a fourth input channel marking them) and it predicts them from their surroundings. At
inference every patch is hidden exactly once over :data:`MASK_PASSES` passes (a 2x2
interleaved pattern), and each pixel's reconstruction comes from the pass that hid it.
Its error map therefore marks tissue that could not be predicted from its context.

Errors are in intensity units of [0, 1] RGB. The tile-level anomaly score is the mean L1
error; its percentile among the training tiles comes from the manifest's
``anomaly_reference`` (written by the trainer).

:func:`reconstruction_maps` gives the reconstruction and error maps of one tile at the
tile's own size, following the scale policy of :mod:`gastricvision.preprocessing`: a
larger tile is reconstructed crop by crop at the training scale and stitched, a smaller
one is enlarged first (with a ``scale_mismatch`` warning) and the maps are reduced back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import TileWarning
from .imaging import LoadedImage
from .preprocessing import ViewPlan, plan_views, stitch, to_float_tensor

if TYPE_CHECKING:
    from .weights import LoadedModel

__all__ = [
    "MASK_PASSES",
    "PATCH",
    "ReconstructionMaps",
    "UNUSUAL_PERCENTILE",
    "anomaly_percentile",
    "error_overlay",
    "inference_masks",
    "l1_error_map",
    "mask_input",
    "random_masks",
    "reconstruct",
    "reconstruction_maps",
    "reconstruction_plan",
    "unusual_tile_warning",
    "view_scores",
    "reference_percentiles",
    "ssim_error_map",
]

logger = logging.getLogger(__name__)

PATCH = 16
MASK_PASSES = 4
MASK_FILL = 0.5

# A tile whose anomaly score reaches this percentile of the training tiles is flagged as
# unusual. Only one training tile in twenty scores that high.
UNUSUAL_PERCENTILE = 95.0

# Views reconstructed per forward pass. The U-Net runs MASK_PASSES inputs per view.
RECONSTRUCTION_CHUNK = 16


@dataclass
class ReconstructionMaps:
    """Per-tile reconstruction outputs at the tile's own size.

    Attributes:
        reconstruction: ``(H, W, 3)`` ``uint8`` RGB.
        l1_map: ``(H, W)`` mean absolute error over channels, in [0, 1].
        ssim_map: ``(H, W)`` structural dissimilarity ``(1 - SSIM) / 2``, in [0, 1].
        score: The anomaly score: mean L1 error of the network views, averaged over the
            views, as the Predictor reports it. It can differ slightly from the mean of
            ``l1_map``, which is resized to the tile and averages overlapping crops.
        percentile: Percentile of ``score`` among training tiles, if known.
        unusual: True when ``percentile`` is at least :data:`UNUSUAL_PERCENTILE`.
        model: Registry name of the model.
        warnings: Scale changes, ``unusual_tile``, or ``no_anomaly_reference`` when the
            manifest has no training scores to compare with.
    """

    reconstruction: np.ndarray
    l1_map: np.ndarray
    ssim_map: np.ndarray
    score: float
    percentile: float | None
    unusual: bool = False
    model: str = ""
    warnings: list[TileWarning] = field(default_factory=list)


def inference_masks(height: int, width: int | None = None, patch: int = PATCH) -> torch.Tensor:
    """``(MASK_PASSES, 1, height, width)`` masks that hide every patch exactly once."""
    width = height if width is None else width
    rows = torch.arange(-(-height // patch)).view(-1, 1)
    cols = torch.arange(-(-width // patch)).view(1, -1)
    masks = []
    for row_parity in (0, 1):
        for col_parity in (0, 1):
            grid = ((rows % 2 == row_parity) & (cols % 2 == col_parity)).float()
            full = grid.repeat_interleave(patch, 0).repeat_interleave(patch, 1)[:height, :width]
            masks.append(full)
    return torch.stack(masks)[:, None]


def random_masks(batch: int, size: int, *, ratio: float = 0.3, patch: int = PATCH, generator=None) -> torch.Tensor:
    """``(batch, 1, size, size)`` masks hiding a random ``ratio`` of the patches."""
    cells = -(-size // patch)
    grid = (torch.rand(batch, 1, cells, cells, generator=generator) < ratio).float()
    return grid.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[..., :size, :size]


def mask_input(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Grey out the masked pixels of ``images`` ([0, 1] RGB) and append the mask channel."""
    hidden = images * (1 - masks) + MASK_FILL * masks
    return torch.cat([hidden, masks.expand(images.shape[0], 1, *images.shape[2:])], dim=1)


# Views per U-Net forward on a CPU. Each view is four full-resolution masked passes, and
# larger batches ran slower per view on a 2-core x86 CPU (41 ms per view for one or two
# views, 100 ms for 64, bench/benchmark.py), as their activations no longer fit in cache.
UNET_CPU_VIEWS = 2


def reconstruct(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Reconstruct ``(N, 3, H, W)`` [0, 1] images with an autoencoder or a masked U-Net."""
    in_channels = getattr(model, "in_channels", 3)
    if in_channels == 3:
        return model(images)
    if images.device.type == "cpu" and len(images) > UNET_CPU_VIEWS:
        return torch.cat([_masked_reconstruction(model, images[i : i + UNET_CPU_VIEWS]) for i in range(0, len(images), UNET_CPU_VIEWS)])
    return _masked_reconstruction(model, images)


def _masked_reconstruction(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    masks = inference_masks(*images.shape[-2:]).to(images.device, images.dtype)
    batch = images.shape[0]
    # One forward over N x MASK_PASSES inputs; each pass fills the patches it hid.
    repeated = images.repeat_interleave(MASK_PASSES, dim=0)
    pass_masks = masks.repeat(batch, 1, 1, 1)
    outputs = model(mask_input(repeated, pass_masks))
    outputs = outputs.view(batch, MASK_PASSES, 3, *images.shape[2:])
    weights = pass_masks.view(batch, MASK_PASSES, 1, *images.shape[2:])
    return (outputs * weights).sum(dim=1)


def l1_error_map(images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` mean absolute error over the RGB channels."""
    return (images - reconstructions).abs().mean(dim=1)


def ssim_error_map(images: torch.Tensor, reconstructions: torch.Tensor, window: int = 7) -> torch.Tensor:
    """``(N, H, W)`` structural dissimilarity ``(1 - SSIM) / 2`` on the luminance.

    SSIM (Wang et al. 2004) with a uniform ``window`` x ``window`` window and the usual
    constants for a data range of 1.
    """
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    x = (images * weights).sum(1, keepdim=True)
    y = (reconstructions * weights).sum(1, keepdim=True)
    c1, c2 = 0.01**2, 0.03**2
    pad = window // 2

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(t, (pad,) * 4, mode="reflect"), window, stride=1)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ((1 - ssim) / 2).clamp(0, 1)[:, 0]


REFERENCE_PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)


def reference_percentiles(scores: np.ndarray | list[float]) -> dict:
    """Summarise training-tile anomaly scores for the manifest's ``anomaly_reference``."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    return {
        "metric": "mean_l1",
        "count": int(scores.size),
        "percentiles": {str(p): float(np.percentile(scores, p)) for p in REFERENCE_PERCENTILES},
        # A sorted sample lets the percentile of a new score be interpolated exactly.
        "sample": [float(v) for v in scores[:: max(1, scores.size // 200)]],
    }


def anomaly_percentile(score: float, reference: dict | None) -> float | None:
    """Percentile (0 to 100) of ``score`` among the training tiles, or None if unknown."""
    if not reference or not reference.get("sample"):
        return None
    sample = np.asarray(reference["sample"], dtype=np.float64)
    return float(np.searchsorted(sample, score, side="right") / sample.size * 100.0)


# Both reconstruction networks are fully convolutional and take sides that are multiples
# of 16 (four stride-2 stages in the autoencoder; 16 px mask patches in the U-Net).
WHOLE_TILE_MULTIPLE = 16


def reconstruction_plan(array: np.ndarray, *, tile_size: int, input_size: int, model_name: str = "model", name: str = "tile") -> ViewPlan:
    """Network input of a tile for a reconstruction model: the whole tile at its own scale
    (padded to :data:`WHOLE_TILE_MULTIPLE`), or crops for very large images."""
    return plan_views(
        array,
        tile_size=tile_size,
        input_size=input_size,
        model_name=model_name,
        name=name,
        whole_multiple=WHOLE_TILE_MULTIPLE,
    )


def view_scores(l1_maps: torch.Tensor, plan: ViewPlan) -> torch.Tensor:
    """Mean L1 error of each view over its tile pixels (padding of a whole-tile view excluded)."""
    if plan.whole:
        height, width = plan.working_size
        l1_maps = l1_maps[:, :height, :width]
    return l1_maps.mean(dim=(1, 2))


def unusual_tile_warning(name: str, model_name: str, percentile: float) -> TileWarning:
    """Warning for a tile whose anomaly score is at or above :data:`UNUSUAL_PERCENTILE`."""
    return TileWarning(
        "unusual_tile",
        f"{name} reconstructs worse than {percentile:.0f} % of the {model_name} "
        "model's training tiles; it may show tissue, staining or artefacts unlike "
        "the training data.",
    )


def reconstruction_maps(model: LoadedModel, image: np.ndarray | LoadedImage) -> ReconstructionMaps:
    """Reconstruct one tile and map its errors, at the tile's own size.

    Args:
        model: A loaded autoencoder or U-Net.
        image: ``(H, W, 3)`` ``uint8`` RGB array, or a decoded tile.

    The network runs without gradients in eval mode, and its train/eval flags are
    restored afterwards.

    Raises:
        ValueError: ``model`` is a classifier, or ``image`` is not RGB uint8.
    """
    manifest = model.manifest
    if manifest.task != "reconstruction":
        raise ValueError(
            f"{model.name} is a {manifest.task} classifier, not a reconstruction model; use "
            "gastricvision.explain.compute_cam for its class activation maps."
        )
    array, name = _rgb_array(image)
    plan = reconstruction_plan(
        array, tile_size=manifest.tile_size, input_size=manifest.input_size,
        model_name=f"the {manifest.name} model", name=name,
    )

    module = model.module
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    images = to_float_tensor(plan.views).to(device)
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            reconstructions = torch.cat(
                [
                    reconstruct(module, images[start : start + RECONSTRUCTION_CHUNK])
                    for start in range(0, len(images), RECONSTRUCTION_CHUNK)
                ]
            )
            l1 = l1_error_map(images, reconstructions)
            ssim = ssim_error_map(images, reconstructions)
    finally:
        for submodule, training in modes:
            submodule.training = training

    size = array.shape[:2]
    reconstruction = stitch(reconstructions.cpu(), plan, size).transpose(1, 2, 0)
    score = float(view_scores(l1.cpu(), plan).mean())
    percentile = anomaly_percentile(score, manifest.anomaly_reference)
    unusual = percentile is not None and percentile >= UNUSUAL_PERCENTILE

    notes = list(plan.warnings)
    if percentile is None:
        notes.append(
            TileWarning(
                "no_anomaly_reference",
                f"The {manifest.name} model's manifest has no anomaly scores of training "
                "tiles, so this tile's score cannot be ranked against them.",
            )
        )
    elif unusual:
        notes.append(unusual_tile_warning(name, manifest.name, percentile))
    return ReconstructionMaps(
        reconstruction=np.clip(np.round(reconstruction * 255), 0, 255).astype(np.uint8),
        l1_map=np.clip(stitch(l1.cpu(), plan, size), 0, 1).astype(np.float32),
        ssim_map=np.clip(stitch(ssim.cpu(), plan, size), 0, 1).astype(np.float32),
        score=score,
        percentile=percentile,
        unusual=unusual,
        model=manifest.name,
        warnings=notes,
    )


def error_overlay(
    image: np.ndarray,
    error_map: np.ndarray,
    *,
    vmax: float | None = None,
    colormap: str = "inferno",
    opacity: float = 0.6,
) -> np.ndarray:
    """Colour an error map over its tile, as ``(H, W, 3)`` ``uint8`` RGB.

    Args:
        image: The tile, ``(H, W, 3)`` ``uint8`` RGB.
        error_map: ``(H, W)`` error in [0, 1] intensity units.
        vmax: Error shown at the top of the colormap. None uses the map's own maximum,
            which shows where the errors are but not how large they are. To compare
            tiles with each other, pass one value for all (a training percentile, say).
        colormap: One of :data:`gastricvision.explain.COLORMAPS`.
        opacity: Weight of the colour, from 0 to 1.
    """
    from .explain import overlay

    error_map = np.asarray(error_map, dtype=np.float32)
    top = float(error_map.max()) if vmax is None else float(vmax)
    scaled = error_map / top if top > 0 else np.zeros_like(error_map)
    return overlay(image, scaled, colormap=colormap, opacity=opacity)


def _rgb_array(image: np.ndarray | LoadedImage) -> tuple[np.ndarray, str]:
    if isinstance(image, LoadedImage):
        return image.array, image.name
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"Expected an (H, W, 3) uint8 RGB array, got shape {array.shape} and dtype "
            f"{array.dtype}; decode files with gastricvision.imaging.load_image."
        )
    return array, "the tile"
