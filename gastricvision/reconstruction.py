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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MASK_PASSES",
    "PATCH",
    "ReconstructionMaps",
    "anomaly_percentile",
    "inference_masks",
    "l1_error_map",
    "mask_input",
    "random_masks",
    "reconstruct",
    "reference_percentiles",
    "ssim_error_map",
]

logger = logging.getLogger(__name__)

PATCH = 16
MASK_PASSES = 4
MASK_FILL = 0.5


@dataclass
class ReconstructionMaps:
    """Per-tile reconstruction outputs at the tile's own size.

    Attributes:
        reconstruction: ``(H, W, 3)`` ``uint8`` RGB.
        l1_map: ``(H, W)`` mean absolute error over channels, in [0, 1].
        ssim_map: ``(H, W)`` structural dissimilarity ``(1 - SSIM) / 2``, in [0, 1].
        score: Mean of ``l1_map`` (the anomaly score).
        percentile: Percentile of ``score`` among training tiles, if known.
    """

    reconstruction: np.ndarray
    l1_map: np.ndarray
    ssim_map: np.ndarray
    score: float
    percentile: float | None


def inference_masks(size: int, patch: int = PATCH) -> torch.Tensor:
    """``(MASK_PASSES, 1, size, size)`` masks that hide every patch exactly once."""
    cells = -(-size // patch)
    rows = torch.arange(cells).view(-1, 1)
    cols = torch.arange(cells).view(1, -1)
    masks = []
    for row_parity in (0, 1):
        for col_parity in (0, 1):
            grid = ((rows % 2 == row_parity) & (cols % 2 == col_parity)).float()
            full = grid.repeat_interleave(patch, 0).repeat_interleave(patch, 1)[:size, :size]
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


def reconstruct(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Reconstruct ``(N, 3, H, W)`` [0, 1] images with an autoencoder or a masked U-Net."""
    in_channels = getattr(model, "in_channels", 3)
    if in_channels == 3:
        return model(images)

    size = images.shape[-1]
    masks = inference_masks(size).to(images.device, images.dtype)
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
