"""Quizzes for teaching: pick labelled tiles, record a student's answers, score them.

A :class:`Quiz` contains tiles drawn from a dataset with the classes as equally
represented as possible (:func:`make_quiz`). The student answers the tiles in order;
each answer can carry the model's answer for the same tile, so the summary compares
the student with the model. :meth:`Quiz.to_csv` writes one row per answer.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .analysis import balanced_sample
from .datasets import TileRecord
from .errors import DatasetError, GastricVisionError

__all__ = ["QuizAnswer", "QuizError", "QuizItem", "QuizSummary", "Quiz", "make_quiz"]

# A quiz longer than this is hard to finish in one sitting and fills the browser session.
MAX_QUIZ_TILES = 200


class QuizError(GastricVisionError):
    """An answer that does not fit the quiz: unknown class, wrong tile, already answered."""


@dataclass(frozen=True)
class QuizItem:
    """One tile of a quiz.

    Attributes:
        path: Absolute path of the tile file.
        relative_path: Path below the dataset root, for display and the CSV.
        truth: The tile's true class.
    """

    path: Path
    relative_path: str
    truth: str


@dataclass(frozen=True)
class QuizAnswer:
    """A student's answer to one tile, with the model's answer next to it.

    Attributes:
        number: Position of the tile in the quiz, from 1.
        relative_path: The tile.
        truth: Its true class.
        answer: The student's class.
        correct: ``answer == truth``.
        model_answer: The model's most probable class, if a model answered.
        model_probability: The model's probability of ``model_answer``.
        model_correct: ``model_answer == truth``; None without a model answer.
        seconds: Time from showing the tile to the answer, if measured.
    """

    number: int
    relative_path: str
    truth: str
    answer: str
    correct: bool
    model_answer: str | None = None
    model_probability: float | None = None
    model_correct: bool | None = None
    seconds: float | None = None


@dataclass
class QuizSummary:
    """Scores of a finished or partly finished quiz.

    Attributes:
        answered: Tiles answered.
        correct: Tiles the student answered correctly.
        model_answered: Tiles with a model answer.
        model_correct: Tiles the model answered correctly.
        per_class: Per true class: ``(student correct, model correct, tiles)``.
        confusion: ``confusion[truth][answer]`` counts of the student's answers.
    """

    answered: int
    correct: int
    model_answered: int
    model_correct: int
    per_class: dict[str, tuple[int, int, int]]
    confusion: dict[str, dict[str, int]]

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.answered if self.answered else None

    @property
    def model_accuracy(self) -> float | None:
        return self.model_correct / self.model_answered if self.model_answered else None


@dataclass
class Quiz:
    """Tiles to classify, in order, and the answers given so far.

    Attributes:
        items: The tiles.
        classes: Classes the student chooses from.
        seed: Seed the tiles were drawn with.
        answers: One per answered tile, in order.
    """

    items: list[QuizItem]
    classes: tuple[str, ...]
    seed: int = 0
    answers: list[QuizAnswer] = field(default_factory=list)

    @property
    def position(self) -> int:
        """Index of the next tile to answer (``len(items)`` when finished)."""
        return len(self.answers)

    @property
    def finished(self) -> bool:
        return self.position >= len(self.items)

    @property
    def current(self) -> QuizItem | None:
        return None if self.finished else self.items[self.position]

    def answer(
        self,
        number: int,
        answer: str,
        *,
        model_answer: str | None = None,
        model_probability: float | None = None,
        seconds: float | None = None,
    ) -> QuizAnswer:
        """Record the answer to tile ``number`` (from 1), which must be the next one.

        Raises:
            QuizError: ``number`` is not the next tile, or ``answer`` is not a quiz class.
        """
        if self.finished:
            raise QuizError(f"The quiz is finished: all {len(self.items)} tiles are answered.")
        if number != self.position + 1:
            raise QuizError(
                f"Tile {number} is not the next one to answer; answer tile {self.position + 1} first."
            )
        if answer not in self.classes:
            raise QuizError(f"Unknown answer {answer!r}: choose one of {', '.join(self.classes)}.")

        item = self.items[self.position]
        recorded = QuizAnswer(
            number=number,
            relative_path=item.relative_path,
            truth=item.truth,
            answer=answer,
            correct=answer == item.truth,
            model_answer=model_answer,
            model_probability=model_probability,
            model_correct=None if model_answer is None else model_answer == item.truth,
            seconds=seconds,
        )
        self.answers.append(recorded)
        return recorded

    def summary(self) -> QuizSummary:
        per_class: dict[str, list[int]] = {name: [0, 0, 0] for name in self.classes}
        confusion: dict[str, dict[str, int]] = {
            truth: {answer: 0 for answer in self.classes} for truth in self.classes
        }
        for answer in self.answers:
            counts = per_class.setdefault(answer.truth, [0, 0, 0])
            counts[0] += int(answer.correct)
            counts[1] += int(bool(answer.model_correct))
            counts[2] += 1
            confusion.setdefault(answer.truth, {})
            confusion[answer.truth][answer.answer] = confusion[answer.truth].get(answer.answer, 0) + 1
        with_model = [a for a in self.answers if a.model_answer is not None]
        return QuizSummary(
            answered=len(self.answers),
            correct=sum(a.correct for a in self.answers),
            model_answered=len(with_model),
            model_correct=sum(bool(a.model_correct) for a in with_model),
            per_class={name: tuple(values) for name, values in per_class.items()},
            confusion=confusion,
        )

    def to_csv(self) -> str:
        """Write the answers as CSV text: number, path, truth, answer, correct, the model's answer."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            ["number", "path", "truth", "answer", "correct", "model_answer", "model_probability", "model_correct", "seconds"]
        )
        for a in self.answers:
            writer.writerow(
                [
                    a.number,
                    a.relative_path,
                    a.truth,
                    a.answer,
                    a.correct,
                    a.model_answer or "",
                    "" if a.model_probability is None else f"{a.model_probability:.4f}",
                    "" if a.model_correct is None else a.model_correct,
                    "" if a.seconds is None else f"{a.seconds:.1f}",
                ]
            )
        return buffer.getvalue()


def make_quiz(
    records: Sequence[TileRecord],
    classes: Sequence[str],
    count: int,
    *,
    seed: int | None = None,
) -> Quiz:
    """Draw ``count`` tiles of ``classes`` in random order, as balanced as the data allows.

    Args:
        records: Labelled dataset tiles.
        classes: Classes to draw from and to answer with; at least two.
        count: Number of tiles, from 1 to :data:`MAX_QUIZ_TILES`; fewer when the
            classes have fewer tiles.
        seed: Seed of the draw; the current time when None, so each quiz differs.

    Raises:
        DatasetError: Fewer than two classes, or no tiles of them.
        QuizError: ``count`` outside 1 to :data:`MAX_QUIZ_TILES`.
    """
    classes = tuple(dict.fromkeys(classes))
    if len(classes) < 2:
        raise DatasetError("A quiz needs at least two classes to choose from; select more classes.")
    if not 1 <= int(count) <= MAX_QUIZ_TILES:
        raise QuizError(f"Invalid number of tiles {count}: choose 1 to {MAX_QUIZ_TILES}.")
    if seed is None:
        seed = time.time_ns() % 2**31

    picked = balanced_sample(records, int(count), seed=seed, classes=classes, shuffle=True)
    if not picked:
        raise DatasetError(
            f"No tiles of the classes {', '.join(classes)} in this dataset; choose other classes."
        )
    items = [QuizItem(record.path, record.relative_path, str(record.label)) for record in picked]
    return Quiz(items=items, classes=classes, seed=seed)
