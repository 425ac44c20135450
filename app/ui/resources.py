"""Models loaded once per app process, and the lock that serialises their use.

Every session of the app shares one set of networks (``st.cache_resource``). Streamlit
runs sessions in threads, and a class activation map registers hooks on a network, so
a forward pass of another session at the same time would be recorded by those hooks;
:data:`MODEL_LOCK` is held around every use of a network to prevent that.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from gastricvision.inference import Predictor
from gastricvision.models import MODEL_SPECS
from gastricvision.weights import LoadedModel, default_weights_dir, load_all

MODEL_LOCK = threading.RLock()

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
