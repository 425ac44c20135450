"""Every case of the hostile-input corpus through the library, the command line and the app.

The cases and their expected outcomes are in ``tests/corpus.py``. Each front end gets
the whole corpus in as few runs as possible: one ``predict_many`` call, one
``gastricvision predict`` call, one ``gastricvision explain`` call, one upload to the
Review page and one to the Batch page. Each case then has its own parametrized test
that reads its part of that run, so a failure names the case.

Predictions use a copy of the shipped binary model, because randomly initialised
weights give almost the same probability for every tile and would hide a wrong decode.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from gastricvision.archives import extract_archive
from gastricvision.errors import ArchiveError, ImageError
from gastricvision.imaging import LoadedImage, load_image
from gastricvision.inference import Predictor, TileResult
from gastricvision.weights import load_model
from tests import corpus as corpus_module
from tests.conftest import REPO
from tests.corpus import (
    ACCEPT,
    ARCHIVE_CASES,
    FILE_CASES,
    JPEG_LOSS,
    PATH_CASES,
    PROBABILITY_TOLERANCE,
    REJECT,
    SAME_PIXELS,
    ArchiveCase,
    Corpus,
    FileCase,
    PathCase,
    message_pattern,
    write_corpus,
)

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

pytestmark = pytest.mark.timeout(900)

APP = REPO / "app" / "Home.py"
APP_RUN_TIMEOUT = 600
ARCHIVE_PAGE_MESSAGE = "is an archive; upload it on the Batch scoring page, or upload the tiles in it here."

ACCEPTED = [case for case in FILE_CASES if case.expect == ACCEPT]
FILE_IDS = [case.name for case in FILE_CASES]
PATH_IDS = [case.name for case in PATH_CASES]
ARCHIVE_IDS = [case.name for case in ARCHIVE_CASES]
EXPLAINED = [case for case in FILE_CASES if case.explain]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data) -> Corpus:
    return write_corpus(tmp_path_factory.mktemp("hostile"), shared_data)


@pytest.fixture(scope="module")
def binary_weights(tmp_path_factory) -> Path:
    """A copy of the shipped binary model, so that retraining it meanwhile changes nothing here."""
    folder = tmp_path_factory.mktemp("shipped-binary")
    shutil.copytree(REPO / "weights" / "binary", folder / "binary")
    load_model(folder / "binary")  # fails here, with the reason, if the copy is unusable
    return folder


@pytest.fixture(scope="module")
def predictor(binary_weights) -> Predictor:
    return Predictor(binary_weights, ["binary"])


def expected_pixels(case: FileCase, corpus: Corpus) -> np.ndarray:
    return corpus.files[case.name][2]


def equivalent_pixels(case: FileCase, corpus: Corpus) -> np.ndarray | None:
    if case.equivalent == SAME_PIXELS:
        return expected_pixels(case, corpus)
    if case.equivalent is None:
        return None
    return case.equivalent(corpus.sources)


@pytest.fixture(scope="module")
def equivalents(predictor, corpus) -> dict[str, TileResult]:
    """Predictions of the plain RGB tile that each accepted case encodes."""
    names, images = [], []
    for case in ACCEPTED:
        pixels = equivalent_pixels(case, corpus)
        if pixels is None:
            continue
        names.append(case.name)
        images.append(
            LoadedImage(np.ascontiguousarray(pixels), f"{case.name} as plain RGB", "PNG", "RGB", sha256=case.name)
        )
    return dict(zip(names, predictor.predict_many(images)))


def all_paths(corpus: Corpus) -> list[tuple[str, Path]]:
    """Every corpus path with its case name, in table order."""
    paths = [(case.name, corpus.files[case.name][0]) for case in FILE_CASES]
    paths += [(case.name, corpus.folder / case.filename) for case in PATH_CASES if not case.skip_reason]
    paths += [(case.name, corpus.archives[case.name][0]) for case in ARCHIVE_CASES]
    return paths


def skip_if_not_here(case: PathCase) -> None:
    if case.skip_reason:
        pytest.skip(case.skip_reason)


def assert_prediction_matches(case: FileCase, probabilities: dict[str, float], equivalent: TileResult) -> None:
    expected = equivalent.binary.probabilities
    assert set(probabilities) == set(expected)
    for name, value in expected.items():
        assert math.isclose(probabilities[name], value, abs_tol=PROBABILITY_TOLERANCE), (
            f"{case.name}: P({name}) = {probabilities[name]:.6f}, plain tile {value:.6f}"
        )


def mean_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual.astype(np.int16) - expected.astype(np.int16)).mean())


def assert_pixels_match(case: FileCase, actual: np.ndarray, expected: np.ndarray, sources) -> None:
    assert actual.shape == expected.shape, f"{case.name}: decoded {actual.shape}, expected {expected.shape}"
    assert np.array_equal(actual, expected), f"{case.name}: pixels differ by {mean_difference(actual, expected):.3f} grey levels on average"
    if case.original is not None:
        loss = mean_difference(actual, case.original(sources))
        assert loss <= JPEG_LOSS, f"{case.name}: {loss:.2f} grey levels from the encoded tile on average"


# --------------------------------------------------------------------------- library


@pytest.mark.parametrize("case", FILE_CASES, ids=FILE_IDS)
def test_library_loads_file(case, corpus):
    path, data, expected = corpus.files[case.name]
    for source, name in ((path, None), (data, case.shown_name)):
        display = name or str(path)
        if case.expect == REJECT:
            with pytest.raises(ImageError) as caught:
                load_image(source, name=name)
            assert message_pattern(display, case.message).fullmatch(str(caught.value)), str(caught.value)
        else:
            image = load_image(source, name=name)
            assert image.name == display
            assert_pixels_match(case, image.array, expected, corpus.sources)


@pytest.mark.parametrize("case", PATH_CASES, ids=PATH_IDS)
def test_library_rejects_path(case, corpus):
    skip_if_not_here(case)
    path = corpus.folder / case.filename
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert message_pattern(str(path), case.message).fullmatch(str(caught.value)), str(caught.value)


@pytest.fixture(scope="module")
def library_results(predictor, corpus) -> dict[str, TileResult]:
    """One predict_many call over the whole corpus, bad files and archives included."""
    names, paths = zip(*all_paths(corpus))
    results = list(predictor.predict_many(list(paths)))
    assert len(results) == len(paths)
    return dict(zip(names, results))


@pytest.mark.parametrize("case", FILE_CASES, ids=FILE_IDS)
def test_library_predicts_file(case, corpus, library_results, equivalents):
    result = library_results[case.name]
    path = corpus.files[case.name][0]
    if case.expect == REJECT:
        assert not result.ok
        assert message_pattern(str(path), case.message).fullmatch(result.error), result.error
        return

    assert result.ok, result.error
    assert result.name == str(path)
    codes = {warning.code for warning in result.warnings}
    assert case.warnings <= codes, f"{case.name}: warnings {sorted(codes)}"
    if case.name in equivalents:
        assert_prediction_matches(case, result.binary.probabilities, equivalents[case.name])
    else:
        assert 0.0 <= result.binary.probabilities["Abnormal"] <= 1.0


@pytest.mark.parametrize("case", PATH_CASES, ids=PATH_IDS)
def test_library_predict_reports_path(case, corpus, library_results):
    skip_if_not_here(case)
    result = library_results[case.name]
    assert message_pattern(str(corpus.folder / case.filename), case.message).fullmatch(result.error), result.error


def expected_skips(case: ArchiveCase, corpus: Corpus) -> dict[str, str]:
    return {name.replace("{outside}", str(corpus.outside)): code for name, code in case.skipped.items()}


@pytest.mark.parametrize("case", ARCHIVE_CASES, ids=ARCHIVE_IDS)
def test_library_extracts_archive(case, corpus, tmp_path):
    _, data = corpus.archives[case.name]
    dest = tmp_path / "dest"
    before = corpus.listing()

    if case.archive_error and "holds no image files" not in case.archive_error:
        with pytest.raises(ArchiveError) as caught:
            extract_archive(data, dest, name=case.filename)
        assert message_pattern(case.filename, case.archive_error).fullmatch(str(caught.value)), str(caught.value)
        assert not dest.exists() or list(dest.iterdir()) == []
    else:
        report = extract_archive(data, dest, name=case.filename)
        extracted = {path.relative_to(dest).as_posix() for path in report.files}
        assert set(case.scored) <= extracted
        assert set(case.rejected) <= extracted
        assert {member.name: member.code for member in report.skipped} == expected_skips(case, corpus)
        assert [path.relative_to(dest).as_posix() for path in report.nested_archives] == list(case.nested)
        for path in dest.rglob("*"):
            assert not path.is_symlink(), path
            assert path.resolve().is_relative_to(dest.resolve()), path

    assert corpus.listing() == before
    assert list(corpus.outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["dest"])


# --------------------------------------------------------------------------- command line


def cli_env(weights: Path) -> dict[str, str]:
    return {**os.environ, "GASTRICVISION_WEIGHTS": str(weights), "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def cli_predict(corpus, binary_weights, tmp_path_factory):
    """One ``gastricvision predict --json`` call over every corpus path, from an empty folder."""
    workdir = tmp_path_factory.mktemp("cli-predict-cwd")
    before = corpus.listing()
    paths = [str(path) for _, path in all_paths(corpus)]
    completed = subprocess.run(
        [sys.executable, "-m", "gastricvision", "predict", "--json", "--models", "binary", *paths],
        cwd=workdir, env=cli_env(binary_weights), capture_output=True, text=True, timeout=600,
    )
    outputs = {}
    for line in completed.stdout.splitlines():
        record = json.loads(line)
        outputs[record["path"]] = record
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    return completed, outputs, errors, before, workdir


def errors_for(path: Path, errors: list[str]) -> list[str]:
    prefix = f"error: {path}: "
    return [line[len("error: ") :] for line in errors if line.startswith(prefix)]


def test_cli_predict_exit_status_and_writes(cli_predict, corpus):
    completed, outputs, errors, before, workdir = cli_predict
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    assert "internal error" not in completed.stderr
    rejected = [c for c in FILE_CASES if c.expect == REJECT] + [c for c in PATH_CASES if not c.skip_reason] + ARCHIVE_CASES
    assert len(errors) == len(rejected), "\n".join(errors)
    assert len(outputs) == len(ACCEPTED)
    assert list(workdir.iterdir()) == []
    assert corpus.listing() == before


@pytest.mark.parametrize("case", FILE_CASES, ids=FILE_IDS)
def test_cli_predict_file(case, cli_predict, corpus, equivalents):
    _, outputs, errors, _, _ = cli_predict
    path = corpus.files[case.name][0]
    mine = errors_for(path, errors)
    if case.expect == REJECT:
        assert str(path) not in outputs
        assert len(mine) == 1, mine
        assert message_pattern(str(path), case.message).fullmatch(mine[0]), mine[0]
        return

    assert mine == []
    record = outputs[str(path)]
    assert case.warnings <= {warning["code"] for warning in record["warnings"]}
    if case.name in equivalents:
        assert_prediction_matches(case, record["binary"]["probabilities"], equivalents[case.name])


@pytest.mark.parametrize("case", PATH_CASES, ids=PATH_IDS)
def test_cli_predict_path(case, cli_predict, corpus):
    skip_if_not_here(case)
    _, outputs, errors, _, _ = cli_predict
    path = corpus.folder / case.filename
    mine = errors_for(path, errors)
    assert len(mine) == 1, mine
    assert message_pattern(str(path), case.cli_message or case.message).fullmatch(mine[0]), mine[0]
    assert not any(key.startswith(str(path)) for key in outputs)


@pytest.mark.parametrize("case", ARCHIVE_CASES, ids=ARCHIVE_IDS)
def test_cli_predict_archive(case, cli_predict, corpus):
    _, outputs, errors, _, _ = cli_predict
    path = corpus.archives[case.name][0]
    mine = errors_for(path, errors)
    assert len(mine) == 1, mine
    assert message_pattern(str(path), case.cli_message).fullmatch(mine[0]), mine[0]


@pytest.fixture(scope="module")
def cli_explain(corpus, binary_weights, tmp_path_factory):
    """One ``gastricvision explain`` call over the cases whose outcome or outputs it changes."""
    workdir = tmp_path_factory.mktemp("cli-explain-cwd")
    out = tmp_path_factory.mktemp("cli-explain-out")
    before = corpus.listing()
    paths = [str(corpus.files[case.name][0]) for case in EXPLAINED]
    paths += [str(corpus.folder / case.filename) for case in PATH_CASES if not case.skip_reason]
    completed = subprocess.run(
        [sys.executable, "-m", "gastricvision", "explain", "--model", "binary", "--out", str(out), *paths],
        cwd=workdir, env=cli_env(binary_weights), capture_output=True, text=True, timeout=600,
    )
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    return completed, errors, out, before, workdir


def test_cli_explain_writes_only_into_out(cli_explain, corpus):
    completed, errors, out, before, workdir = cli_explain
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    expected_errors = [c for c in EXPLAINED if c.expect == REJECT] + [c for c in PATH_CASES if not c.skip_reason]
    assert len(errors) == len(expected_errors), "\n".join(errors)
    assert list(workdir.iterdir()) == []
    assert corpus.listing() == before
    for path in out.rglob("*"):
        assert path.parent == out, path
        assert path.is_file(), path
        assert not path.is_symlink(), path


@pytest.mark.parametrize("case", EXPLAINED, ids=[case.name for case in EXPLAINED])
def test_cli_explain_file(case, cli_explain, corpus):
    _, errors, out, _, _ = cli_explain
    path = corpus.files[case.name][0]
    mine = errors_for(path, errors)
    if case.expect == REJECT:
        assert len(mine) == 1, mine
        assert message_pattern(str(path), case.message).fullmatch(mine[0]), mine[0]
        return

    assert mine == []
    stem = Path(case.filename).stem
    written = sorted(p.name for p in out.iterdir() if p.name.startswith(f"{stem}.binary."))
    assert written == [f"{stem}.binary.gradcam.{kind}" for kind in ("map.npy", "mask.png", "overlay.png")]
    cam = np.load(out / f"{stem}.binary.gradcam.map.npy")
    assert cam.shape == expected_pixels(case, corpus).shape[:2]


# --------------------------------------------------------------------------- app


@pytest.fixture(scope="module")
def app_settings(binary_weights, shared_data, tmp_path_factory):
    """Environment of the app runs: the shipped binary model only, the real tiles as data root."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GASTRICVISION_WEIGHTS", str(binary_weights))
        patch.setenv("GASTRICVISION_DATA_ROOTS", str(shared_data))
        patch.setenv("GASTRICVISION_CACHE", str(tmp_path_factory.mktemp("score-cache")))
        temporary = tmp_path_factory.mktemp("app-tmp")
        patch.setattr(tempfile, "tempdir", str(temporary))
        yield temporary


