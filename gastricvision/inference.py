"""Run every available model on tiles and collect one structured result per tile.

:class:`Predictor` loads each model with weights once. :meth:`Predictor.predict` scores
one tile; :meth:`Predictor.predict_many` scores many, decoding files in worker threads
while the models run, and batching the network inputs of several tiles together.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .errors import GastricVisionError, ImageError, TileWarning
from .imaging import DEFAULT_LIMITS, ImageLimits, LoadedImage, load_image
from .models import MODEL_SPECS, fuse_batchnorm
from .preprocessing import ViewPlan, normalise, plan_views, to_float_tensor
from .reconstruction import (
    UNUSUAL_PERCENTILE,
    ReconstructionMaps,
    anomaly_percentile,
    l1_error_map,
    reconstruct,
    reconstruction_maps,
    reconstruction_plan,
    unusual_tile_warning,
    view_scores,
)
from .weights import LoadedModel, load_all

__all__ = ["ClassifierOutput", "Predictor", "ReconstructionOutput", "TileResult", "tile_checks"]

logger = logging.getLogger(__name__)

CLASSIFIER_KEYS = ("binary", "student", "tissue")


@dataclass
class ClassifierOutput:
    """Calibrated class probabilities of one classifier for one tile.

    Attributes:
        model: Registry name.
        label: Most probable class.
        probabilities: Class name to probability, after temperature scaling.
        temperature: The calibration temperature applied.
        views: Number of crops averaged (see :mod:`gastricvision.preprocessing`).
    """

    model: str
    label: str
    probabilities: dict[str, float]
    temperature: float
    views: int

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probabilities": self.probabilities, "temperature": self.temperature}


@dataclass
class ReconstructionOutput:
    """Reconstruction error of one reconstruction model for one tile.

    Attributes:
        model: Registry name.
        error: Mean absolute error in [0, 1] intensity units (the anomaly score).
        percentile: Percentile of ``error`` among the training tiles, if recorded.
    """

    model: str
    error: float
    percentile: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error, "percentile": self.percentile}


@dataclass
class TileResult:
    """Everything the models say about one tile, or why the tile was rejected.

    Attributes:
        name: Path or upload name.
        sha256: Digest of the encoded file (None when it could not be read).
        width: Decoded width in pixels.
        height: Decoded height in pixels.
        binary: Normal vs Abnormal output, if the model is loaded.
        student: Output of the distilled Normal vs Abnormal model, if loaded.
        tissue: Tissue type output, if loaded.
        reconstruction: Output per reconstruction model that is loaded.
        warnings: Conditions found while decoding or scoring.
        unavailable: Models requested but not loaded, with the reason.
        error: Why the tile could not be scored (a bad file); None on success.
        maps: Reconstruction and error maps per reconstruction model, when requested
            (:meth:`Predictor.predict_image` with ``with_maps``); not part of
            :meth:`to_dict`.
    """

    name: str
    sha256: str | None = None
    width: int = 0
    height: int = 0
    binary: ClassifierOutput | None = None
    student: ClassifierOutput | None = None
    tissue: ClassifierOutput | None = None
    reconstruction: dict[str, ReconstructionOutput] = field(default_factory=dict)
    warnings: list[TileWarning] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    maps: dict[str, ReconstructionMaps] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.name, "error": self.error}
        data: dict[str, Any] = {"path": self.name, "sha256": self.sha256, "width": self.width, "height": self.height}
        for key in CLASSIFIER_KEYS:
            output = getattr(self, key)
            data[key] = output.to_dict() if output else None
        data["reconstruction"] = {name: out.to_dict() for name, out in self.reconstruction.items()}
        data["warnings"] = [w.to_dict() for w in self.warnings]
        data["unavailable"] = dict(self.unavailable)
        return data


# Share of unstained near-white pixels above which a tile is reported as background.
BACKGROUND_FRACTION = 0.9


def tile_checks(image: LoadedImage) -> list[TileWarning]:
    """Cheap checks that flag a tile unlikely to be usable H&E tissue."""
    array = image.array
    notes: list[TileWarning] = []
    small = array[:: max(1, array.shape[0] // 256), :: max(1, array.shape[1] // 256)].astype(np.int16)
    brightness = small.mean(axis=2)
    saturation = small.max(axis=2) - small.min(axis=2)
    # Pale stroma is bright too but keeps some eosin colour, while empty glass is grey-white.
    background = float(((brightness > 220) & (saturation < 15)).mean())
    if background > BACKGROUND_FRACTION:
        notes.append(
            TileWarning(
                "mostly_background",
                f"{image.name}: {background:.0%} of the tile is unstained near-white background; "
                "if it is empty glass, the predictions mean nothing.",
            )
        )
    elif float(saturation.mean()) < 8:
        notes.append(
            TileWarning(
                "greyscale",
                f"{image.name} has almost no colour; the models expect H&E-stained RGB tiles.",
            )
        )
    return notes


class Predictor:
    """Score tiles with every model that has weights.

    Args:
        weights_dir: Folder with one sub-folder per model; defaults to
            :func:`~gastricvision.weights.default_weights_dir`.
        models: Registry names to load; defaults to all of them.
        device: Torch device for the networks.
        limits: Image size limits applied to every tile.
        loaded: Already loaded models (skips reading ``weights_dir``).
    """

    def __init__(
        self,
        weights_dir: str | os.PathLike | None = None,
        models: Sequence[str] | None = None,
        *,
        device: str | torch.device = "cpu",
        limits: ImageLimits = DEFAULT_LIMITS,
        loaded: dict[str, LoadedModel] | None = None,
        unavailable: dict[str, str] | None = None,
    ):
        self.device = torch.device(device)
        self.limits = limits
        if loaded is None:
            loaded, unavailable = load_all(weights_dir, list(models) if models else None, device=self.device)
        self.models: dict[str, LoadedModel] = loaded
        self.unavailable: dict[str, str] = dict(unavailable or {})
        for model in self.models.values():
            if model.manifest.task == "reconstruction" and not model.module.training:
                fuse_batchnorm(model.module)
            model.module.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ single tiles

    def load(self, source, name: str | None = None) -> LoadedImage:
        """Decode one tile with this predictor's limits."""
        return load_image(source, name=name, limits=self.limits)

    def predict(self, source, *, name: str | None = None) -> TileResult:
        """Score one tile given as a path, bytes, file object or :class:`LoadedImage`.

        A tile that cannot be decoded gives a result with ``error`` set instead of raising.
        """
        return next(iter(self.predict_many([source], names=[name] if name else None)))

    def predict_image(self, image: LoadedImage, *, with_maps: bool = False) -> TileResult:
        """Score one decoded tile.

        Args:
            image: The decoded tile.
            with_maps: Also keep each reconstruction model's maps in ``result.maps``. The
                scores come from the same forward passes, so a review page that shows the
                maps does not run the reconstruction models twice.
        """
        return self._score_batch([image], with_maps=with_maps)[0]

    # ------------------------------------------------------------------ many tiles

    def predict_many(
        self,
        sources: Iterable,
        *,
        names: Sequence[str] | None = None,
        batch_tiles: int = 32,
        workers: int = 2,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[TileResult]:
        """Score tiles in order, decoding ahead in ``workers`` threads.

        Args:
            sources: Paths, bytes, file objects or :class:`LoadedImage` objects.
            names: Display names, one per source (defaults to the paths).
            batch_tiles: Tiles whose network inputs are batched together.
            workers: Decoding threads (Pillow releases the GIL while decoding).
            progress: Called with the number of tiles finished after each batch.

        Yields:
            One :class:`TileResult` per source, in input order; bad files give a result
            with ``error`` set, and the others are still scored.
        """
        sources = list(sources)
        names = list(names) if names else [None] * len(sources)

        def decode(index: int) -> LoadedImage | TileResult:
            source, name = sources[index], names[index]
            if isinstance(source, LoadedImage):
                return source
            display = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<upload>")
            try:
                return self.load(source, name=display)
            except ImageError as exc:
                logger.info("Rejected %s: %s", display, exc)
                return TileResult(name=display, error=str(exc))

        done = 0
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
            # The threads decode the next batch while the models run on this thread. At
            # most two batches are decoded ahead, so memory stays bounded on large folders.
            window = 2 * batch_tiles
            futures = deque(pool.submit(decode, i) for i in range(min(window, len(sources))))
            next_index = len(futures)
            pending: list[LoadedImage | TileResult] = []
            while futures:
                pending.append(futures.popleft().result())
                if next_index < len(sources):
                    futures.append(pool.submit(decode, next_index))
                    next_index += 1
                if len(pending) >= batch_tiles or not futures:
                    yield from self._finish(pending)
                    done += len(pending)
                    pending = []
                    if progress:
                        progress(done)

    def _finish(self, items: list[LoadedImage | TileResult]) -> list[TileResult]:
        images = [item for item in items if isinstance(item, LoadedImage)]
        scored = iter(self._score_batch(images)) if images else iter(())
        return [next(scored) if isinstance(item, LoadedImage) else item for item in items]

    # ------------------------------------------------------------------ scoring

    def plan(self, image: LoadedImage, model: LoadedModel) -> ViewPlan:
        """Network inputs of ``image`` for ``model`` (see :mod:`gastricvision.preprocessing`)."""
        manifest = model.manifest
        if manifest.task == "reconstruction":
            return reconstruction_plan(
                image.array, tile_size=manifest.tile_size, input_size=manifest.input_size,
                model_name=f"the {manifest.name} model", name=image.name,
            )
        return plan_views(
            image.array,
            tile_size=manifest.tile_size,
            input_size=manifest.input_size,
            model_name=f"the {manifest.name} model",
            name=image.name,
        )

    @torch.inference_mode()
    def _score_batch(self, images: list[LoadedImage], *, with_maps: bool = False) -> list[TileResult]:
        results = [
            TileResult(
                name=image.name,
                sha256=image.sha256,
                width=image.width,
                height=image.height,
                warnings=list(image.warnings) + tile_checks(image),
                unavailable=dict(self.unavailable),
            )
            for image in images
        ]

        for name, model in self.models.items():
            if with_maps and model.manifest.task == "reconstruction":
                for result, image in zip(results, images):
                    maps = reconstruction_maps(model, image)
                    result.maps[name] = maps
                    result.reconstruction[name] = ReconstructionOutput(name, maps.score, maps.percentile)
                    _add_unique(result.warnings, [w for w in maps.warnings if w.code != "no_anomaly_reference"])
                continue

            plans = [self.plan(image, model) for image in images]
            for result, plan in zip(results, plans):
                _add_unique(result.warnings, plan.warnings)

            if model.manifest.task == "reconstruction":
                error_maps = self._grouped(model, plans, self._error_maps)
                for result, plan, maps in zip(results, plans, error_maps):
                    score = float(view_scores(maps, plan).mean())
                    percentile = anomaly_percentile(score, model.manifest.anomaly_reference)
                    result.reconstruction[name] = ReconstructionOutput(name, score, percentile)
                    if percentile is not None and percentile >= UNUSUAL_PERCENTILE:
                        _add_unique(result.warnings, [unusual_tile_warning(result.name, name, percentile)])
            else:
                probabilities = self._grouped(model, plans, self._probabilities)
                for result, per_view in zip(results, probabilities):
                    setattr(result, _result_field(model), _classifier_output(model, per_view.mean(dim=0), len(per_view)))
        return results

    def _grouped(self, model: LoadedModel, plans: list[ViewPlan], function) -> list[torch.Tensor]:
        """Run ``function`` over the views of every plan, one batch per view shape.

        Returns:
            The outputs of each plan's views, in plan order, on the CPU.
        """
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, plan in enumerate(plans):
            groups.setdefault(plan.views.shape[1:], []).append(index)
        outputs: list[torch.Tensor] = [torch.empty(0)] * len(plans)
        for members in groups.values():
            batch = to_float_tensor(np.concatenate([plans[i].views for i in members])).to(self.device)
            parts = torch.split(function(model, batch).cpu(), [len(plans[i].views) for i in members])
            for index, part in zip(members, parts):
                outputs[index] = part
        return outputs

    def _forward_chunks(self, model: LoadedModel, batch: torch.Tensor, function) -> torch.Tensor:
        chunk = forward_chunk(self.device, batch.shape[-2] * batch.shape[-1])
        return torch.cat([function(model, batch[i : i + chunk]) for i in range(0, len(batch), chunk)])

    def _probabilities(self, model: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
        manifest = model.manifest

        def run(model: LoadedModel, part: torch.Tensor) -> torch.Tensor:
            logits = model.module(normalise(part, manifest.mean, manifest.std))
            return torch.softmax(logits.float() / manifest.temperature, dim=1)

        return self._forward_chunks(model, batch, run)

    def _error_maps(self, model: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
        def run(model: LoadedModel, part: torch.Tensor) -> torch.Tensor:
            return l1_error_map(part, reconstruct(model.module, part))

        return self._forward_chunks(model, batch, run)


# Input pixels per forward pass on a CPU: 8 views of 160 px, 4 of 224 px, 16 of 128 px.
# Larger batches ran slower per view on a 2-core x86 CPU once their activations left the
# cache (bench/benchmark.py: the tissue model took 11.7 ms per 224 px view in batches of
# 4 and 24.5 ms in batches of 16).
CPU_FORWARD_PIXELS = 1 << 18
GPU_FORWARD_VIEWS = 64


def forward_chunk(device: torch.device, pixels_per_view: int) -> int:
    """Return how many views of ``pixels_per_view`` pixels to run per forward pass."""
    if device.type != "cpu":
        return GPU_FORWARD_VIEWS
    views = max(1, CPU_FORWARD_PIXELS // max(1, pixels_per_view))
    return 1 << (views.bit_length() - 1)


def _result_field(model: LoadedModel) -> str:
    if model.name in CLASSIFIER_KEYS:
        return model.name
    return "tissue" if model.manifest.task == "tissue" else "binary"


def _classifier_output(model: LoadedModel, probabilities: torch.Tensor, views: int) -> ClassifierOutput:
    classes = model.manifest.classes
    values = [float(v) for v in probabilities.tolist()]
    label = classes[int(np.argmax(values))]
    return ClassifierOutput(
        model=model.name,
        label=label,
        probabilities=dict(zip(classes, values)),
        temperature=float(model.manifest.temperature),
        views=views,
    )


def _add_unique(target: list[TileWarning], new: Iterable[TileWarning]) -> None:
    for warning in new:
        if warning not in target:
            target.append(warning)
