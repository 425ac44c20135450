"""Augmentations suited to H&E tiles, on ``uint8`` RGB arrays.

Tissue has no preferred orientation, so the eight flips and 90-degree rotations are all
valid. Colour varies between labs and scanners mostly through the stains, so colour is
jittered in haematoxylin-eosin-DAB optical density space (Ruifrok and Johnston 2001
colour deconvolution; per-stain scale and shift as in Tellez et al. 2018), plus a small
brightness and contrast change. Nothing here resizes: crops keep the training scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AugmentConfig", "augment_tile", "hed_jitter", "random_dihedral"]

# Ruifrok and Johnston stain vectors (rows: haematoxylin, eosin, DAB) in RGB optical density,
# the same values scikit-image uses for rgb2hed.
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; zero disables it.

    Attributes:
        dihedral: Apply a random flip and 90-degree rotation.
        stain_sigma: Each stain's optical density is scaled by a factor in 1 +/- sigma and
            shifted by up to +/- sigma / 10.
        brightness: Maximum relative brightness change.
        contrast: Maximum relative contrast change.
    """

    dihedral: bool = True
    stain_sigma: float = 0.05
    brightness: float = 0.08
    contrast: float = 0.08


def random_dihedral(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply one of the eight flips and 90-degree rotations, chosen at random."""
    array = np.rot90(array, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        array = array[:, ::-1]
    return array


def hed_jitter(array: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Scale and shift each stain's optical density by random amounts of about ``sigma``."""
    rgb = array.astype(np.float64)
    optical_density = -np.log(np.clip(rgb, 1.0, 255.0) / 255.0)
    stains = optical_density.reshape(-1, 3) @ _HED_FROM_RGB
    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3)
    beta = rng.uniform(-sigma, sigma, size=3) * 0.1
    stains = stains * alpha + beta
    restored = np.exp(-(stains @ _RGB_FROM_HED)) * 255.0
    return np.clip(restored.reshape(array.shape), 0, 255).astype(np.uint8)


def augment_tile(array: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Apply the configured augmentations to one ``(H, W, 3)`` ``uint8`` tile."""
    if config.dihedral:
        array = random_dihedral(array, rng)
    if config.stain_sigma > 0:
        array = hed_jitter(array, rng, config.stain_sigma)
    if config.brightness > 0 or config.contrast > 0:
        values = array.astype(np.float32)
        mean = values.mean()
        contrast = 1 + rng.uniform(-config.contrast, config.contrast)
        brightness = 1 + rng.uniform(-config.brightness, config.brightness)
        values = ((values - mean) * contrast + mean) * brightness
        array = np.clip(values, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)
