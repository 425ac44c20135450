"""Gallery and error analysis: a dataset's tiles as the classifier sees them.

The sidebar's dataset is scored once per set of weights (cached on disk by
:class:`gastricvision.analysis.ScoreCache`). The page shows a confusion matrix whose
cells filter the grid, a 2-D map of the classifier's penultimate features, the tile
grid with filters and sorting, and for one selected tile its map and its nearest
neighbours in feature space.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from gastricvision import analysis, explain
from gastricvision.errors import GastricVisionError
from gastricvision.modelcards import training_folder_overlap
from ui import charts, compute
from ui.boundary import guard
from ui.datasource import DatasetChoice, require_dataset
from ui.images import enlarge, load_record, thumbnail
from ui.resources import MODEL_LOCK, ModelSet, models

GRID_COLUMNS = 6
PAGE_SIZE = 24
DEFAULT_TILES = 200
NO_CELL = "all cells"
SCORES_KEY = "gallery_scores"


@st.cache_resource
def score_cache() -> analysis.ScoreCache | None:
    """Open the on-disk score cache; return None when its folder is not writable."""
    try:
        return analysis.ScoreCache()
    except GastricVisionError as exc:
        st.warning(f"{exc} Scores are computed without the cache.")
        return None


def settings(choice: DatasetChoice, model_set: ModelSet) -> tuple[str, int, int] | None:
    classifiers = model_set.classifiers()
    if not classifiers:
        st.info("No classifier is available; see the Models page for why.")
        return None
    total = len(choice.dataset.records)
    columns = st.columns([2, 2, 1])
    name = columns[0].selectbox("Classifier", classifiers, key="gallery_model")
    count = columns[1].number_input(
        f"Tiles to analyse (of {total:,})",
        min_value=1,
        max_value=total,
        value=min(DEFAULT_TILES, total),
        step=50,
        key="gallery_count",
        help="Drawn with the classes as equally represented as possible. Scores are cached "
        "on disk, so a larger number later only scores the new tiles.",
    )
    seed = columns[2].number_input("Draw seed", min_value=0, value=0, step=1, key="gallery_seed")
    return name, int(count), int(seed)


def folder_scores(choice: DatasetChoice, model_set: ModelSet, name: str, count: int, seed: int) -> analysis.FolderScores:
    """Score the drawn tiles, once per dataset, model, count and seed in this session."""
    key = (choice.key, model_set.sha256(name), count, seed)
    stored = st.session_state.get(SCORES_KEY)
    if stored and stored[0] == key:
        return stored[1]

    records = analysis.balanced_sample(choice.dataset.records, count, seed=seed)
    if len(records) < count:
        # Unlabelled tiles are not drawn by class; add them after the labelled ones.
        unlabelled = [r for r in choice.dataset.records if not r.label]
        records += unlabelled[: count - len(records)]
    bar = st.progress(0.0, text=f"Scoring {len(records):,} tiles with the {name} model ...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Scored {done:,} of {total:,} tiles with the {name} model")

    scores = analysis.score_records(model_set.loaded[name], records, cache=score_cache(), progress=progress, lock=MODEL_LOCK)
    bar.empty()
    st.session_state[SCORES_KEY] = (key, scores)
    st.session_state.pop("gallery_selected", None)
    return scores


def summary(scores: analysis.FolderScores) -> None:
    described = analysis.describe_scores(scores)
    columns = st.columns(4)
    columns[0].metric("Tiles scored", f"{described['tiles']:,}")
    accuracy = described["accuracy"]
    columns[1].metric("Accuracy (labelled tiles)", "n/a" if accuracy is None else f"{accuracy:.1%}")
    columns[2].metric("From the cache", f"{described['from_cache']:,}")
    columns[3].metric("Unreadable files", f"{described['unreadable']:,}")
    if described["labelled_for_model"] == 0 and len(scores):
        st.info(
            f"None of these tiles has a label among the {scores.model} model's classes "
            f"({', '.join(scores.classes)}), so nothing is marked correct or wrong. Choose a "
            "class map in the sidebar or another classifier."
        )
    if scores.errors:
        with st.expander(f"{len(scores.errors)} files could not be read"):
            for path, message in scores.errors[:200]:
                st.text(f"{path}: {message}")


# --------------------------------------------------------------------------- filters


def _apply_cell(true_class: str, predicted: str) -> None:
    st.session_state["gallery_true"] = [true_class]
    st.session_state["gallery_predicted"] = [predicted]
    st.session_state["gallery_correctness"] = "all"
    st.session_state["gallery_confidence"] = (0.0, 1.0)
    st.session_state["gallery_page"] = 1


def _cell_chosen() -> None:
    value = st.session_state.get("gallery_cell")
    if value and value != NO_CELL:
        true_class, predicted = value.split(" → ")[0], value.split(" → ")[1].rsplit(" (", 1)[0]
        _apply_cell(true_class, predicted)
    else:
        st.session_state["gallery_true"] = []
        st.session_state["gallery_predicted"] = []


def confusion_panel(scores: analysis.FolderScores) -> None:
    matrix = scores.confusion_matrix()
    figure = charts.confusion_matrix(matrix, scores.classes, f"Confusion matrix, {scores.model} model (click a cell)")
    event = st.plotly_chart(
        figure, width="stretch", on_select="rerun", selection_mode="points", key="gallery_cm",
        config={"displayModeBar": False},
    )
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if points and points[0].get("customdata"):
        true_class, predicted = points[0]["customdata"][:2]
        if st.session_state.get("gallery_cm_applied") != (true_class, predicted):
            st.session_state["gallery_cm_applied"] = (true_class, predicted)
            _apply_cell(true_class, predicted)
    options = [NO_CELL] + [
        f"{t} → {p} ({matrix[i, j]})"
        for i, t in enumerate(scores.classes)
        for j, p in enumerate(scores.classes)
        if matrix[i, j]
    ]
    st.selectbox("Or open a cell", options, key="gallery_cell", on_change=_cell_chosen)


def embedding_panel(scores: analysis.FolderScores) -> None:
    method = st.radio("Projection", ["pca", "tsne"], horizontal=True, key="gallery_projection", format_func=lambda m: "PCA" if m == "pca" else "t-SNE")
    key = (st.session_state[SCORES_KEY][0], method)
    stored = st.session_state.get("gallery_projection_result")
    if stored and stored[0] == key:
        projection = stored[1]
    else:
        with st.spinner("Projecting the features ..."):
            projection = analysis.project_features(scores.features, method=method)
        st.session_state["gallery_projection_result"] = (key, projection)

    known, correct = scores.known, scores.correct
    symbols = []
    for is_known, is_correct in zip(known, correct):
        if not is_known:
            symbols.append("label unknown")
        else:
            symbols.append("correct" if is_correct else "wrong")
    colours = [record.label or "unlabelled" for record in scores.records]
    hover = [
        f"{r.relative_path}<br>true {r.label or '?'}, predicted {scores.classes[p]} ({c:.2f})"
        for r, p, c in zip(scores.records, scores.predicted, scores.confidence)
    ]
    if projection.method == "pca" and projection.explained_variance:
        axes = (f"PC 1 ({projection.explained_variance[0]:.0%} of variance)", f"PC 2 ({projection.explained_variance[1]:.0%})")
    else:
        axes = ("t-SNE 1", "t-SNE 2")
    figure = charts.embedding(
        projection.coordinates, colours, symbols, hover, list(range(len(scores))),
        f"Penultimate features of the {scores.model} model (click a tile)", axes,
    )
    event = st.plotly_chart(figure, width="stretch", on_select="rerun", selection_mode="points", key="gallery_embedding")
    if projection.note:
        st.caption(projection.note)
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if points and points[0].get("customdata") is not None:
        index = int(np.ravel(points[0]["customdata"])[0])
        if st.session_state.get("gallery_embedding_applied") != index:
            st.session_state["gallery_embedding_applied"] = index
            st.session_state["gallery_selected"] = index


def filters(scores: analysis.FolderScores) -> np.ndarray:
    labels = sorted({r.label for r in scores.records if r.label})
    columns = st.columns([2, 2, 2, 2, 2])
    true_classes = columns[0].multiselect("True class", labels, key="gallery_true", placeholder="all")
    predicted = columns[1].multiselect("Predicted class", list(scores.classes), key="gallery_predicted", placeholder="all")
    correctness = columns[2].radio("Prediction", analysis.CORRECTNESS, horizontal=True, key="gallery_correctness")
    st.session_state.setdefault("gallery_confidence", (0.0, 1.0))
    confidence = columns[3].slider("Confidence", 0.0, 1.0, step=0.01, key="gallery_confidence")
    order = columns[4].selectbox("Sort by", analysis.SORT_ORDERS, key="gallery_order")
    return scores.select(
        true_classes=true_classes or None,
        predicted_classes=predicted or None,
        correctness=correctness,
        confidence=confidence,
        order=order,
    )


# --------------------------------------------------------------------------- grid and detail


def _select(index: int) -> None:
    st.session_state["gallery_selected"] = index


def grid(scores: analysis.FolderScores, indices: np.ndarray) -> None:
    pages = max(1, -(-len(indices) // PAGE_SIZE))
    header = st.columns([3, 1, 2])
    header[0].markdown(f"**{len(indices):,} tiles** match the filters.")
    header[0].caption("Under each tile: ✓ correct or ✗ wrong, true class → predicted class, and the probability of the predicted class.")
    if int(st.session_state.get("gallery_page", 1)) > pages:
        st.session_state["gallery_page"] = 1
    page = header[1].number_input(f"Page (of {pages})", 1, pages, key="gallery_page")
    header[2].download_button(
        "Matching tiles (CSV)", data=analysis.scores_csv(scores, indices), file_name=f"gallery-{scores.model}.csv",
        mime="text/csv", on_click="ignore",
    )
    shown = indices[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    for start in range(0, len(shown), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS)
        for column, index in zip(columns, shown[start : start + GRID_COLUMNS]):
            index = int(index)
            record = scores.records[index]
            predicted = scores.classes[int(scores.predicted[index])]
            with column:
                image = thumbnail(record)
                if image is not None:
                    st.image(image, width="stretch")
                mark = ""
                if scores.known[index]:
                    mark = ":green[**✓**] " if scores.correct[index] else ":red[**✗**] "
                st.markdown(f"{mark}{record.label or '?'} → **{predicted}** {scores.confidence[index]:.2f}")
                st.button(
                    "Inspect", key=f"gallery_inspect_{index}", on_click=_select, args=(index,), width="stretch",
                    help=record.relative_path,
                )


def detail(scores: analysis.FolderScores, model_set: ModelSet) -> None:
    index = st.session_state.get("gallery_selected")
    if index is None or not 0 <= int(index) < len(scores):
        st.caption("Press Inspect under a tile, or click a point of the map, to see its map and nearest neighbours.")
        return
    index = int(index)
    record = scores.records[index]
    row = scores.row(index)
    st.subheader(f"Selected tile: {record.relative_path}")
    columns = st.columns([1, 1, 2], gap="large")
    image = load_record(record)
    with columns[0]:
        st.image(enlarge(image.array, 320), caption=f"{image.width}x{image.height} px", width="stretch")
        st.markdown(
            f"True class **{row['true_class'] or '?'}**, predicted **{row['predicted_class']}** "
            f"with probability {row['confidence']:.3f}"
            + ("" if row["loss"] is None else f"; loss {row['loss']:.3f}")
        )
    with columns[1], guard("map of the selected tile"):
        cam = compute.cam(model_set.sha256(scores.model), image.sha256, "gradcam", None, model_set, scores.model, image)
        st.image(
            enlarge(explain.overlay(image.array, cam.map, opacity=0.5), 320),
            caption=f"Grad-CAM for {cam.target_class} (p = {cam.target_probability:.3f})",
            width="stretch",
        )
    with columns[2]:
        st.markdown("**Nearest neighbours** (cosine similarity of the penultimate features)")
        neighbours = analysis.nearest_neighbours(scores.features, index, k=6)
        cells = st.columns(3)
        for position, neighbour in enumerate(neighbours):
            other = scores.records[neighbour.index]
            with cells[position % 3]:
                picture = thumbnail(other)
                if picture is not None:
                    st.image(picture, width="stretch")
                st.caption(
                    f"{other.label or '?'} → {scores.classes[int(scores.predicted[neighbour.index])]}, "
                    f"similarity {neighbour.similarity:.2f}"
                )
                st.button("Inspect", key=f"gallery_neighbour_{neighbour.index}", on_click=_select, args=(neighbour.index,), width="stretch")


def main() -> None:
    st.title("Gallery and error analysis")
    choice = require_dataset("analyse its tiles")
    if choice is None:
        return
    model_set = models()
    chosen = settings(choice, model_set)
    if chosen is None:
        return
    scores = folder_scores(choice, model_set, *chosen)
    overlap = training_folder_overlap(model_set.loaded[scores.model].manifest, choice.dataset.root)
    if overlap:
        st.warning(
            f"This folder shares tiles with the {scores.model} model's training data "
            f"(`{overlap}`), so some tiles here were used to train or calibrate it and the "
            "accuracy shown is optimistic. The Models page shows the held-out test metrics."
        )
    summary(scores)
    if not len(scores):
        return

    columns = st.columns(2, gap="large")
    with columns[0], guard("confusion matrix"):
        confusion_panel(scores)
    with columns[1], guard("feature map"):
        embedding_panel(scores)
    st.divider()
    indices = filters(scores)
    grid(scores, indices)
    st.divider()
    detail(scores, model_set)


main()
