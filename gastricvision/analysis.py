"""Score a dataset folder with one classifier, cache the scores on disk, and analyse them.

:func:`score_records` runs a classifier over the tiles of a dataset and returns, per
tile, the calibrated class probabilities (computed exactly as
:class:`~gastricvision.inference.Predictor` computes them: same crops, same temperature,
averaged over the crops) and the penultimate-layer features (the pooled input of the
classification layer, averaged over the same crops). Results are stored in a SQLite
file (:class:`ScoreCache`), keyed by the sha256 of the weights file and the tile's path,
size and modification time. A folder is therefore scored once per set of weights, and a
changed file is scored again.

The rest of the module works on the scores: which tiles are wrong and how confidently
(:class:`FolderScores`), a confusion matrix, a 2-D projection of the features
(:func:`project_features`) and nearest neighbours in feature space
(:func:`nearest_neighbours`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Sequence

import numpy as np
import torch

from .datasets import TileRecord
from .errors import GastricVisionError, ImageError, WeightsError
from .imaging import DEFAULT_LIMITS, ImageLimits, LoadedImage, load_image
from .preprocessing import normalise, plan_views, to_float_tensor
from .weights import LoadedModel

__all__ = [
    "CORRECTNESS",
    "PROJECTION_METHODS",
    "SORT_ORDERS",
    "FolderScores",
    "Neighbour",
    "Projection",
    "ScoreCache",
    "balanced_sample",
    "classify_images",
    "default_cache_dir",
    "describe_scores",
    "nearest_neighbours",
    "project_features",
    "score_records",
    "scores_csv",
]

logger = logging.getLogger(__name__)

# Tiles decoded and run through the network together.
BATCH_TILES = 32

CORRECTNESS = ("all", "correct", "wrong")
SORT_ORDERS = ("confidence, low first", "confidence, high first", "loss, high first", "path")


# --------------------------------------------------------------------------- features


def _require_timm_classifier(model: LoadedModel) -> None:
    module = model.module
    if model.manifest.task == "reconstruction":
        raise WeightsError(
            f"{model.name} is a reconstruction model; folder scores need a classifier "
            "(binary, student or tissue)."
        )
    for attribute in ("forward_features", "forward_head", "get_classifier"):
        if not callable(getattr(module, attribute, None)):
            raise WeightsError(
                f"{model.name}: architecture {model.manifest.architecture!r} has no "
                f"{attribute}(); penultimate features need a timm classifier."
            )


@torch.inference_mode()
def classify_images(
    model: LoadedModel, images: Sequence[LoadedImage | np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Compute calibrated probabilities and penultimate features of tiles.

    Each tile is cut or resized into network inputs by
    :func:`~gastricvision.preprocessing.plan_views`, like the Predictor does, and both
    outputs are averaged over those inputs.

    Returns:
        ``(N, classes)`` float64 probabilities and ``(N, features)`` float32 features.

    Raises:
        WeightsError: ``model`` is not a timm classifier.
    """
    _require_timm_classifier(model)
    manifest = model.manifest
    module = model.module
    if not images:
        return np.zeros((0, manifest.num_classes)), np.zeros((0, 0), dtype=np.float32)

    plans = []
    for image in images:
        array = image.array if isinstance(image, LoadedImage) else image
        plans.append(plan_views(array, tile_size=manifest.tile_size, input_size=manifest.input_size))
    counts = [len(plan.views) for plan in plans]

    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    batch = to_float_tensor(np.concatenate([plan.views for plan in plans])).to(device)
    batch = normalise(batch, manifest.mean, manifest.std)

    features = []
    probabilities = []
    classifier = module.get_classifier()
    for start in range(0, len(batch), 64):
        part = batch[start : start + 64]
        pooled = module.forward_head(module.forward_features(part), pre_logits=True)
        logits = classifier(pooled)
        probabilities.append(torch.softmax(logits.float() / manifest.temperature, dim=1).cpu())
        features.append(pooled.float().cpu())

    view_probabilities = torch.split(torch.cat(probabilities), counts)
    view_features = torch.split(torch.cat(features), counts)
    tile_probabilities = torch.stack([p.mean(dim=0) for p in view_probabilities]).double().numpy()
    tile_features = torch.stack([f.mean(dim=0) for f in view_features]).numpy().astype(np.float32)
    return tile_probabilities, tile_features


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """Return the cache folder: ``$GASTRICVISION_CACHE``, else
    ``$XDG_CACHE_HOME/gastricvision``, else ``~/.cache/gastricvision``."""
    configured = os.environ.get("GASTRICVISION_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "gastricvision"


@dataclass
class _CachedScore:
    file_sha256: str | None
    probabilities: np.ndarray | None
    features: np.ndarray | None
    error: str | None


class ScoreCache:
    """Folder scores on disk, one SQLite file shared by every model and dataset.

    A row is keyed by the model's weights sha256 and the tile's absolute path, and is
    valid while the file's size and modification time (ns) are unchanged. Tiles that
    could not be decoded are stored with their error, so they are not retried until
    the file changes.

    Args:
        folder: Where ``scores-v1.sqlite`` lives; :func:`default_cache_dir` when None.
    """

    FILE_NAME = "scores-v1.sqlite"

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self.path = self.folder / self.FILE_NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS scores ("
                    " model_sha256 TEXT NOT NULL, path TEXT NOT NULL,"
                    " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, file_sha256 TEXT,"
                    " probabilities BLOB, features BLOB, error TEXT,"
                    " PRIMARY KEY (model_sha256, path))"
                )
        except (OSError, sqlite3.Error) as exc:
            raise GastricVisionError(
                f"Cannot use the score cache at {self.path} ({exc}); set GASTRICVISION_CACHE "
                "to a writable folder."
            ) from None

    @contextlib.contextmanager
    def _connect(self):
        connection = sqlite3.connect(self.path, timeout=30)
        try:
            with connection:
                yield connection
        finally:
            connection.close()

    def get_many(
        self, model_sha256: str, keys: Sequence[tuple[str, int, int]]
    ) -> dict[str, _CachedScore]:
        """Return the valid rows for ``(path, size, mtime_ns)`` keys, by path."""
        found: dict[str, _CachedScore] = {}
        expected = {path: (size, mtime) for path, size, mtime in keys}
        paths = list(expected)
        with self._connect() as connection:
            for start in range(0, len(paths), 500):
                chunk = paths[start : start + 500]
                placeholders = ",".join("?" * len(chunk))
                rows = connection.execute(
                    "SELECT path, size, mtime_ns, file_sha256, probabilities, features, error "
                    f"FROM scores WHERE model_sha256 = ? AND path IN ({placeholders})",
                    [model_sha256, *chunk],
                )
                for path, size, mtime, file_sha, probabilities, features, error in rows:
                    if expected.get(path) != (size, mtime):
                        continue
                    found[path] = _CachedScore(
                        file_sha,
                        None if probabilities is None else np.frombuffer(probabilities, dtype=np.float64),
                        None if features is None else np.frombuffer(features, dtype=np.float32),
                        error,
                    )
        return found

    def put_many(self, model_sha256: str, rows: Iterable[tuple[tuple[str, int, int], _CachedScore]]) -> None:
        values = []
        for (path, size, mtime), score in rows:
            values.append(
                (
                    model_sha256,
                    path,
                    size,
                    mtime,
                    score.file_sha256,
                    None if score.probabilities is None else np.asarray(score.probabilities, np.float64).tobytes(),
                    None if score.features is None else np.asarray(score.features, np.float32).tobytes(),
                    score.error,
                )
            )
        if not values:
            return
        with self._connect() as connection:
            connection.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)

    def clear(self, model_sha256: str | None = None) -> int:
        """Delete the rows of one model, or every row; return how many were deleted."""
        with self._connect() as connection:
            if model_sha256 is None:
                cursor = connection.execute("DELETE FROM scores")
            else:
                cursor = connection.execute("DELETE FROM scores WHERE model_sha256 = ?", (model_sha256,))
            return cursor.rowcount


