"""Builders used by several test modules."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gastricvision.models import MODEL_SPECS, create_model
from gastricvision.weights import Manifest, save_model


def save_random_weights(folder: Path, names=None, *, seed: int = 1234) -> dict[str, Manifest]:
    """Save randomly initialised weights for registry models through the weights API."""
    torch.manual_seed(seed)
    manifests = {}
    for name in names or MODEL_SPECS:
        spec = MODEL_SPECS[name]
        model = create_model(spec.architecture, len(spec.classes) or None)
        manifest = Manifest(
            name=name,
            task=spec.task,
            architecture=spec.architecture,
            classes=list(spec.classes),
            input_size=spec.input_size,
            tile_size=spec.tile_size,
            mean=list(spec.mean),
            std=list(spec.std),
            training={"datasets": ["random initialisation (tests)"]},
        )
        manifests[name] = save_model(model, folder / name, manifest)
    return manifests


def png_bytes(array: np.ndarray, **save_options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save_options)
    return buffer.getvalue()


def encode(image: Image.Image, fmt: str, **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_options)
    return buffer.getvalue()


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
