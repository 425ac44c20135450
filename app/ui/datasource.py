"""The sidebar: the dataset folder, the uncertain band, and where the weights come from.

The sidebar is drawn by ``Home.py`` on every run, before the page, and leaves its
choices in ``st.session_state`` for the pages: :func:`current_dataset` and
:func:`current_band`. Dataset folders are confined to the configured roots
(:mod:`gastricvision.browsing`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from gastricvision.browsing import DATA_ROOTS_ENV, configured_roots, paths_outside, resolve_inside, subfolders
from gastricvision.datasets import CLASS_MAPS, Dataset, open_dataset
from gastricvision.errors import DatasetError, GastricVisionError
from gastricvision.review import UncertainBand

from .resources import models

logger = logging.getLogger("gastricvision.app")

DATASET_KEY = "gv_dataset"
DATASET_ERROR_KEY = "gv_dataset_error"
BAND_KEY = "gv_band"
SIZE_OPTIONS = ("auto", 160, 120, 80)
CLASS_MAP_OPTIONS = ("none", *CLASS_MAPS)


@dataclass(frozen=True)
class DatasetChoice:
    """The dataset the sidebar opened.

    Attributes:
        dataset: Its tiles and layout.
        root: The allowed root it lies in.
        relative: Its path below that root, as typed.
    """

    dataset: Dataset
    root: Path
    relative: str

    @property
    def label(self) -> str:
        return self.relative or self.root.name

    @property
    def key(self) -> str:
        """Identifies the dataset and its options, for caches and session state."""
        return f"{self.dataset.root}|{self.dataset.tile_size}|{sorted(self.dataset.counts().items())}"


@st.cache_data(ttl=600, max_entries=16, show_spinner="Reading the dataset folder ...")
def _open(folder: str, size: int | None, class_map: str | None) -> Dataset:
    return _confined(open_dataset(folder, size=size, class_map=class_map))


def _confined(dataset: Dataset) -> Dataset:
    """Drop the tiles that a symbolic link on their path takes outside the dataset folder.

    open_dataset skips class folders and files that are themselves links leading out.
    It keeps files below a linked folder further up, such as a GasHisSDB ``160`` folder
    that links elsewhere, and a browser user must not reach those.
    """
    outside = set(paths_outside((record.path for record in dataset.records), dataset.root))
    if not outside:
        return dataset
    logger.warning("%s: skipped %d files that symbolic links place outside the folder", dataset.root, len(outside))
    records = [record for record in dataset.records if record.path not in outside]
    if not records:
        raise DatasetError(
            f"{dataset.root}: every image is behind a symbolic link that leads outside the folder; "
            "copy the tiles into it instead of linking them."
        )
    skipped = [*dataset.skipped_links, *(str(path) for path in sorted(outside))]
    return dataclasses.replace(dataset, records=records, skipped_links=skipped)


def _dataset_summary(dataset: Dataset) -> str:
    size = f", {dataset.tile_size} px" if dataset.tile_size else ""
    counts = ", ".join(f"{name} {count:,}" for name, count in dataset.counts().items())
    return f"{dataset.layout} layout{size}: {len(dataset.records):,} tiles ({counts})"


def _dataset_section() -> None:
    st.session_state[DATASET_KEY] = None
    st.session_state[DATASET_ERROR_KEY] = None
    st.header("Dataset folder")
    roots = configured_roots()
    if not roots:
        st.info(
            f"No dataset folders are configured. Set {DATA_ROOTS_ENV} to the folders the app "
            "may browse (separated by ':') and restart it; without it, ~/data is used when "
            "it exists. Uploads work without a dataset folder."
        )
        return

    if len(roots) == 1:
        root = roots[0]
        st.caption(f"Allowed folder: `{root}`")
    else:
        root = st.selectbox("Allowed folder", roots, format_func=str, key="gv_root")

    relative = st.text_input(
        "Dataset folder inside it",
        key="gv_relative",
        placeholder="e.g. GasHisSDB or gchtid/HMU-GC-HE-30K",
        help="A relative path below the allowed folder. GasHisSDB, GCHTID and any folder "
        "with one sub-folder of images per class are recognised.",
    )
    size = st.selectbox(
        "GasHisSDB tile size (px)",
        SIZE_OPTIONS,
        key="gv_size",
        help="The GasHisSDB sub-database to read when the folder contains several.",
    )
    class_map = st.selectbox(
        "Class names",
        CLASS_MAP_OPTIONS,
        key="gv_class_map",
        format_func=lambda name: "as the folders name them" if name == "none" else f"map with {name}",
        help="nct-crc-he maps NCT-CRC-HE folders onto the GCHTID classes; gi-binary maps "
        "colon tiles onto Normal and Abnormal.",
    )

    try:
        folder = resolve_inside(root, relative)
    except GastricVisionError as exc:
        st.session_state[DATASET_ERROR_KEY] = str(exc)
        st.error(str(exc))
        _show_subfolders(root, root)
        return

    if not relative.strip():
        _show_subfolders(root, root)
        return

    try:
        dataset = _open(str(folder), None if size == "auto" else int(size), None if class_map == "none" else class_map)
    except GastricVisionError as exc:
        message = str(exc).replace("choose one (--size on the command line)", "choose one in 'GasHisSDB tile size'")
        st.session_state[DATASET_ERROR_KEY] = message
        st.error(message)
        _show_subfolders(folder, root)
        return

    st.session_state[DATASET_KEY] = DatasetChoice(dataset, root, relative.strip())
    st.success(_dataset_summary(dataset))
    if dataset.skipped_links:
        st.caption(
            f"{len(dataset.skipped_links)} files or folders behind symbolic links that point "
            "outside the folder were skipped."
        )


def _show_subfolders(folder: Path, root: Path) -> None:
    names = subfolders(folder, root)
    if names:
        shown = ", ".join(f"`{name}`" for name in names[:20])
        more = f" and {len(names) - 20} more" if len(names) > 20 else ""
        st.caption(f"Folders here: {shown}{more}")


def _band_section() -> None:
    st.header("Cancer call")
    low, high = st.slider(
        "Uncertain band for P(Abnormal)",
        min_value=0.0,
        max_value=1.0,
        value=(0.35, 0.65),
        step=0.01,
        key="gv_band_slider",
        help="A calibrated probability of Abnormal inside this band is reported as "
        "Uncertain instead of Normal or Abnormal.",
    )
    st.session_state[BAND_KEY] = UncertainBand(float(low), float(high))


def _models_section() -> None:
    model_set = models()
    st.header("Models")
    st.caption(
        f"{len(model_set.loaded)} of {len(model_set.loaded) + len(model_set.unavailable)} "
        f"models loaded from `{model_set.weights_dir}`"
        + (" (set by GASTRICVISION_WEIGHTS)." if os.environ.get("GASTRICVISION_WEIGHTS") else ".")
    )


def render_sidebar() -> None:
    """Draw the sidebar and store its choices for the page."""
    with st.sidebar:
        _dataset_section()
        _band_section()
        _models_section()


def current_dataset() -> DatasetChoice | None:
    """Return the dataset opened in the sidebar on this run, or None."""
    return st.session_state.get(DATASET_KEY)


def current_band() -> UncertainBand:
    return st.session_state.get(BAND_KEY) or UncertainBand()


def require_dataset(purpose: str) -> DatasetChoice | None:
    """Return the sidebar's dataset, or explain in the page how to choose one."""
    choice = current_dataset()
    if choice is None:
        error = st.session_state.get(DATASET_ERROR_KEY)
        if error:
            st.warning(f"The dataset folder in the sidebar could not be opened: {error}")
        else:
            st.info(f"Choose a dataset folder in the sidebar to {purpose}.")
    return choice