# --------------------------------------------------------------------------- folder scores


@dataclass
class FolderScores:
    """One classifier's scores of a list of dataset tiles.

    Attributes:
        model: Registry name of the classifier.
        model_sha256: sha256 of its weights file.
        classes: Class names in logit order.
        records: The tiles that were scored, in input order.
        probabilities: ``(N, classes)`` calibrated probabilities.
        features: ``(N, D)`` penultimate-layer features.
        file_sha256: sha256 of each tile file.
        errors: ``(relative path, message)`` of tiles that could not be decoded; they are
            not in ``records``.
        from_cache: How many tiles came from the on-disk cache.
    """

    model: str
    model_sha256: str
    classes: tuple[str, ...]
    records: list[TileRecord]
    probabilities: np.ndarray
    features: np.ndarray
    file_sha256: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)
    from_cache: int = 0

    def __len__(self) -> int:
        return len(self.records)

    @property
    def predicted(self) -> np.ndarray:
        """Index of the most probable class per tile."""
        return self.probabilities.argmax(axis=1) if len(self) else np.zeros(0, dtype=int)

    @property
    def confidence(self) -> np.ndarray:
        """Probability of the predicted class per tile."""
        return self.probabilities.max(axis=1) if len(self) else np.zeros(0)

    @property
    def label_index(self) -> np.ndarray:
        """Index of the true class per tile; -1 where the label is not one of ``classes``."""
        lookup = {name: index for index, name in enumerate(self.classes)}
        return np.array([lookup.get(record.label, -1) for record in self.records], dtype=int)

    @property
    def known(self) -> np.ndarray:
        """True where the tile's label is one of the model's classes."""
        return self.label_index >= 0

    @property
    def correct(self) -> np.ndarray:
        """True where the prediction matches a known label (False where unknown)."""
        return self.known & (self.predicted == self.label_index)

    @property
    def loss(self) -> np.ndarray:
        """Cross-entropy ``-ln p(true class)`` per tile; NaN where the label is unknown."""
        labels = self.label_index
        picked = np.full(len(self), np.nan)
        rows = np.flatnonzero(labels >= 0)
        picked[rows] = self.probabilities[rows, labels[rows]]
        return -np.log(np.clip(picked, 1e-12, 1.0))

    def confusion_matrix(self) -> np.ndarray:
        """``(classes, classes)`` counts: rows are true classes, columns predictions."""
        size = len(self.classes)
        matrix = np.zeros((size, size), dtype=int)
        labels, predicted = self.label_index, self.predicted
        for row in np.flatnonzero(labels >= 0):
            matrix[labels[row], predicted[row]] += 1
        return matrix

    def select(
        self,
        *,
        true_classes: Sequence[str] | None = None,
        predicted_classes: Sequence[str] | None = None,
        correctness: str = "all",
        confidence: tuple[float, float] = (0.0, 1.0),
        order: str = "confidence, low first",
    ) -> np.ndarray:
        """Indices of the tiles that pass the filters, in the requested order.

        Args:
            true_classes: Keep tiles whose label is one of these (None keeps all,
                including unlabelled tiles).
            predicted_classes: Keep tiles predicted as one of these (None keeps all).
            correctness: One of :data:`CORRECTNESS`; ``correct`` and ``wrong`` drop tiles
                whose label is not a class of the model.
            confidence: Inclusive range of the predicted class's probability.
            order: One of :data:`SORT_ORDERS`; ties keep the input order.

        Raises:
            ValueError: Unknown ``correctness`` or ``order``.
        """
        if correctness not in CORRECTNESS:
            raise ValueError(f"Unknown correctness filter {correctness!r}: use one of {', '.join(CORRECTNESS)}.")
        if order not in SORT_ORDERS:
            raise ValueError(f"Unknown sort order {order!r}: use one of {', '.join(SORT_ORDERS)}.")

        keep = np.ones(len(self), dtype=bool)
        if true_classes is not None:
            allowed_labels = set(true_classes)
            keep &= np.array([record.label in allowed_labels for record in self.records], dtype=bool)
        if predicted_classes is not None:
            allowed_indices = [self.classes.index(name) for name in predicted_classes if name in self.classes]
            keep &= np.isin(self.predicted, allowed_indices)
        if correctness == "correct":
            keep &= self.correct
        elif correctness == "wrong":
            keep &= self.known & ~self.correct
        low, high = confidence
        keep &= (self.confidence >= low) & (self.confidence <= high)

        indices = np.flatnonzero(keep)
        if order == "confidence, low first":
            return indices[np.argsort(self.confidence[indices], kind="stable")]
        if order == "confidence, high first":
            return indices[np.argsort(-self.confidence[indices], kind="stable")]
        if order == "loss, high first":
            # Unknown labels (NaN loss) go last.
            losses = np.nan_to_num(self.loss[indices], nan=-np.inf)
            return indices[np.argsort(-losses, kind="stable")]
        return indices[np.argsort([self.records[i].relative_path for i in indices], kind="stable")]

    def row(self, index: int) -> dict:
        """Return one tile's scores as plain values, for tables and CSV."""
        record = self.records[index]
        predicted = int(self.predicted[index])
        label_index = int(self.label_index[index])
        row = {
            "path": record.relative_path,
            "true_class": record.label or "",
            "predicted_class": self.classes[predicted],
            "confidence": float(self.confidence[index]),
            "correct": bool(self.correct[index]) if label_index >= 0 else None,
            "loss": float(self.loss[index]) if label_index >= 0 else None,
        }
        for class_index, name in enumerate(self.classes):
            row[f"p_{name}"] = float(self.probabilities[index, class_index])
        return row


