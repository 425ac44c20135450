"""Teaching quiz: students classify tiles, then see the truth, the model and its map.

The instructor draws tiles from the sidebar's dataset (classes, number of tiles, which
model answers alongside). For each tile the student answers first; then the page shows
the true class, the model's answer, the model's class activation map and the model
randomisation check of that map. A running score, a summary and a CSV of the answers
close the quiz.
"""

from __future__ import annotations

import math
import time

import streamlit as st

from gastricvision import explain
from gastricvision.errors import ImageError
from gastricvision.teaching import MAX_QUIZ_TILES, Quiz, QuizAnswer, QuizItem, make_quiz
from ui import compute
from ui.boundary import guard
from ui.datasource import require_dataset
from ui.images import enlarge
from ui.resources import ModelSet, models

QUIZ_KEY = "quiz"
MODEL_KEY = "quiz_model"
REVEALED_KEY = "quiz_revealed"
STARTED_KEY = "quiz_started_at"
NO_MODEL = "no model"
TILE_SIDE = 384


def reset_quiz() -> None:
    for key in (QUIZ_KEY, MODEL_KEY, REVEALED_KEY, STARTED_KEY):
        st.session_state.pop(key, None)


def load_item(item: QuizItem):
    try:
        stat = item.path.stat()
    except OSError as exc:
        raise ImageError(
            f"{item.relative_path}: cannot read the tile ({exc.strerror}); start a new quiz "
            "if the dataset folder changed."
        ) from None
    return compute.decode_file(str(item.path), int(stat.st_size), int(stat.st_mtime_ns), item.relative_path)


# --------------------------------------------------------------------------- set-up


def setup(model_set: ModelSet) -> None:
    st.subheader("Set up a quiz")
    choice = require_dataset("draw the quiz tiles from it")
    if choice is None:
        return
    dataset = choice.dataset
    counts = dataset.counts()
    classes = st.multiselect(
        "Classes the student chooses from",
        list(dataset.classes),
        default=list(dataset.classes)[:8],
        key="quiz_classes",
    )
    available = sum(counts.get(name, 0) for name in classes)
    if len(classes) < 2 or available == 0:
        st.info("Choose at least two classes that have tiles.")
        return

    columns = st.columns(3)
    limit = min(MAX_QUIZ_TILES, available)
    count = columns[0].number_input(f"Number of tiles (1 to {limit})", 1, limit, min(10, limit), key="quiz_count")
    fitting = [n for n in model_set.classifiers() if set(classes) <= set(model_set.loaded[n].manifest.classes)]
    overlapping = [n for n in model_set.classifiers() if set(classes) & set(model_set.loaded[n].manifest.classes)]
    options = [*fitting, *[n for n in overlapping if n not in fitting], NO_MODEL]
    model = columns[1].selectbox(
        "Model that answers too", options, key="quiz_model_choice",
        help="Its answer, map and randomisation check are shown after each of the student's answers.",
    )
    seed = columns[2].number_input("Seed (empty: a new draw each time)", min_value=0, value=None, step=1, key="quiz_seed")
    if model != NO_MODEL and model not in fitting:
        st.caption(f"The {model} model does not know every chosen class; its answer can be a class outside the quiz.")

    if st.button("Start the quiz", type="primary"):
        quiz = make_quiz(dataset.records, classes, int(count), seed=None if seed is None else int(seed))
        st.session_state[QUIZ_KEY] = quiz
        st.session_state[MODEL_KEY] = None if model == NO_MODEL else model
        st.session_state[REVEALED_KEY] = False
        st.session_state[STARTED_KEY] = time.monotonic()
        st.rerun()


# --------------------------------------------------------------------------- questions


def progress_header(quiz: Quiz) -> None:
    summary = quiz.summary()
    number = min(quiz.position + (0 if st.session_state.get(REVEALED_KEY) else 1), len(quiz.items))
    st.progress(quiz.position / len(quiz.items), text=f"Tile {number} of {len(quiz.items)}")
    score = f"Score so far: {summary.correct} of {summary.answered} correct"
    if summary.model_answered:
        score += f" · the {st.session_state.get(MODEL_KEY)} model: {summary.model_correct} of {summary.model_answered}"
    st.markdown(score)


def model_answer(model_set: ModelSet, name: str | None, image) -> tuple[str | None, float | None]:
    if not name or name not in model_set.loaded:
        return None, None
    result = compute.predict(model_set.signature, image.sha256, image.name, model_set, image)
    output = getattr(result, name, None)
    if output is None:
        return None, None
    return output.label, float(output.probabilities[output.label])


