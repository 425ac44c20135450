"""Save and load model weights with the manifest that describes them.

Each model lives in one folder, ``weights/<name>/``, holding ``model.safetensors`` and
``manifest.json``. The manifest carries everything needed to use the weights correctly
(architecture, classes in logit order, input and tile size, normalisation, calibration
temperature, CAM layer) and everything needed to trust them (training data and command,
held-out metrics, the sha256 of the weights file, library versions).

Weights are read with safetensors only, so loading never unpickles anything. A wrong
sha256, an unknown schema version or a missing field rejects the model with a
:class:`~gastricvision.errors.WeightsError` naming the folder.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ModelUnavailableError, WeightsError
from .models import MODEL_SPECS, cam_target_layer_name, create_model

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "WEIGHTS_NAME",
    "LoadedModel",
    "Manifest",
    "default_weights_dir",
    "file_sha256",
    "library_versions",
    "load_model",
    "load_all",
    "read_manifest",
    "save_model",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "model.safetensors"
TASKS = ("binary", "tissue", "reconstruction")


@dataclass
class Manifest:
    """Everything that travels with one set of weights (``manifest.json``).

    Attributes:
        name: Registry name and folder name (``binary``, ``tissue``...).
        task: ``binary``, ``tissue`` or ``reconstruction``.
        architecture: timm model name or project architecture.
        classes: Class names in logit order; empty for reconstruction models.
        input_size: Side of the square network input in pixels.
        tile_size: Tile size in pixels the model was trained at (its pixel scale).
        mean: Normalisation mean per channel, for inputs scaled to [0, 1].
        std: Normalisation standard deviation per channel.
        temperature: Calibration temperature dividing the logits (1.0 = uncalibrated).
        cam_target_layer: Module name hooked for class activation maps.
        training: Data, counts, split seed, command, duration and device.
        metrics: Held-out metrics, with the split they were measured on.
        anomaly_reference: Reconstruction error percentiles over the training tiles.
        sha256: Hex digest of ``model.safetensors``.
        dtype: Storage dtype of the weights (``float16`` or ``float32``).
        versions: Library versions at training time.
        created: ISO 8601 creation time (UTC).
        schema_version: Manifest format version, checked on load.
    """

    name: str
    task: str
    architecture: str
    classes: list[str]
    input_size: int
    tile_size: int
    mean: list[float]
    std: list[float]
    temperature: float = 1.0
    cam_target_layer: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    anomaly_reference: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    dtype: str = "float32"
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> "Manifest":
        """Validate and build a manifest.

        Raises:
            WeightsError: Unknown schema version, missing or mistyped field.
        """
        if not isinstance(data, dict):
            raise WeightsError(f"{source}: the manifest must be a JSON object.")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise WeightsError(
                f"{source}: manifest schema version {version!r} is not supported (expected "
                f"{SCHEMA_VERSION}); retrain the model or update GastricVision."
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WeightsError(f"{source}: unknown manifest fields {', '.join(unknown)}.")

        required = ("name", "task", "architecture", "classes", "input_size", "tile_size", "mean", "std", "sha256")
        missing = [key for key in required if key not in data]
        if missing:
            raise WeightsError(f"{source}: manifest is missing {', '.join(missing)}.")

        manifest = cls(**data)
        manifest._check_types(source)
        return manifest

    def _check_types(self, source: str) -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if not isinstance(self.classes, list) or not all(isinstance(c, str) for c in self.classes):
            problems.append("classes must be a list of names")
        elif self.task != "reconstruction" and len(self.classes) < 2:
            problems.append("a classifier needs at least two classes")
        for key in ("input_size", "tile_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or not 8 <= value <= 4096:
                problems.append(f"{key} must be an integer from 8 to 4096, not {value!r}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
                problems.append(f"{key} must be three numbers")
        if any(v <= 0 for v in self.std if isinstance(v, (int, float))):
            problems.append("std values must be positive")
        if not isinstance(self.temperature, (int, float)) or not 0.05 <= self.temperature <= 20:
            problems.append(f"temperature must be a number from 0.05 to 20, not {self.temperature!r}")
        if not (isinstance(self.sha256, str) and len(self.sha256) == 64):
            problems.append("sha256 must be a 64-character hex digest")
        if problems:
            raise WeightsError(f"{source}: invalid manifest: {'; '.join(problems)}.")


@dataclass
class LoadedModel:
    """A network in eval mode with its manifest and folder."""

    manifest: Manifest
    module: nn.Module
    folder: Path

    @property
    def name(self) -> str:
        return self.manifest.name


def default_weights_dir() -> Path:
    """Weights folder: ``$GASTRICVISION_WEIGHTS``, else ``weights/`` beside the package."""
    configured = os.environ.get("GASTRICVISION_WEIGHTS")
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parent.parent / "weights"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import numpy
    import timm

    from . import __version__

    return {
        "gastricvision": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def save_model(
    module: nn.Module,
    folder: str | os.PathLike,
    manifest: Manifest,
    *,
    half: bool = False,
) -> Manifest:
    """Write ``model.safetensors`` and a manifest with its sha256 into ``folder``.

    Args:
        module: The network; its state dict is saved (BatchNorm counters included).
        folder: Destination, created if missing; existing files are replaced.
        manifest: Metadata; ``sha256``, ``dtype``, ``versions`` and ``created`` are filled in.
        half: Store floating-point tensors as float16 (half the size).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        state[key] = tensor

    weights_path = folder / WEIGHTS_NAME
    temporary = weights_path.with_suffix(".tmp")
    save_file(state, str(temporary), metadata={"name": manifest.name, "architecture": manifest.architecture})
    os.replace(temporary, weights_path)

    manifest.sha256 = file_sha256(weights_path)
    manifest.dtype = "float16" if half else "float32"
    manifest.versions = manifest.versions or library_versions()
    manifest.created = manifest.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if manifest.task != "reconstruction" and not manifest.cam_target_layer:
        manifest.cam_target_layer = cam_target_layer_name(manifest.architecture)
    write_manifest(manifest, folder)
    logger.info("Saved %s (%s, sha256 %s) to %s", manifest.name, manifest.architecture, manifest.sha256[:12], folder)
    return manifest