def _stat_key(path: Path) -> tuple[str, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return str(path), int(stat.st_size), int(stat.st_mtime_ns)


def score_records(
    model: LoadedModel,
    records: Sequence[TileRecord],
    *,
    cache: ScoreCache | None = None,
    progress: Callable[[int, int], None] | None = None,
    lock: ContextManager | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
    workers: int = 2,
) -> FolderScores:
    """Score dataset tiles with one classifier, reusing and filling the on-disk cache.

    Args:
        model: A loaded timm classifier (binary, student or tissue).
        records: Tiles to score; a record's ``crop`` is ignored (whole files are scored).
        cache: Cache to read and fill; None scores everything and stores nothing.
        progress: Called with ``(tiles done, total)`` after each batch.
        lock: Held while the network runs, so that callers sharing ``model`` across
            threads can serialise its use (class activation maps register hooks on it).
        limits: Image size limits.
        workers: Decoding threads.

    Returns:
        The scores of every decodable tile, in input order; the others are listed in
        :attr:`FolderScores.errors` with the reason.

    Raises:
        WeightsError: ``model`` is not a timm classifier.
    """
    _require_timm_classifier(model)
    manifest = model.manifest
    total = len(records)
    keys = [_stat_key(record.path) for record in records]
    cached = cache.get_many(manifest.sha256, [key for key in keys if key]) if cache else {}

    results: dict[int, _CachedScore] = {}
    to_score: list[int] = []
    for index, key in enumerate(keys):
        if key is None:
            results[index] = _CachedScore(None, None, None, f"{records[index].relative_path}: file not found or unreadable.")
        elif key[0] in cached:
            results[index] = cached[key[0]]
        else:
            to_score.append(index)
    from_cache = total - len(to_score)
    if progress:
        progress(from_cache, total)

    def decode(index: int) -> LoadedImage | str:
        record = records[index]
        try:
            return load_image(record.path, name=record.relative_path, limits=limits)
        except ImageError as exc:
            logger.warning("Skipping %s: %s", record.path, exc)
            return str(exc)

    done = from_cache
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="score-decode") as pool:
        for start in range(0, len(to_score), BATCH_TILES):
            batch_indices = to_score[start : start + BATCH_TILES]
            decoded = list(pool.map(decode, batch_indices))
            images = [item for item in decoded if isinstance(item, LoadedImage)]
            with lock if lock is not None else contextlib.nullcontext():
                probabilities, features = classify_images(model, images)
            new_rows = []
            position = 0
            for index, item in zip(batch_indices, decoded):
                if isinstance(item, LoadedImage):
                    score = _CachedScore(item.sha256, probabilities[position], features[position], None)
                    position += 1
                else:
                    score = _CachedScore(None, None, None, item)
                results[index] = score
                new_rows.append((keys[index], score))
            if cache:
                cache.put_many(manifest.sha256, new_rows)
            done += len(batch_indices)
            if progress:
                progress(done, total)

    scored: list[int] = []
    errors: list[tuple[str, str]] = []
    for index in range(total):
        score = results[index]
        if score.error is not None or score.probabilities is None:
            errors.append((records[index].relative_path, score.error or "no scores stored"))
        else:
            scored.append(index)

    logger.info(
        "Scored %d tiles with %s (%d from the cache, %d unreadable)",
        total, model.name, from_cache, len(errors),
    )
    width = manifest.num_classes
    return FolderScores(
        model=model.name,
        model_sha256=manifest.sha256,
        classes=tuple(manifest.classes),
        records=[records[i] for i in scored],
        probabilities=np.stack([results[i].probabilities for i in scored]) if scored else np.zeros((0, width)),
        features=np.stack([results[i].features for i in scored]).astype(np.float32) if scored else np.zeros((0, 0), np.float32),
        file_sha256=[results[i].file_sha256 or "" for i in scored],
        errors=errors,
        from_cache=from_cache,
    )