def question(quiz: Quiz, model_set: ModelSet) -> None:
    item = quiz.current
    image = load_item(item)
    columns = st.columns([1, 1], gap="large")
    columns[0].image(enlarge(image.array, TILE_SIDE), caption=f"{image.width}x{image.height} px, enlarged", width=TILE_SIDE)
    with columns[1]:
        answer = st.radio("Your answer", quiz.classes, index=None, key=f"quiz_answer_{quiz.position}")
        if st.button("Submit the answer", type="primary", disabled=answer is None):
            name = st.session_state.get(MODEL_KEY)
            label, probability = model_answer(model_set, name, image)
            started = st.session_state.get(STARTED_KEY)
            seconds = time.monotonic() - started if started else None
            quiz.answer(quiz.position + 1, answer, model_answer=label, model_probability=probability, seconds=seconds)
            st.session_state[REVEALED_KEY] = True
            st.rerun()


def _next_tile() -> None:
    st.session_state[REVEALED_KEY] = False
    st.session_state[STARTED_KEY] = time.monotonic()


def sanity_sentence(correlation: float) -> str:
    if math.isnan(correlation):
        return "The rank correlation is undefined because one of the maps is constant."
    return (
        f"Rank correlation with the trained model's map: {correlation:.2f}. A map that reflects "
        "what the model learnt changes when the weights are randomised, so a value near 0 is "
        "expected; a value near 1 means the map mostly shows the image's structure."
    )


def reveal(quiz: Quiz, model_set: ModelSet) -> None:
    answer: QuizAnswer = quiz.answers[-1]
    item = quiz.items[answer.number - 1]
    image = load_item(item)
    name = st.session_state.get(MODEL_KEY)

    columns = st.columns(4, gap="medium")
    columns[0].image(enlarge(image.array, 256), caption=item.relative_path, width="stretch")
    with columns[1]:
        verdict = ":green[**correct**]" if answer.correct else ":red[**not correct**]"
        st.markdown(f"True class: **{answer.truth}**")
        st.markdown(f"Your answer: **{answer.answer}**, {verdict}")
        if answer.model_answer is not None:
            model_verdict = ":green[correct]" if answer.model_correct else ":red[not correct]"
            st.markdown(
                f"The {name} model: **{answer.model_answer}** (p = {answer.model_probability:.2f}), {model_verdict}"
            )
    if name and name in model_set.loaded and answer.model_answer is not None:
        sha = model_set.sha256(name)
        with columns[2], guard("class activation map"):
            cam = compute.cam(sha, image.sha256, "gradcam", None, model_set, name, image)
            st.image(
                enlarge(explain.overlay(image.array, cam.map, opacity=0.5), 256),
                caption=f"Grad-CAM of the {name} model for {cam.target_class}",
                width="stretch",
            )
        with columns[3], guard("randomisation check"):
            sanity = compute.randomisation(sha, image.sha256, "gradcam", cam.target_class, model_set, name, image)
            st.image(
                enlarge(explain.overlay(image.array, sanity.randomised_map, opacity=0.5), 256),
                caption="The same map from random weights",
                width="stretch",
            )
            st.caption(sanity_sentence(sanity.rank_correlation))
    label = "See the summary" if quiz.finished else "Next tile"
    st.button(label, type="primary", on_click=_next_tile, key="quiz_next")


# --------------------------------------------------------------------------- summary


def summary(quiz: Quiz) -> None:
    result = quiz.summary()
    st.subheader("Summary")
    columns = st.columns(3)
    columns[0].metric("Your score", f"{result.correct} of {result.answered}", f"{result.accuracy:.0%}" if result.accuracy is not None else None, delta_color="off")
    if result.model_answered:
        name = st.session_state.get(MODEL_KEY)
        columns[1].metric(f"The {name} model", f"{result.model_correct} of {result.model_answered}", f"{result.model_accuracy:.0%}", delta_color="off")
    seconds = [a.seconds for a in quiz.answers if a.seconds is not None]
    if seconds:
        columns[2].metric("Median time per tile", f"{sorted(seconds)[len(seconds) // 2]:.0f} s")

    rows = [
        {"class": name, "tiles": tiles, "you: correct": mine, "model: correct": model if result.model_answered else None}
        for name, (mine, model, tiles) in result.per_class.items()
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    st.markdown("**Your answers** (rows: true class, columns: your answer)")
    st.dataframe(
        [{"true class": truth, **answers} for truth, answers in result.confusion.items()],
        hide_index=True, width="stretch",
    )
    st.download_button("Answers (CSV)", data=quiz.to_csv(), file_name="quiz-answers.csv", mime="text/csv", on_click="ignore")
    st.button("Start a new quiz", on_click=reset_quiz, key="quiz_new")


def main() -> None:
    st.title("Teaching quiz")
    model_set = models()
    quiz: Quiz | None = st.session_state.get(QUIZ_KEY)
    if quiz is None:
        setup(model_set)
        return

    progress_header(quiz)
    if st.session_state.get(REVEALED_KEY):
        reveal(quiz, model_set)
    elif quiz.finished:
        summary(quiz)
    else:
        question(quiz, model_set)
    if not quiz.finished:
        st.button("Abandon this quiz", on_click=reset_quiz, key="quiz_abandon")


main()
