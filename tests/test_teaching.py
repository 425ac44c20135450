"""Quizzes: drawing tiles, recording answers, scoring and the CSV of answers."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest

from gastricvision.datasets import TileRecord, open_dataset
from gastricvision.errors import DatasetError
from gastricvision.teaching import MAX_QUIZ_TILES, QuizError, make_quiz


def records_of(counts: dict[str, int]) -> list[TileRecord]:
    return [
        TileRecord(Path(f"/d/{label}/{i:03d}.png"), label, label, Path("/d"))
        for label, count in counts.items()
        for i in range(count)
    ]


def test_make_quiz_balances_classes():
    quiz = make_quiz(records_of({"Normal": 30, "Abnormal": 30, "TUM": 30}), ["Normal", "Abnormal"], 10, seed=3)
    assert len(quiz.items) == 10
    assert Counter(item.truth for item in quiz.items) == {"Normal": 5, "Abnormal": 5}
    assert quiz.classes == ("Normal", "Abnormal")


def test_make_quiz_shuffles_classes():
    quiz = make_quiz(records_of({"Normal": 30, "Abnormal": 30}), ["Normal", "Abnormal"], 20, seed=3)
    truths = [item.truth for item in quiz.items]
    assert truths != sorted(truths)


def test_make_quiz_same_seed_same_tiles():
    records = records_of({"Normal": 30, "Abnormal": 30})
    first = make_quiz(records, ["Normal", "Abnormal"], 6, seed=11)
    second = make_quiz(records, ["Normal", "Abnormal"], 6, seed=11)
    assert [item.path for item in first.items] == [item.path for item in second.items]
    assert first.seed == 11


def test_make_quiz_without_seed_records_one():
    quiz = make_quiz(records_of({"A": 5, "B": 5}), ["A", "B"], 4)
    assert isinstance(quiz.seed, int)


def test_make_quiz_uses_all_available_tiles():
    quiz = make_quiz(records_of({"A": 2, "B": 1}), ["A", "B"], 10, seed=0)
    assert len(quiz.items) == 3


def test_make_quiz_needs_two_classes():
    with pytest.raises(DatasetError, match="at least two classes"):
        make_quiz(records_of({"A": 5}), ["A"], 3)


def test_make_quiz_classes_without_tiles():
    with pytest.raises(DatasetError, match="No tiles of the classes X, Y"):
        make_quiz(records_of({"A": 5}), ["X", "Y"], 3)


@pytest.mark.parametrize("count", [0, MAX_QUIZ_TILES + 1])
def test_make_quiz_count_limits(count):
    with pytest.raises(QuizError, match="Invalid number of tiles"):
        make_quiz(records_of({"A": 5, "B": 5}), ["A", "B"], count)


def test_make_quiz_real_dataset(shared_data):
    dataset = open_dataset(shared_data / "gashissdb")
    quiz = make_quiz(dataset.records, ["Normal", "Abnormal"], 6, seed=0)
    assert all(item.path.is_file() for item in quiz.items)
    assert all(item.relative_path.startswith("160/") for item in quiz.items)


def answered_quiz():
    quiz = make_quiz(records_of({"Normal": 2, "Abnormal": 2}), ["Normal", "Abnormal"], 4, seed=1)
    for number, item in enumerate(quiz.items, start=1):
        student = item.truth
        if number == 2:
            student = "Normal" if item.truth == "Abnormal" else "Abnormal"
        model = item.truth if number in (1, 2) else None
        quiz.answer(number, student, model_answer=model, model_probability=0.9 if model else None, seconds=2.0 * number)
    return quiz


def test_quiz_answer_records_truth_and_model():
    quiz = make_quiz(records_of({"Normal": 2, "Abnormal": 2}), ["Normal", "Abnormal"], 4, seed=1)
    item = quiz.current
    answer = quiz.answer(1, item.truth, model_answer="Abnormal", model_probability=0.8)
    assert answer.correct
    assert answer.model_correct == (item.truth == "Abnormal")
    assert quiz.position == 1
    assert quiz.current == quiz.items[1]


def test_quiz_rejects_out_of_order_answer():
    quiz = make_quiz(records_of({"A": 2, "B": 2}), ["A", "B"], 4, seed=1)
    with pytest.raises(QuizError, match="answer tile 1 first"):
        quiz.answer(2, "A")


def test_quiz_rejects_unknown_class():
    quiz = make_quiz(records_of({"A": 2, "B": 2}), ["A", "B"], 4, seed=1)
    with pytest.raises(QuizError, match="Unknown answer 'C'"):
        quiz.answer(1, "C")


def test_quiz_rejects_answer_after_finish():
    quiz = answered_quiz()
    assert quiz.finished
    assert quiz.current is None
    with pytest.raises(QuizError, match="finished"):
        quiz.answer(5, "Normal")


def test_quiz_summary_scores():
    summary = answered_quiz().summary()
    assert summary.answered == 4
    assert summary.correct == 3
    assert summary.accuracy == 0.75
    assert summary.model_answered == 2
    assert summary.model_correct == 2
    assert summary.model_accuracy == 1.0
    assert sum(tiles for _, _, tiles in summary.per_class.values()) == 4
    assert sum(sum(row.values()) for row in summary.confusion.values()) == 4


def test_quiz_summary_empty():
    quiz = make_quiz(records_of({"A": 2, "B": 2}), ["A", "B"], 2, seed=1)
    summary = quiz.summary()
    assert summary.accuracy is None
    assert summary.model_accuracy is None


def test_quiz_csv_rows():
    quiz = answered_quiz()
    rows = list(csv.DictReader(io.StringIO(quiz.to_csv())))
    assert len(rows) == 4
    assert rows[0]["number"] == "1"
    assert rows[0]["correct"] == "True"
    assert rows[1]["correct"] == "False"
    assert rows[0]["model_probability"] == "0.9000"
    assert rows[2]["model_answer"] == ""
    assert rows[2]["model_correct"] == ""
    assert rows[3]["seconds"] == "8.0"