def write_manifest(manifest: Manifest, folder: str | os.PathLike) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """Read and validate ``manifest.json`` of a weights folder.

    Raises:
        ModelUnavailableError: The folder or manifest does not exist.
        WeightsError: The manifest is not valid JSON or fails validation.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ModelUnavailableError(f"{folder}: no {MANIFEST_NAME}; train the model or copy its weights folder here.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: not valid JSON ({exc}); restore the file from the release.") from None
    return Manifest.from_dict(data, source=str(path))


def load_model(folder: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Verify and load one weights folder into an eval-mode float32 network.

    Raises:
        ModelUnavailableError: Manifest or weights file missing.
        WeightsError: Invalid manifest, sha256 mismatch, or tensors that do not fit the
            declared architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest = read_manifest(folder)
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise ModelUnavailableError(f"{folder}: manifest present but {WEIGHTS_NAME} is missing; restore it.")

    digest = file_sha256(weights_path)
    if digest != manifest.sha256:
        raise WeightsError(
            f"{weights_path}: sha256 {digest[:12]}... does not match the manifest "
            f"({manifest.sha256[:12]}...); the file is corrupt or was changed. Restore it."
        )

    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{weights_path}: cannot read the safetensors file ({exc}).") from None

    module = create_model(manifest.architecture, manifest.num_classes or None)
    state = {key: value.float() if value.is_floating_point() else value for key, value in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise WeightsError(
            f"{weights_path}: tensors do not fit architecture {manifest.architecture!r} "
            f"({first_line})."
        ) from None

    module.eval().to(device)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    logger.info("Loaded %s (%s) from %s", manifest.name, manifest.architecture, folder)
    return LoadedModel(manifest, module, folder)


def load_all(
    weights_dir: str | os.PathLike | None = None,
    names: list[str] | None = None,
    *,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, LoadedModel], dict[str, str]]:
    """Load every registry model that has weights, collecting why the others failed.

    Returns:
        Loaded models by name, and a message per model that could not be loaded.
    """
    weights_dir = Path(weights_dir) if weights_dir else default_weights_dir()
    loaded: dict[str, LoadedModel] = {}
    unavailable: dict[str, str] = {}
    for name in names or list(MODEL_SPECS):
        try:
            model = load_model(weights_dir / name, device=device)
        except WeightsError as exc:
            unavailable[name] = str(exc)
            log = logger.info if isinstance(exc, ModelUnavailableError) else logger.error
            log("Model %s not loaded: %s", name, exc)
            continue
        if model.manifest.name != name:
            unavailable[name] = f"{weights_dir / name}: manifest names the model {model.manifest.name!r}, not {name!r}."
            logger.error("Model %s not loaded: %s", name, unavailable[name])
            continue
        loaded[name] = model
    return loaded, unavailable