def uploads(corpus: Corpus) -> list[tuple[str, bytes, str]]:
    """Every file and archive case as the browser would send it."""
    files = [(case.shown_name, corpus.files[case.name][1], "application/octet-stream") for case in FILE_CASES]
    files += [(case.filename, corpus.archives[case.name][1], "application/octet-stream") for case in ARCHIVE_CASES]
    return files


def page_texts(at: AppTest, kind: str) -> list[str]:
    return [element.value for element in getattr(at, kind)]


@pytest.fixture(scope="module")
def review_run(app_settings, corpus):
    """The Review page after one upload of the whole corpus."""
    at = AppTest.from_file(str(APP), default_timeout=APP_RUN_TIMEOUT).run()
    at.switch_page("views/review.py").run()
    at.file_uploader(key="review_uploads").set_value(uploads(corpus)).run()
    return at


def option_label(case: FileCase, corpus: Corpus) -> str:
    height, width = expected_pixels(case, corpus).shape[:2]
    return f"{case.shown_name} ({width}x{height} px)"


def test_review_upload_keeps_page_working(review_run, corpus, library_results):
    at = review_run
    assert not at.exception, [e.value for e in at.exception]
    options = at.selectbox(key="review_upload_choice").options
    assert options == [option_label(case, corpus) for case in ACCEPTED]
    rejected = [c for c in FILE_CASES if c.expect == REJECT]
    assert len(at.error) == len(rejected) + len(ARCHIVE_CASES), page_texts(at, "error")

    # The first accepted upload, the plain tile, is reviewed at once.
    plain = library_results["plain_png"].binary.probabilities["Abnormal"]
    values = [m.value for m in at.metric if m.label == "P(Abnormal), binary model"]
    assert values == [f"{plain:.3f}"]


