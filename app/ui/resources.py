"""Models loaded once per app process, and the lock that serialises their use.

Every session of the app shares one set of networks (``st.cache_resource``). Streamlit
runs sessions in threads, and a class activation map registers hooks on a network, so
a forward pass of another session at the same time would be recorded by those hooks;
:data:`MODEL_LOCK` is held around every use of a network to prevent that.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from gastricvision.inference import Predictor
from gastricvision.models import MODEL_SPECS
from gastricvision.weights import LoadedModel, default_weights_dir, load_all


def _find_malloc_trim():
    """Return glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_MALLOC_TRIM = _find_malloc_trim()


def release_free_memory() -> None:
    """Return the C heap's free memory to the operating system, where glibc allows it."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class ModelLock:
    """Reentrant lock held around every use of a network.

    A class activation map of a 768 px tile allocates close to 1 GiB for a few seconds.
    glibc keeps such freed buffers in the arena of the thread that used them, and
    Streamlit runs every script run in a new thread, so the server's resident memory
    grew by gigabytes over the first reviews. The outermost release therefore calls
    :func:`release_free_memory`, after the lock is free, so that no session waits for it.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # changed only by the thread that holds the lock

    def __enter__(self) -> "ModelLock":
        self._lock.acquire()
        self._depth += 1
        return self

    def __exit__(self, *exc_info) -> None:
        self._depth -= 1
        outermost = self._depth == 0
        self._lock.release()
        if outermost:
            release_free_memory()


MODEL_LOCK = ModelLock()

CLASSIFIERS = ("binary", "student", "tissue")


@dataclass(frozen=True)
class ModelSet:
    """The networks of one weights folder.

    Attributes:
        weights_dir: Folder the weights came from.
        loaded: Loaded models by registry name.
        unavailable: Why each other registry model is not available.
        predictor: Predictor over the loaded models.
    """

    weights_dir: Path
    loaded: dict[str, LoadedModel]
    unavailable: dict[str, str]
    predictor: Predictor

    def classifiers(self) -> list[str]:
        return [name for name in CLASSIFIERS if name in self.loaded]

    def sha256(self, name: str) -> str:
        return self.loaded[name].manifest.sha256

    @property
    def signature(self) -> str:
        """Key that changes whenever any loaded weights change."""
        return ",".join(f"{name}:{model.manifest.sha256}" for name, model in sorted(self.loaded.items()))


@st.cache_resource(show_spinner="Loading the models ...")
def _load(weights_dir: str) -> ModelSet:
    loaded, unavailable = load_all(weights_dir)
    for name in MODEL_SPECS:
        if name not in loaded and name not in unavailable:
            unavailable[name] = "not loaded"
    predictor = Predictor(loaded=loaded, unavailable=unavailable)
    return ModelSet(Path(weights_dir), loaded, unavailable, predictor)


def models() -> ModelSet:
    """Return the models of ``$GASTRICVISION_WEIGHTS`` or the project's ``weights/``."""
    return _load(str(default_weights_dir()))


def reload_models() -> None:
    """Forget the loaded models, so that the next call reads the weights folder again."""
    _load.clear()
    st.cache_data.clear()