# --------------------------------------------------------------------------- sampling


def balanced_sample(
    records: Sequence[TileRecord],
    count: int,
    *,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    shuffle: bool = False,
) -> list[TileRecord]:
    """Pick up to ``count`` records with the classes as equally represented as possible.

    Each class gets ``count // classes`` records, or all it has; what a small class
    cannot fill goes to the others in turn. The pick is deterministic for a seed: records
    are sorted by path before shuffling within each class.

    Args:
        records: Labelled tiles; unlabelled ones are ignored.
        count: Number of records wanted.
        seed: Seed of the pick.
        classes: Classes to draw from (default: every label present).
        shuffle: Shuffle the result with ``seed``; otherwise it is sorted by class and path.
    """
    chosen = list(classes) if classes is not None else sorted({r.label for r in records if r.label})
    by_class: dict[str, list[TileRecord]] = {name: [] for name in chosen}
    for record in records:
        if record.label in by_class:
            by_class[record.label].append(record)
    rng = random.Random(seed)
    for name in chosen:
        group = sorted(by_class[name], key=lambda r: r.relative_path)
        rng.shuffle(group)
        by_class[name] = group

    picked: dict[str, int] = {name: 0 for name in chosen}
    remaining = max(0, int(count))
    while remaining > 0:
        open_classes = [name for name in chosen if picked[name] < len(by_class[name])]
        if not open_classes:
            break
        share = max(1, remaining // len(open_classes))
        for name in open_classes:
            take = min(share, len(by_class[name]) - picked[name], remaining)
            picked[name] += take
            remaining -= take
            if remaining == 0:
                break

    sample = [record for name in chosen for record in by_class[name][: picked[name]]]
    if shuffle:
        rng.shuffle(sample)
    else:
        sample.sort(key=lambda r: (chosen.index(r.label), r.relative_path))
    return sample


# --------------------------------------------------------------------------- embeddings


@dataclass
class Projection:
    """A 2-D map of feature vectors.

    Attributes:
        coordinates: ``(N, 2)`` positions.
        method: ``pca`` or ``tsne``, the method actually used.
        explained_variance: Share of the variance on each PCA axis (None for t-SNE).
        note: Why the requested method was replaced, if it was.
    """

    coordinates: np.ndarray
    method: str
    explained_variance: tuple[float, float] | None = None
    note: str = ""


PROJECTION_METHODS = ("pca", "tsne")

# t-SNE needs more points than its perplexity; below this it adds nothing over PCA.
TSNE_MIN_POINTS = 10


def project_features(features: np.ndarray, *, method: str = "pca", seed: int = 0) -> Projection:
    """Project ``(N, D)`` features to 2-D with PCA or t-SNE (scikit-learn).

    t-SNE runs on the first 50 principal components, with perplexity
    ``min(30, (N - 1) / 3)``. With fewer than :data:`TSNE_MIN_POINTS` points PCA is
    used instead, and :attr:`Projection.note` explains the change.

    Raises:
        ValueError: Unknown method or features that are not a 2-D array.
    """
    if method not in PROJECTION_METHODS:
        raise ValueError(f"Unknown projection method {method!r}: use one of {', '.join(PROJECTION_METHODS)}.")
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"Expected (N, D) features, got shape {features.shape}.")
    count = features.shape[0]
    if count < 3 or features.shape[1] < 2:
        coordinates = np.zeros((count, 2))
        if count >= 2 and features.shape[1] >= 1:
            coordinates[:, 0] = features[:, 0] - features[:, 0].mean()
        return Projection(coordinates, "pca", None, f"Only {count} tiles; nothing to project.")

    from sklearn.decomposition import PCA

    note = ""
    if method == "tsne" and count < TSNE_MIN_POINTS:
        note = f"t-SNE needs at least {TSNE_MIN_POINTS} tiles; PCA is shown for these {count}."
        method = "pca"

    if method == "pca":
        pca = PCA(n_components=2, random_state=seed)
        coordinates = pca.fit_transform(features)
        ratio = pca.explained_variance_ratio_
        return Projection(coordinates, "pca", (float(ratio[0]), float(ratio[1])), note)

    from sklearn.manifold import TSNE

    reduced = PCA(n_components=min(50, count, features.shape[1]), random_state=seed).fit_transform(features)
    perplexity = float(min(30.0, (count - 1) / 3))
    coordinates = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
    return Projection(coordinates, "tsne", None, note)