@pytest.mark.parametrize("case", FILE_CASES, ids=FILE_IDS)
def test_review_upload_file(case, review_run, corpus):
    at = review_run
    errors = [e for e in page_texts(at, "error") if e.startswith(f"{case.shown_name}: ")]
    if case.expect == REJECT:
        assert len(errors) == 1, errors
        assert message_pattern(case.shown_name, case.message).fullmatch(errors[0]), errors[0]
    else:
        assert errors == []
        assert option_label(case, corpus) in at.selectbox(key="review_upload_choice").options


@pytest.mark.parametrize("case", ARCHIVE_CASES, ids=ARCHIVE_IDS)
def test_review_upload_archive(case, review_run):
    assert f"{case.filename}: {ARCHIVE_PAGE_MESSAGE}" in page_texts(review_run, "error")


def test_review_still_usable_after_corpus(review_run, corpus, library_results):
    at = review_run
    for name in ("exif_rotated_png", "very_large_real"):
        case = next(c for c in FILE_CASES if c.name == name)
        at.selectbox(key="review_upload_choice").set_value(option_label(case, corpus)).run()
        assert not at.exception, [e.value for e in at.exception]
        expected = library_results[name].binary.probabilities["Abnormal"]
        values = [m.value for m in at.metric if m.label == "P(Abnormal), binary model"]
        assert values == [f"{expected:.3f}"], name
        captions = " ".join(c.value for c in at.caption)
        assert f"`{case.shown_name}`" in captions

    at.file_uploader(key="review_uploads").set_value(("again.png", corpus.sources.tile_bytes, "image/png")).run()
    assert not at.exception
    assert not at.error, page_texts(at, "error")
    expected = library_results["plain_png"].binary.probabilities["Abnormal"]
    assert [m.value for m in at.metric if m.label == "P(Abnormal), binary model"] == [f"{expected:.3f}"]


