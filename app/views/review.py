"""Review: one tile at a time, with every model's output side by side.

Tiles come from uploads or from the dataset folder chosen in the sidebar. The page
shows the tile, the Normal/Abnormal probability with its call, the tissue-type
probabilities, the reconstructions with their error maps, and class activation maps
whose display controls rerun only their own fragment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
import streamlit as st

from gastricvision import explain
from gastricvision.archives import NESTED_ARCHIVE_SUFFIXES
from gastricvision.datasets import BINARY_CLASSES, TISSUE_CLASSES
from gastricvision.errors import GastricVisionError, ImageError, TileWarning
from gastricvision.imaging import DEFAULT_LIMITS, LoadedImage
from gastricvision.inference import TileResult
from gastricvision.modelcards import is_stand_in
from gastricvision.reconstruction import ReconstructionMaps, error_overlay
from gastricvision.review import (
    ABNORMAL,
    UNCERTAIN,
    PanelImage,
    UncertainBand,
    compose_panel,
    numbers_csv,
    review_numbers,
    unique_warnings,
)
from ui import charts, compute
from ui.boundary import guard, guarded
from ui.datasource import current_band, require_dataset
from ui.images import enlarge, load_record
from ui.resources import ModelSet, models

SOURCES = ("Upload tiles", "Dataset folder")
RECONSTRUCTION_MODELS = ("autoencoder", "unet")
CAM_MODELS = ("binary", "tissue", "student")
PREDICTED = "predicted class"
ENLARGED_SIDE = 448
# Largest side shown at its own size next to an enlarged copy (the column is about 400 px).
OWN_SIZE_MAX = 320
CAM_SIDE = 384

WARNING_TITLES = {
    "scale_mismatch": "Different scale from training",
    "tiled": "Scored as several crops",
    "unusual_tile": "Unusual tile",
    "mostly_background": "Mostly background",
    "greyscale": "Almost no colour",
    "transparency": "Transparent pixels",
    "multi_frame": "Several frames",
    "rescaled_values": "Pixel values rescaled",
    "empty_map": "Empty map",
    "no_anomaly_reference": "No reference scores",
    "constant_map": "Constant map",
}

# Warnings that describe what was done rather than a problem with the tile.
INFORMATION_CODES = frozenset({"tiled", "no_anomaly_reference"})

CALL_COLOURS = {ABNORMAL: "red", "Normal": "green", UNCERTAIN: "orange"}


@dataclass
class Tile:
    """The tile under review.

    Attributes:
        image: The decoded tile.
        true_class: Its label when it comes from a labelled dataset.
    """

    image: LoadedImage
    true_class: str | None = None


# --------------------------------------------------------------------------- choosing a tile


def decode_uploads(files) -> list[LoadedImage]:
    """Decode every upload; show one error per bad file and keep the good ones."""
    decoded = []
    for file in files:
        suffix = PurePath(file.name).suffix.lower()
        if suffix in NESTED_ARCHIVE_SUFFIXES:
            st.error(
                f"{file.name}: is an archive; upload it on the Batch scoring page, or upload "
                "the tiles in it here."
            )
            continue
        if file.size > DEFAULT_LIMITS.max_bytes:
            st.error(
                f"{file.name}: file is {file.size / 2**20:.0f} MiB, above the "
                f"{DEFAULT_LIMITS.max_bytes / 2**20:.0f} MiB limit; crop or downscale it to tiles first."
            )
            continue
        try:
            decoded.append(compute.decode_upload(file.getvalue(), file.name))
        except ImageError as exc:
            st.error(str(exc))
    return decoded


def uploaded_tile() -> Tile | None:
    files = st.file_uploader(
        "Upload tiles (PNG, JPEG, TIFF, BMP, GIF or WebP; several at once)",
        accept_multiple_files=True,
        key="review_uploads",
        help="Uploads stay in memory and are not stored on the server.",
    )
    if not files:
        st.info("Upload one or more tiles, or switch to a dataset folder.")
        return None
    images = decode_uploads(files)
    if not images:
        return None
    index = 0
    if len(images) > 1:
        index = st.selectbox(
            "Tile to review",
            range(len(images)),
            format_func=lambda i: f"{images[i].name} ({images[i].width}x{images[i].height} px)",
            key="review_upload_choice",
        )
    return Tile(images[min(index, len(images) - 1)])


def _step(key: str, delta: int, count: int) -> None:
    current = int(st.session_state.get(key, 1))
    st.session_state[key] = (current - 1 + delta) % count + 1


def _random(key: str, count: int) -> None:
    st.session_state[key] = int(np.random.default_rng().integers(1, count + 1))


def dataset_tile() -> Tile | None:
    choice = require_dataset("review its tiles")
    if choice is None:
        return None
    dataset = choice.dataset
    columns = st.columns([2, 2, 1, 1, 1])
    label = columns[0].selectbox("Class", ["all classes", *dataset.classes], key="review_class")
    records = [r for r in dataset.records if label == "all classes" or r.label == label]
    count = len(records)
    key = "review_number"
    if not 1 <= int(st.session_state.get(key, 1)) <= count:
        st.session_state[key] = 1
    columns[1].number_input(f"Tile (1 to {count:,})", min_value=1, max_value=count, step=1, key=key)
    columns[2].button("Previous", on_click=_step, args=(key, -1, count), width="stretch")
    columns[3].button("Next", on_click=_step, args=(key, 1, count), width="stretch")
    columns[4].button("Random", on_click=_random, args=(key, count), width="stretch")
    record = records[int(st.session_state[key]) - 1]
    return Tile(load_record(record), record.label)


def choose_tile() -> Tile | None:
    source = st.radio("Tiles from", SOURCES, horizontal=True, key="review_source")
    if source == SOURCES[0]:
        return uploaded_tile()
    return dataset_tile()


# --------------------------------------------------------------------------- panels


def tile_panel(tile: Tile) -> None:
    image = tile.image
    st.subheader("Tile")
    if max(image.width, image.height) <= OWN_SIZE_MAX:
        st.image(image.array, caption=f"Own size: {image.width}x{image.height} px", width=image.width)
        factor = ENLARGED_SIDE / max(image.width, image.height)
        st.image(enlarge(image.array, ENLARGED_SIDE), caption=f"Enlarged {factor:.1f}x (pixels repeated)", width="stretch")
    else:
        # A large image at its own size would overflow the column and is slow to send.
        st.image(enlarge(image.array, 2 * ENLARGED_SIDE), caption=f"{image.width}x{image.height} px, reduced to fit", width="stretch")
    st.caption(f"`{image.name}` · {image.format} · sha256 {image.sha256[:12]}")
    if tile.true_class:
        st.markdown(f"True class (from the folder): **{tile.true_class}**")


def cancer_panel(result: TileResult, band: UncertainBand, tile: Tile, model_set: ModelSet) -> None:
    st.subheader("Cancer")
    shown = False
    for key in ("binary", "student"):
        output = getattr(result, key)
        if output is None:
            st.info(f"The {key} model is not available: {model_set.unavailable.get(key, 'not loaded')}")
            continue
        shown = True
        p_abnormal = float(output.probabilities.get(ABNORMAL, float("nan")))
        call = band.call(p_abnormal)
        st.metric(f"P(Abnormal), {key} model", f"{p_abnormal:.3f}")
        verdict = ""
        if tile.true_class in BINARY_CLASSES:
            verdict = " · matches the true class" if call == tile.true_class else f" · true class is {tile.true_class}"
        st.markdown(f"Call: :{CALL_COLOURS[call]}[**{call}**]{verdict}")
        st.caption(
            f"Calibrated with temperature {output.temperature:.2f}, averaged over "
            f"{output.views} crop{'s' if output.views != 1 else ''}."
        )
    if shown:
        st.caption(f"Uncertain band: {band.low:.2f} to {band.high:.2f} (set in the sidebar).")


def tissue_panel(result: TileResult, tile: Tile, model_set: ModelSet) -> None:
    st.subheader("Tissue type")
    if result.tissue is None:
        st.info(f"The tissue model is not available: {model_set.unavailable.get('tissue', 'not loaded')}")
        return
    highlight = tile.true_class if tile.true_class in TISSUE_CLASSES else None
    figure = charts.probability_bars(result.tissue.probabilities, f"Most probable: {result.tissue.label}", highlight)
    st.plotly_chart(figure, width="stretch", config={"displayModeBar": False}, key="review_tissue_chart")
    if highlight:
        st.caption(f"Orange bar: the true class {highlight}.")


def reconstruction_panel(tile: Tile, model_set: ModelSet) -> dict[str, ReconstructionMaps]:
    st.subheader("Reconstructions")
    maps: dict[str, ReconstructionMaps] = {}
    columns = st.columns(len(RECONSTRUCTION_MODELS))
    for column, name in zip(columns, RECONSTRUCTION_MODELS):
        with column, guard(f"{name} reconstruction"):
            if name not in model_set.loaded:
                st.info(f"The {name} model is not available: {model_set.unavailable.get(name, 'not loaded')}")
                continue
            result = compute.reconstruct(model_set.sha256(name), tile.image.sha256, model_set, name, tile.image)
            maps[name] = result
            st.markdown(f"**{name}**")
            images = st.columns(3)
            l1_top = float(result.l1_map.max())
            images[0].image(enlarge(result.reconstruction, 224), caption="reconstruction", width="stretch")
            images[1].image(
                enlarge(error_overlay(tile.image.array, result.l1_map, opacity=1.0), 224),
                caption=f"L1 error (scale 0 to {l1_top:.3f})",
                width="stretch",
            )
            images[2].image(
                enlarge(error_overlay(tile.image.array, result.ssim_map, opacity=1.0), 224),
                caption="SSIM error",
                width="stretch",
            )
            metrics = st.columns(2)
            metrics[0].metric(f"Anomaly score, {name}", f"{result.score:.4f}")
            percentile = "no reference" if result.percentile is None else f"{result.percentile:.0f}"
            metrics[1].metric("Percentile of training tiles", percentile)
    return maps


def show_warnings(warnings: list[TileWarning]) -> None:
    """Show one box per kind of warning, and notes that need no action as information."""
    grouped: dict[str, list[str]] = {}
    for warning in warnings:
        grouped.setdefault(warning.code, []).append(warning.message)
    for code, messages in grouped.items():
        title = WARNING_TITLES.get(code, code.replace("_", " ").capitalize())
        body = messages[0] if len(messages) == 1 else "\n".join(f"- {message}" for message in messages)
        show = st.info if code in INFORMATION_CODES else st.warning
        show(f"**{title}.** {body}" if len(messages) == 1 else f"**{title}.**\n\n{body}")


# --------------------------------------------------------------------------- maps and export


def _target_options(model_set: ModelSet, name: str) -> list[str]:
    return [PREDICTED, *model_set.loaded[name].manifest.classes]


def _method_label(key: str) -> str:
    method = explain.CAM_METHODS[key]
    return f"{method.label} (slow)" if method.slow else method.label


@st.fragment
@guarded("class activation maps")
def cam_panel(tile: Tile, result: TileResult, reconstructions: dict[str, ReconstructionMaps], band: UncertainBand) -> None:
    """Maps with their controls; a control change reruns only this fragment."""
    model_set = models()
    st.subheader("Class activation maps")
    names = [name for name in CAM_MODELS if name in model_set.loaded]
    if not names:
        st.info("No classifier is available, so there are no maps to show.")
        export_panel(tile, result, reconstructions, [], [], band)
        return

    controls = st.columns([2, 2, 2, 3])
    method = controls[0].selectbox("Method", list(explain.CAM_METHODS), format_func=_method_label, key="review_cam_method")
    colormap = controls[1].selectbox("Colour map", explain.COLORMAPS, key="review_cam_colormap")
    shown = controls[2].multiselect("Models", names, default=[n for n in names if n != "student"] or names, key="review_cam_models")
    opacity = controls[3].slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="review_cam_opacity")

    if explain.CAM_METHODS[method].slow and not st.checkbox(
        "Run Score-CAM: one forward pass per feature channel, about a minute per map on a CPU",
        key="review_cam_confirm_slow",
    ):
        export_panel(tile, result, reconstructions, [], [], band)
        return

    cams, overlays = [], []
    columns = st.columns(max(1, len(shown)))
    for column, name in zip(columns, shown):
        with column, guard(f"{name} map"):
            target = st.selectbox(f"Target class, {name} model", _target_options(model_set, name), key=f"review_cam_target_{name}")
            output = getattr(result, name, None)
            cam = compute.cam(
                model_set.sha256(name), tile.image.sha256, method, None if target == PREDICTED else target,
                model_set, name, tile.image, output.probabilities if output else None,
            )
            shaded = explain.overlay(tile.image.array, cam.map, colormap=colormap, opacity=opacity)
            st.image(
                enlarge(shaded, CAM_SIDE),
                caption=f"{name}: {explain.CAM_METHODS[method].label} for {cam.target_class} (p = {cam.target_probability:.3f})",
                width=CAM_SIDE,
            )
            cams.append(cam)
            overlays.append(PanelImage(f"{name} {explain.CAM_METHODS[method].label}", shaded, f"target {cam.target_class}\np = {cam.target_probability:.3f}"))
    show_warnings([w for w in unique_warnings(c.warnings for c in cams) if w not in result.warnings])
    export_panel(tile, result, reconstructions, cams, overlays, band)


def export_panel(tile: Tile, result: TileResult, reconstructions, cams, overlays, band: UncertainBand) -> None:
    model_set = models()
    hashes = {name: model.manifest.sha256 for name, model in model_set.loaded.items()}
    numbers = review_numbers(result, band=band, reconstructions=reconstructions, cams=cams, weights_sha256=hashes)
    if tile.true_class:
        numbers["tile"]["true_class"] = tile.true_class
    stem = PurePath(tile.image.name).stem or "tile"

    def panel_png() -> bytes:
        sections = []
        recon_images = []
        for name, maps in reconstructions.items():
            recon_images.append(PanelImage(f"{name} reconstruction", maps.reconstruction, f"score {maps.score:.4f}"))
            recon_images.append(PanelImage(f"{name} L1 error", error_overlay(tile.image.array, maps.l1_map, opacity=1.0), f"max {float(maps.l1_map.max()):.3f}"))
        if recon_images:
            sections.append(("Reconstructions", recon_images))
        if overlays:
            sections.append(("Class activation maps", overlays))
        return compose_panel(tile.image.array, numbers, sections)

    st.subheader("Export")
    columns = st.columns(3)
    columns[0].download_button("Panel (PNG)", data=panel_png, file_name=f"{stem}-review.png", mime="image/png", on_click="ignore", width="stretch")
    columns[1].download_button(
        "Numbers (JSON)", data=json.dumps(numbers, indent=2), file_name=f"{stem}-review.json",
        mime="application/json", on_click="ignore", width="stretch",
    )
    columns[2].download_button(
        "Numbers (CSV)", data=numbers_csv(numbers), file_name=f"{stem}-review.csv",
        mime="text/csv", on_click="ignore", width="stretch",
    )


# --------------------------------------------------------------------------- page


def main() -> None:
    st.title("Review")
    model_set = models()
    band = current_band()
    tile = choose_tile()
    if tile is None:
        return

    result = compute.predict(model_set.signature, tile.image.sha256, tile.image.name, model_set, tile.image)
    if not result.ok:
        raise GastricVisionError(result.error or f"{tile.image.name} could not be scored.")

    stand_ins = [name for name, model in model_set.loaded.items() if is_stand_in(model.manifest)]
    if stand_ins:
        st.caption(
            f"**Stand-in weights:** {', '.join(stand_ins)} were trained on stand-in data, not GasHisSDB "
            "or GCHTID, so their outputs say little about gastric tissue (see the Models page)."
        )

    columns = st.columns([1.1, 1, 1.2], gap="large")
    with columns[0]:
        tile_panel(tile)
    with columns[1], guard("cancer prediction"):
        cancer_panel(result, band, tile, model_set)
    with columns[2], guard("tissue prediction"):
        tissue_panel(result, tile, model_set)

    reconstructions = reconstruction_panel(tile, model_set)
    warnings = unique_warnings([result.warnings, *(m.warnings for m in reconstructions.values())])
    if warnings:
        st.subheader("Warnings and notes")
        show_warnings(warnings)
    st.divider()
    cam_panel(tile, result, reconstructions, band)


main()
