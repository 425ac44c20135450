"""Batch scoring: a dataset folder, uploaded tiles or uploaded zip/RAR archives of tiles.

Every tile goes through the Predictor (all loaded models). Archives are extracted with
:func:`gastricvision.archives.extract_archive` into a temporary folder that is removed
as soon as the tiles are scored; hostile members are skipped and listed. The results
stay in the session as a table, charts and a CSV download.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import streamlit as st

from gastricvision.archives import extract_archive
from gastricvision.errors import ArchiveError
from gastricvision.imaging import IMAGE_SUFFIXES
from gastricvision.review import UNCERTAIN, UncertainBand, result_row, rows_csv
from ui import charts
from ui.datasource import current_band, require_dataset
from ui.resources import MODEL_LOCK, ModelSet, models

logger = logging.getLogger("gastricvision.app")

SOURCES = ("Dataset folder", "Upload tiles or archives")
RESULTS_KEY = "batch_outcome"
ARCHIVE_SUFFIXES = (".zip", ".rar")
ARCHIVE_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"Rar!\x1a\x07")
CHUNK_TILES = 32
SHOWN_PROBLEMS = 20


@dataclass
class BatchOutcome:
    """Result of one batch run.

    Attributes:
        source: What was scored, in words.
        rows: One :func:`~gastricvision.review.result_row` per tile, rejected ones included.
        problems: One message per file or archive that gave no tiles.
        skipped: One message per archive member that was not extracted.
        band: The uncertain band the calls were made with.
    """

    source: str
    rows: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    band: UncertainBand = field(default_factory=UncertainBand)


def score(model_set: ModelSet, sources: list, names: list[str], true_classes: list[str | None], outcome: BatchOutcome) -> None:
    """Score tiles in chunks with a progress bar, releasing the model lock between chunks."""
    bar = st.progress(0.0, text=f"Scoring {len(sources):,} tiles ...")
    for start in range(0, len(sources), CHUNK_TILES):
        stop = start + CHUNK_TILES
        with MODEL_LOCK:
            results = list(model_set.predictor.predict_many(sources[start:stop], names=names[start:stop]))
        for result, true_class in zip(results, true_classes[start:stop]):
            outcome.rows.append(result_row(result, outcome.band, true_class=true_class))
        done = min(stop, len(sources))
        bar.progress(done / len(sources), text=f"Scored {done:,} of {len(sources):,} tiles")
    bar.empty()


def is_archive(name: str, data: bytes) -> bool:
    return PurePath(name).suffix.lower() in ARCHIVE_SUFFIXES or data.startswith(ARCHIVE_MAGICS)


def extract_upload(name: str, data: bytes, folder: Path, outcome: BatchOutcome) -> tuple[list[Path], list[str]]:
    """Extract one uploaded archive below ``folder``; return its image files and names."""
    try:
        report = extract_archive(data, folder, name=name)
    except ArchiveError as exc:
        outcome.problems.append(str(exc))
        return [], []
    for member in report.skipped:
        outcome.skipped.append(f"{name}: {member.name}: {member.reason}")
    for nested in report.nested_archives:
        outcome.skipped.append(
            f"{name}: {nested.relative_to(folder)}: an archive inside the archive is not opened; "
            "upload it on its own."
        )
    images, names = [], []
    for path in report.files:
        relative = path.relative_to(folder).as_posix()
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
            names.append(f"{name}/{relative}")
        elif path not in report.nested_archives and not path.name.startswith("."):
            outcome.skipped.append(f"{name}: {relative}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    if not images:
        outcome.problems.append(f"{name}: the archive holds no image files; put the tiles themselves in the zip.")
    return images, names


def score_uploads(model_set: ModelSet, files, band: UncertainBand) -> BatchOutcome:
    outcome = BatchOutcome(source=f"{len(files)} uploaded file{'s' if len(files) != 1 else ''}", band=band)
    # Archives are extracted here; the context manager removes the folder when scoring
    # ends, also when it raises.
    with tempfile.TemporaryDirectory(prefix="gastricvision-upload-") as temporary:
        sources: list = []
        names: list[str] = []
        for index, file in enumerate(files):
            data = file.getvalue()
            if is_archive(file.name, data):
                images, image_names = extract_upload(file.name, data, Path(temporary) / f"archive-{index}", outcome)
                sources += images
                names += image_names
            else:
                sources.append(data)
                names.append(file.name)
        if sources:
            score(model_set, sources, names, [None] * len(sources), outcome)
    return outcome


def score_dataset(model_set: ModelSet, records, label: str, band: UncertainBand) -> BatchOutcome:
    outcome = BatchOutcome(source=f"{len(records):,} tiles of {label}", band=band)
    score(
        model_set,
        [record.path for record in records],
        [record.relative_path for record in records],
        [record.label for record in records],
        outcome,
    )
    return outcome


# --------------------------------------------------------------------------- results


def show_problems(outcome: BatchOutcome) -> None:
    rejected = [row for row in outcome.rows if row["error"]]
    messages = outcome.problems + [row["error"] for row in rejected]
    for message in messages[:SHOWN_PROBLEMS]:
        st.error(message)
    if len(messages) > SHOWN_PROBLEMS:
        with st.expander(f"{len(messages) - SHOWN_PROBLEMS} more files could not be scored"):
            for message in messages[SHOWN_PROBLEMS:]:
                st.text(message)
    if outcome.skipped:
        count = len(outcome.skipped)
        members = "1 archive member was" if count == 1 else f"{count} archive members were"
        st.warning(f"{members} not scored; the other files were.")
        with st.expander("Members not scored, with the reason"):
            for message in outcome.skipped:
                st.text(message)


def show_results(outcome: BatchOutcome) -> None:
    rows = outcome.rows
    scored = [row for row in rows if not row["error"]]
    st.subheader(f"Results: {outcome.source}")
    columns = st.columns(4)
    columns[0].metric("Tiles scored", f"{len(scored):,}")
    columns[1].metric("Files rejected", f"{len(rows) - len(scored) + len(outcome.problems):,}")
    calls = Counter(row["binary_call"] for row in scored if row["binary_call"])
    columns[2].metric("Abnormal calls", f"{calls.get('Abnormal', 0):,}")
    columns[3].metric("Uncertain", f"{calls.get(UNCERTAIN, 0):,}")
    show_problems(outcome)
    if not scored:
        return

    st.dataframe(rows, hide_index=True, width="stretch", height=min(420, 38 + 35 * len(rows)))
    st.download_button(
        "Results (CSV)", data=rows_csv(rows), file_name="gastricvision-batch.csv", mime="text/csv", on_click="ignore",
        type="primary",
    )

    charts_row = st.columns(3)
    p_abnormal = [row["binary_p_abnormal"] for row in scored if row["binary_p_abnormal"] is not None]
    if p_abnormal:
        band = outcome.band
        charts_row[0].plotly_chart(
            charts.histogram(p_abnormal, "P(Abnormal), binary model", "probability of Abnormal", (band.low, band.high)),
            width="stretch", key="batch_histogram",
        )
        order = ["Normal", UNCERTAIN, "Abnormal"]
        charts_row[1].plotly_chart(
            charts.counts_bar({name: calls.get(name, 0) for name in order}, f"Calls (uncertain {band.low:.2f} to {band.high:.2f})"),
            width="stretch", key="batch_calls",
        )
    tissue = Counter(row["tissue_class"] for row in scored if row["tissue_class"])
    if tissue:
        charts_row[2].plotly_chart(
            charts.counts_bar(dict(sorted(tissue.items())), "Most probable tissue type"), width="stretch", key="batch_tissue",
        )


def main() -> None:
    st.title("Batch scoring")
    model_set = models()
    band = current_band()
    source = st.radio("Tiles from", SOURCES, horizontal=True, key="batch_source")

    if source == SOURCES[0]:
        choice = require_dataset("score its tiles")
        if choice is not None:
            records = choice.dataset.records
            count = st.number_input(
                f"Tiles to score (of {len(records):,}, in path order)", 1, len(records), len(records), key="batch_count"
            )
            if st.button("Score the tiles", type="primary", key="batch_run_dataset"):
                st.session_state[RESULTS_KEY] = score_dataset(model_set, records[: int(count)], choice.label, band)
    else:
        files = st.file_uploader(
            "Tiles, or zip or RAR archives of tiles (several at once)",
            accept_multiple_files=True,
            key="batch_uploads",
            help="Archives are extracted into a temporary folder that is removed after scoring. "
            "Links, absolute paths and '..' members are skipped.",
        )
        if st.button("Score the uploads", type="primary", disabled=not files, key="batch_run_uploads"):
            st.session_state[RESULTS_KEY] = score_uploads(model_set, files, band)

    outcome: BatchOutcome | None = st.session_state.get(RESULTS_KEY)
    if outcome is not None:
        show_results(outcome)


main()