@pytest.fixture(scope="module")
def batch_run(app_settings, corpus):
    """The Batch page after scoring one upload of the whole corpus, files and archives."""
    before = corpus.listing()
    at = AppTest.from_file(str(APP), default_timeout=APP_RUN_TIMEOUT).run()
    at.switch_page("views/batch.py").run()
    at.radio(key="batch_source").set_value("Upload tiles or archives").run()
    at.file_uploader(key="batch_uploads").set_value(uploads(corpus)).run()
    at.button(key="batch_run_uploads").click().run()
    rows = at.dataframe[0].value.to_dict("records") if len(at.dataframe) else []
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    return at, by_file, before


def problem_messages(at: AppTest) -> list[str]:
    """Messages the Batch page shows for rejected files and archives, in boxes and in the expander."""
    return page_texts(at, "error") + page_texts(at, "text")


def is_blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def test_batch_upload_totals_and_cleanup(batch_run, corpus, app_settings):
    at, by_file, before = batch_run
    assert not at.exception, [e.value for e in at.exception]
    scored_members = sum(len(case.scored) for case in ARCHIVE_CASES)
    rejected_members = sum(len(case.rejected) for case in ARCHIVE_CASES)
    rejected_files = len([c for c in FILE_CASES if c.expect == REJECT])
    archive_errors = len([c for c in ARCHIVE_CASES if c.archive_error])
    values = {m.label: m.value for m in at.metric}
    assert values["Tiles scored"] == f"{len(ACCEPTED) + scored_members:,}"
    assert values["Files rejected"] == f"{rejected_files + rejected_members + archive_errors:,}"
    assert len(at.get("download_button")) == 1

    assert list(app_settings.iterdir()) == [], "the extraction folder was not removed"
    assert corpus.listing() == before
    assert list(corpus.outside.iterdir()) == []