@dataclass(frozen=True)
class Neighbour:
    """A tile near another in feature space.

    Attributes:
        index: Row in the feature matrix.
        similarity: Cosine similarity of the two feature vectors, in [-1, 1].
    """

    index: int
    similarity: float


def nearest_neighbours(features: np.ndarray, index: int, k: int = 6) -> list[Neighbour]:
    """Find the ``k`` tiles most similar to tile ``index`` by cosine similarity, itself excluded.

    Raises:
        IndexError: ``index`` is outside the feature matrix.
    """
    features = np.asarray(features, dtype=np.float64)
    if not 0 <= index < len(features):
        raise IndexError(f"Tile index {index} is outside 0..{len(features) - 1}.")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.where(norms > 0, norms, 1.0)
    similarity = unit @ unit[index]
    similarity[index] = -np.inf
    order = np.argsort(-similarity, kind="stable")[: max(0, min(k, len(features) - 1))]
    return [Neighbour(int(i), float(similarity[i])) for i in order]


def scores_csv(scores: FolderScores, indices: Iterable[int] | None = None) -> str:
    """Write :meth:`FolderScores.row` of the given tiles (default: all) as CSV text."""
    rows = [scores.row(int(i)) for i in (range(len(scores)) if indices is None else indices)]
    buffer = io.StringIO()
    columns = ["path", "true_class", "predicted_class", "confidence", "correct", "loss"] + [
        f"p_{name}" for name in scores.classes
    ]
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if value is None else value) for key, value in row.items()})
    return buffer.getvalue()


def describe_scores(scores: FolderScores) -> dict:
    """Summarise a folder's scores (counts, accuracy, confusion matrix) as plain values."""
    known = scores.known
    return {
        "model": scores.model,
        "tiles": len(scores),
        "labelled_for_model": int(known.sum()),
        "accuracy": float(scores.correct[known].mean()) if known.any() else None,
        "unreadable": len(scores.errors),
        "from_cache": scores.from_cache,
        "classes": list(scores.classes),
        "confusion_matrix": scores.confusion_matrix().tolist(),
    }

