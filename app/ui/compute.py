"""Per-tile results, cached by content so that reruns and display controls cost nothing.

Every function takes the tile's sha256 and the weights' sha256 (or the weights
signature) as cache keys. The image and the model are passed with a leading underscore,
so ``st.cache_data`` leaves them out of the key. Moving a display-only control (opacity,
colour map) therefore reuses the stored map instead of recomputing it.

NOTE: entries hold arrays at the tile's own size, so memory grows with the size of the
uploaded images. The entry limits and the one-hour lifetime bound it for tiles of a few
hundred pixels, but not for many 40-megapixel images.
"""

from __future__ import annotations

import streamlit as st

from gastricvision import explain, reconstruction
from gastricvision.imaging import LoadedImage, load_image
from gastricvision.inference import TileResult

from .resources import MODEL_LOCK, ModelSet


@st.cache_data(max_entries=32, ttl="1h", show_spinner=False)
def decode_upload(data: bytes, name: str) -> LoadedImage:
    """Decode uploaded bytes (raises ImageError with the file name and the fix)."""
    return load_image(data, name=name)


@st.cache_data(max_entries=256, ttl="1h", show_spinner=False)
def decode_file(path: str, size: int, mtime_ns: int, name: str) -> LoadedImage:
    """Decode a dataset file; ``size`` and ``mtime_ns`` make a changed file a new entry."""
    return load_image(path, name=name)


@st.cache_data(max_entries=64, ttl="1h", show_spinner="Scoring the tile ...")
def predict(weights_signature: str, sha256: str, name: str, _models: ModelSet, _image: LoadedImage) -> TileResult:
    """Every model's output for one tile, with the reconstruction maps kept: the review
    page shows them, and computing them here runs each reconstruction model once."""
    with MODEL_LOCK:
        return _models.predictor.predict_image(_image, with_maps=True)


def reconstruct(model_sha256: str, sha256: str, _models: ModelSet, name: str, _image: LoadedImage):
    """Maps of one reconstruction model, taken from the cached :func:`predict` result."""
    result = predict(_models.signature, sha256, _image.name, _models, _image)
    maps = result.maps.get(name)
    if maps is None:
        with MODEL_LOCK:
            maps = reconstruction.reconstruction_maps(_models.loaded[name], _image)
    return maps


@st.cache_data(max_entries=128, ttl="1h", show_spinner="Computing the class activation map ...")
def cam(
    model_sha256: str, sha256: str, method: str, target: str | None, _models: ModelSet, name: str, _image: LoadedImage,
    _probabilities: dict[str, float] | None = None,
):
    """Class activation map; ``_probabilities`` (the model's output for this tile, when
    already known) saves a forward pass and is left out of the cache key."""
    with MODEL_LOCK:
        return explain.compute_cam(_models.loaded[name], _image, method=method, target=target, probabilities=_probabilities)


@st.cache_data(max_entries=32, ttl="1h", show_spinner="Running the randomisation check ...")
def randomisation(model_sha256: str, sha256: str, method: str, target: str | None, _models: ModelSet, name: str, _image: LoadedImage):
    with MODEL_LOCK:
        return explain.randomisation_check(_models.loaded[name], _image, method=method, target=target)