@pytest.mark.parametrize("case", FILE_CASES, ids=FILE_IDS)
def test_batch_upload_file(case, batch_run, equivalents):
    at, by_file, _ = batch_run
    rows = by_file.get(case.shown_name, [])
    assert len(rows) == 1, rows
    row = rows[0]
    if case.expect == REJECT:
        assert message_pattern(case.shown_name, case.message).fullmatch(row["error"]), row["error"]
        assert row["error"] in problem_messages(at)
        return

    assert is_blank(row["error"]), row["error"]
    codes = set((row["warnings"] or "").split()) if not is_blank(row["warnings"]) else set()
    assert case.warnings <= codes
    if case.name in equivalents:
        expected = equivalents[case.name].binary.probabilities["Abnormal"]
        assert math.isclose(row["binary_p_abnormal"], expected, abs_tol=PROBABILITY_TOLERANCE), (row["binary_p_abnormal"], expected)


@pytest.mark.parametrize("case", ARCHIVE_CASES, ids=ARCHIVE_IDS)
def test_batch_upload_archive(case, batch_run, corpus):
    at, by_file, _ = batch_run
    messages = problem_messages(at)
    if case.archive_error:
        assert any(message_pattern(case.filename, case.archive_error).fullmatch(m) for m in messages), case.archive_error
    for member in case.scored:
        rows = by_file.get(f"{case.filename}/{member}", [])
        assert len(rows) == 1 and is_blank(rows[0]["error"]), rows
    for member, message in case.rejected.items():
        display = f"{case.filename}/{member}"
        rows = by_file.get(display, [])
        assert len(rows) == 1 and message_pattern(display, message).fullmatch(rows[0]["error"]), rows
    skipped_lines = [m for m in messages if m.startswith(f"{case.filename}: ")]
    for member in expected_skips(case, corpus):
        assert any(line.startswith(f"{case.filename}: {member}: ") for line in skipped_lines), member
    for member in case.nested:
        assert f"{case.filename}: {member}: an archive inside the archive is not opened; upload it on its own." in messages
    for member in case.not_images:
        assert any(line.startswith(f"{case.filename}: {member}: not an image file") for line in skipped_lines), member
    unexpected = [name for name in by_file if name.startswith(f"{case.filename}/")]
    assert sorted(unexpected) == sorted(f"{case.filename}/{m}" for m in (*case.scored, *case.rejected))


def test_batch_still_usable_after_corpus(batch_run, corpus, library_results):
    at, _, _ = batch_run
    at.file_uploader(key="batch_uploads").set_value(("again.png", corpus.sources.tile_bytes, "image/png")).run()
    at.button(key="batch_run_uploads").click().run()
    assert not at.exception
    assert not at.error, page_texts(at, "error")
    values = {m.label: m.value for m in at.metric}
    assert values["Tiles scored"] == "1"
    assert values["Files rejected"] == "0"
    row = at.dataframe[0].value.to_dict("records")[0]
    expected = library_results["plain_png"].binary.probabilities["Abnormal"]
    assert math.isclose(row["binary_p_abnormal"], expected, abs_tol=PROBABILITY_TOLERANCE)


def test_model_lock_releases_memory_once(monkeypatch):
    """The app's model lock is reentrant and frees the C heap once, on the outermost release."""
    monkeypatch.syspath_prepend(str(REPO / "app"))
    from ui import resources

    calls = []
    monkeypatch.setattr(resources, "_MALLOC_TRIM", lambda pad: calls.append(pad) or 1)
    lock = resources.ModelLock()
    with lock:
        with lock:
            pass
        assert calls == []
    assert calls == [0]

    entered = threading.Event()

    def other_session():
        with lock:
            entered.set()

    with lock:
        thread = threading.Thread(target=other_session)
        thread.start()
        assert not entered.wait(0.2)
    thread.join(5)
    assert entered.is_set()
    assert calls == [0, 0, 0]


def test_corpus_covers_forty_kinds():
    kinds = len(FILE_CASES) + len(PATH_CASES) + len(ARCHIVE_CASES)
    assert kinds >= 40, kinds
    assert corpus_module.CASE_NAMES
