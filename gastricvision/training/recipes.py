"""Training recipes: one per model, sharing the data pipeline, loop and export.

``binary``
    Normal vs Abnormal classifier; ResNet-18 by default, any timm architecture by flag.
``tissue``
    Eight-class GCHTID tissue classifier, ``tf_efficientnet_lite0`` from ImageNet weights.
``distill``
    The ``student`` model: a smaller network learning from the binary model's softened
    outputs (Hinton et al. 2015) plus the hard labels; unlabelled tiles add soft targets.
``autoencoder``
    Convolutional autoencoder, L1 plus SSIM reconstruction loss.
``unet``
    U-Net trained to restore randomly masked patches (see
    :mod:`gastricvision.reconstruction`), so that its error map is not trivially zero.

Every run writes to one folder: the split CSV, checkpoints, ``history.csv``,
``metrics.json`` and an exported weights folder with a complete manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets import BINARY_CLASSES, TISSUE_CLASSES, expand_crops, make_splits, open_datasets, parse_class_map, save_splits
from ..errors import GastricVisionError
from ..evaluation import classifier_logits, split_note, reconstruction_report, reconstruction_scores, scored_report
from ..metrics import fit_temperature
from ..models import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, MODEL_SPECS, create_model
from ..preprocessing import normalise
from ..reconstruction import mask_input, random_masks, reconstruct, reference_percentiles, ssim_error_map
from ..weights import Manifest, load_model, save_model, write_manifest
from .augment import AugmentConfig
from .data import TrainTiles, default_workers
from .loop import LoopConfig, Trainer, init_distributed, select_device

__all__ = ["RECIPES", "Recipe", "add_arguments", "run_recipe"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """Defaults of one training command.

    Attributes:
        command: Sub-command name (``binary``, ``tissue``, ``distill``...).
        model_name: Registry name of the model it produces.
        epochs: Default epoch limit.
        lr: Default peak learning rate.
        batch_size: Default batch size per process.
        stain_sigma: Stain jitter strength for this model.
    """

    command: str
    model_name: str
    epochs: int
    lr: float
    batch_size: int
    stain_sigma: float = 0.05


RECIPES = {
    recipe.command: recipe
    for recipe in (
        Recipe("binary", "binary", epochs=30, lr=1e-3, batch_size=64),
        Recipe("tissue", "tissue", epochs=30, lr=1e-3, batch_size=48),
        Recipe("distill", "student", epochs=40, lr=2e-3, batch_size=64),
        Recipe("autoencoder", "autoencoder", epochs=60, lr=2e-3, batch_size=32, stain_sigma=0.02),
        Recipe("unet", "unet", epochs=60, lr=2e-3, batch_size=32, stain_sigma=0.02),
    )
}


# --------------------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser, recipe: Recipe) -> None:
    """Add the options of ``recipe`` to ``parser``."""
    spec = MODEL_SPECS[recipe.model_name]
    data = parser.add_argument_group("data")
    data.add_argument("--data", action="append", required=True, metavar="ROOT", help="dataset folder; repeat for several")
    data.add_argument("--size", type=int, metavar="PX", help="GasHisSDB sub-database to read (160, 120 or 80)")
    data.add_argument("--class-map", metavar="MAP", help="class map name (nct-crc-he, gi-binary) or SOURCE=TARGET pairs")
    data.add_argument("--tile-size", type=int, default=spec.tile_size, metavar="PX", help=f"training tile size in pixels (default {spec.tile_size})")
    data.add_argument("--input-size", type=int, default=spec.input_size, metavar="PX", help=f"network input size in pixels (default {spec.input_size})")
    data.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split (default 0)")
    data.add_argument("--fractions", default="0.7,0.15,0.15", metavar="T,V,T", help="train,val,test fractions")
    data.add_argument("--limit", type=int, metavar="N", help="use at most N training crops (quick checks)")
    data.add_argument("--data-note", metavar="TEXT", help="sentence on the data for the manifest (e.g. that it is stand-in data)")

    model = parser.add_argument_group("model")
    model.add_argument("--arch", default=spec.architecture, help=f"architecture (default {spec.architecture})")
    model.add_argument("--imagenet", action=argparse.BooleanOptionalAction, default=None,
                       help="start from ImageNet weights (default: yes for tf_efficientnet_lite0, the only offline ImageNet weights)")
    model.add_argument("--freeze", metavar="PREFIXES",
                       help="comma-separated module name prefixes whose weights stay fixed (default with ImageNet "
                            f"weights: {LITE0_FROZEN}; 'none' trains everything)")
    if recipe.command == "distill":
        model.add_argument("--teacher", default="weights/binary", metavar="DIR", help="weights folder of the teacher (default weights/binary)")
        model.add_argument("--unlabelled", action="append", default=[], metavar="ROOT", help="folder of extra unlabelled tiles (any layout); repeatable")
        model.add_argument("--alpha", type=float, default=0.7, help="weight of the distillation loss; 1 - alpha weighs the hard labels (default 0.7)")
        model.add_argument("--kd-temperature", type=float, default=4.0, help="softmax temperature of the soft targets (default 4)")
    if recipe.command == "unet":
        model.add_argument("--mask-ratio", type=float, default=0.35, help="mean fraction of patches hidden per training tile (default 0.35)")

    loop = parser.add_argument_group("training")
    loop.add_argument("--epochs", type=int, default=recipe.epochs, help=f"maximum epochs (default {recipe.epochs})")
    loop.add_argument("--batch-size", type=int, default=recipe.batch_size, help=f"samples per step and process (default {recipe.batch_size})")
    loop.add_argument("--lr", type=float, default=recipe.lr, help=f"peak learning rate (default {recipe.lr:g})")
    loop.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    loop.add_argument("--max-minutes", type=float, metavar="MIN", help="wall-clock budget in minutes")
    loop.add_argument("--patience", type=int, default=8, help="epochs without validation improvement before stopping (default 8)")
    loop.add_argument("--seed", type=int, default=0, help="seed of weights, sampling and augmentation (default 0)")
    loop.add_argument("--balance", choices=("sampler", "weights", "none"), default="sampler",
                      help="class imbalance handling: balanced sampling, class-weighted loss or none (default sampler)")
    loop.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    loop.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto", help="mixed precision on CUDA (default auto)")
    loop.add_argument("--workers", type=int, default=default_workers(), help="data loader processes")
    loop.add_argument("--log-every", type=int, default=20, metavar="STEPS", help="steps between log lines (default 20)")

    output = parser.add_argument_group("output")
    output.add_argument("--out", metavar="DIR", help="run folder (default runs/<model>-<time>)")
    output.add_argument("--export", metavar="DIR", help="weights folder to write (default <run folder>/weights/<model>)")
    output.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    output.add_argument("--half", action="store_true", help="store float16 weights when that costs no test accuracy (half the size)")


# --------------------------------------------------------------------------- recipe pieces


# With ImageNet weights, the stem and the first three of seven stages of EfficientNet-Lite0
# stay fixed: their generic edge and texture filters need no retraining on a few hundred
# tiles, and skipping their backward pass at high resolution halves the step time on a CPU.
LITE0_FROZEN = "conv_stem,bn1,blocks.0,blocks.1,blocks.2"


def _freeze(model: torch.nn.Module, text: str | None, imagenet: bool, architecture: str) -> list[str]:
    if text is None:
        text = LITE0_FROZEN if imagenet and architecture == "tf_efficientnet_lite0" else "none"
    prefixes = [p.strip() for p in text.split(",") if p.strip() and p.strip() != "none"]
    frozen = []
    for name, parameter in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    if prefixes and not frozen:
        raise GastricVisionError(f"--freeze {text!r} matches no parameter of {architecture}; check the module names.")
    if frozen:
        logger.info("Frozen %d parameter tensors (%s)", len(frozen), ", ".join(prefixes))
    return prefixes


def _imagenet_default(args) -> bool:
    return args.arch == "tf_efficientnet_lite0" if args.imagenet is None else args.imagenet


def _normalisation(architecture: str, reconstruction: bool) -> tuple[tuple, tuple]:
    if reconstruction:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if architecture.startswith("tf_"):
        return LITE_MEAN, LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


def _as_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div_(255.0)


def classification_loss(mean, std, class_weights: torch.Tensor | None, label_smoothing: float = 0.05):
    def loss_fn(model, images_u8, labels):
        logits = model(normalise(_as_float(images_u8), mean, std))
        weight = class_weights.to(logits.device) if class_weights is not None else None
        return F.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=label_smoothing)

    return loss_fn


def distillation_loss(teacher, teacher_manifest: Manifest, mean, std, alpha: float, temperature: float, input_size: int):
    """KL divergence to the teacher's softened outputs on every tile, plus cross-entropy
    on the labelled ones (label -1 marks unlabelled tiles)."""

    def loss_fn(model, images_u8, labels):
        images = _as_float(images_u8)
        with torch.no_grad():
            teacher_input = images
            if teacher_manifest.input_size != input_size:
                size = (teacher_manifest.input_size,) * 2
                teacher_input = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
            teacher_logits = teacher(normalise(teacher_input, teacher_manifest.mean, teacher_manifest.std)).float()
        logits = model(normalise(images, mean, std)).float()
        soft = F.kl_div(
            F.log_softmax(logits / temperature, dim=1),
            F.log_softmax(teacher_logits / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        ) * temperature**2
        labelled = labels >= 0
        hard = F.cross_entropy(logits[labelled], labels[labelled]) if labelled.any() else logits.sum() * 0.0
        return alpha * soft + (1 - alpha) * hard

    return loss_fn


def autoencoder_loss():
    def loss_fn(model, images_u8, labels):
        images = _as_float(images_u8)
        output = model(images).float()
        return F.l1_loss(output, images) + 0.5 * ssim_error_map(images, output).mean()

    return loss_fn


def unet_loss(mask_ratio: float):
    """L1 error on the hidden patches (what the U-Net must predict), plus a small weight
    on the visible pixels so that the output stays a full image."""

    def loss_fn(model, images_u8, labels):
        images = _as_float(images_u8)
        ratio = float(np.clip(np.random.uniform(mask_ratio - 0.1, mask_ratio + 0.1), 0.1, 0.7))
        masks = random_masks(images.shape[0], images.shape[-1], ratio=ratio).to(images.device)
        output = model(mask_input(images, masks)).float()
        error = (output - images).abs().mean(dim=1, keepdim=True)
        hidden = (error * masks).sum() / masks.sum().clamp_min(1.0)
        visible = (error * (1 - masks)).sum() / (1 - masks).sum().clamp_min(1.0)
        return hidden + 0.1 * visible

    return loss_fn


# --------------------------------------------------------------------------- run


def _parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise GastricVisionError(f"Invalid --fractions {text!r}: give three numbers such as 0.7,0.15,0.15.")
    return values  # type: ignore[return-value]


def _counts(records) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        key = record.label or "unlabelled"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def run_recipe(recipe: Recipe, args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Train, evaluate and export one model; returns the metrics written to the manifest."""
    started = time.monotonic()
    device = select_device(args.device)
    context = init_distributed(device)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    spec = MODEL_SPECS[recipe.model_name]
    reconstruction = spec.task == "reconstruction"

    out_dir = Path(args.out or f"runs/{recipe.model_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.resume and not args.out:
        raise GastricVisionError("--resume needs --out, the run folder to continue.")
    export_dir = Path(args.export) if args.export else out_dir / "weights" / recipe.model_name
    fractions = _parse_fractions(args.fractions)

    # Data: open, split by source file (crops of one image stay in one split), crop.
    teacher = None
    if recipe.command == "distill":
        teacher = load_model(args.teacher, device=device)
        classes = list(teacher.manifest.classes)
    else:
        classes = None if reconstruction else list(spec.classes)
    records = open_datasets(args.data, size=args.size, class_map=args.class_map, classes=classes)
    splits = make_splits(records, seed=args.split_seed, fractions=fractions)
    if context.is_main:
        save_splits(splits, out_dir / "split.csv", seed=args.split_seed, fractions=fractions)
    crops = {name: expand_crops(items, args.tile_size) for name, items in splits.items()}
    train_records = list(crops["train"])
    if recipe.command == "distill" and args.unlabelled:
        # Every image of the unlabelled folders joins training, except files that are
        # already in the labelled validation or test splits.
        held_out = {r.path.resolve() for name in ("val", "test") for r in splits[name]}
        extra = [r for r in open_datasets(args.unlabelled) if r.path.resolve() not in held_out]
        extra = [dataclasses.replace(r, label=None) for r in expand_crops(extra, args.tile_size)]
        train_records += extra
        logger.info("Added %d unlabelled training crops from %s", len(extra), ", ".join(args.unlabelled))
    if args.limit:
        rng = np.random.default_rng(args.seed)
        train_records = [train_records[i] for i in sorted(rng.choice(len(train_records), min(args.limit, len(train_records)), replace=False))]
    logger.info("Training crops: %d; validation: %d; test: %d", len(train_records), len(crops["val"]), len(crops["test"]))

    # Model and loss.
    num_classes = None if reconstruction else len(classes)
    imagenet = _imagenet_default(args) and not reconstruction
    mean, std = _normalisation(args.arch, reconstruction)
    torch.manual_seed(args.seed)
    model = create_model(args.arch, num_classes, imagenet=imagenet)
    frozen = _freeze(model, args.freeze, imagenet, args.arch)
    label_classes = classes or []
    train_set = TrainTiles(
        train_records, label_classes, tile_size=args.tile_size, input_size=args.input_size,
        augment=AugmentConfig(stain_sigma=recipe.stain_sigma), seed=args.seed,
    )
    labels = [train_set.label_of(r) for r in train_records]
    class_weights = None
    if args.balance == "weights" and not reconstruction:
        counts = np.bincount([l for l in labels if l >= 0], minlength=len(label_classes)).astype(np.float64)
        class_weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(label_classes), dtype=torch.float32)

    if recipe.command == "distill":
        loss_fn = distillation_loss(teacher.module, teacher.manifest, mean, std, args.alpha, args.kd_temperature, args.input_size)
    elif recipe.command == "autoencoder":
        loss_fn = autoencoder_loss()
    elif recipe.command == "unet":
        loss_fn = unet_loss(args.mask_ratio)
    else:
        loss_fn = classification_loss(mean, std, class_weights)

    def validate(module) -> dict:
        if reconstruction:
            scores = reconstruction_scores(module, crops["val"], tile_size=args.tile_size, input_size=args.input_size, device=device)
            return {"mean_error": float(scores.mean()) if len(scores) else float("nan")}
        view_logits, val_labels = classifier_logits(
            module, crops["val"], label_classes, tile_size=args.tile_size, input_size=args.input_size,
            mean=mean, std=std, device=device,
        )
        report = scored_report(view_logits, val_labels, label_classes, 1.0)
        return {key: report[key] for key in ("accuracy", "balanced_accuracy", "macro_f1") } | {"auroc": report["auroc"] or float("nan")}

    config = LoopConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        max_minutes=args.max_minutes, patience=args.patience, seed=args.seed, workers=args.workers,
        log_every=args.log_every, amp=args.amp, balance="none" if reconstruction else args.balance,
        out_dir=out_dir, resume=args.resume,
    )
    trainer = Trainer(
        model, loss_fn, validate,
        metric_name="mean_error" if reconstruction else "balanced_accuracy",
        mode="min" if reconstruction else "max",
        config=config, device=device, context=context,
    )
    fit = trainer.fit(train_set, labels=None if reconstruction else labels)

    if context.enabled:
        import torch.distributed as dist

        dist.barrier()
    if not context.is_main:
        return {}

    command = "gastricvision train " + recipe.command + " " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    training = {
        "datasets": [str(root) for root in args.data] + [f"{root} (unlabelled)" for root in getattr(args, "unlabelled", [])],
        "data_roots": [str(root) for root in args.data],
        "data_note": args.data_note or "",
        "class_map": parse_class_map(args.class_map) if args.class_map else None,
        "size": args.size,
        "classes_kept": classes,
        "tile_size": args.tile_size,
        "split_seed": args.split_seed,
        "split_fractions": list(fractions),
        "split_level": "tile (source image); no patient or slide IDs",
        "counts": {name: _counts(items) for name, items in crops.items()},
        "source_images": {name: len(items) for name, items in splits.items()},
        "train_crops_used": len(train_records),
        "imagenet_init": imagenet,
        "frozen": frozen,
        "command": command.strip(),
        "device": str(device) + (f" x{context.world_size}" if context.enabled else ""),
        "epochs_run": fit.epochs_run,
        "best_epoch": fit.best_epoch,
        "stopped_because": fit.stopped_because,
        "training_seconds": round(fit.seconds, 1),
        "images_per_second": round(fit.images_per_second, 1),
        "seed": args.seed,
    }
    if teacher is not None:
        training["teacher"] = {
            "name": teacher.manifest.name, "architecture": teacher.manifest.architecture,
            "sha256": teacher.manifest.sha256, "alpha": args.alpha, "kd_temperature": args.kd_temperature,
        }
    manifest = Manifest(
        name=recipe.model_name, task=spec.task, architecture=args.arch, classes=label_classes,
        input_size=args.input_size, tile_size=args.tile_size, mean=list(mean), std=list(std),
        training=training,
    )
    model = trainer.model.cpu().eval()
    save_model(model, export_dir, manifest, half=False)
    metrics = finish_export(export_dir, crops, args, half=args.half)
    metrics["total_seconds"] = round(time.monotonic() - started, 1)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("Exported %s to %s", recipe.model_name, export_dir)
    return metrics


def finish_export(export_dir: Path, crops: dict, args, *, half: bool) -> dict:
    """Measure the exported weights and complete the manifest: temperature, metrics,
    anomaly reference. With ``half``, keep float16 weights only if they cost no accuracy."""
    loaded = load_model(export_dir)
    if half:
        # Only the test split decides; the full measurement below runs once, on the kept weights.
        full_test = _measure_test(loaded, crops)
        save_model(loaded.module, export_dir, loaded.manifest, half=True)
        halved = load_model(export_dir)
        if _same_predictions(full_test, _measure_test(halved, crops)):
            loaded = halved
            logger.info("Stored float16 weights: they cost no test accuracy")
        else:
            logger.warning("Keeping float32 weights: float16 lowered test accuracy or AUROC")
            save_model(loaded.module, export_dir, loaded.manifest, half=False)
            loaded = load_model(export_dir)

    metrics = _measure(loaded, crops)
    manifest = loaded.manifest
    manifest.metrics = metrics["metrics"]
    manifest.temperature = metrics["temperature"]
    manifest.anomaly_reference = metrics.get("anomaly_reference", {})
    write_manifest(manifest, export_dir)
    return {"metrics": manifest.metrics, "temperature": manifest.temperature, "export": str(export_dir)}


def remeasure_manifest(folder: str | Path, roots: list[str] | None = None) -> dict:
    """Recompute the metrics (and temperature, anomaly reference) of a weights folder.

    The split is rebuilt from the manifest as ``gastricvision evaluate`` does; the weights
    are not changed, only ``manifest.json``. Use it after a change to how tiles are
    scored, so that the manifest describes what the predictor now returns.
    """
    from ..evaluation import rebuild_split

    folder = Path(folder)
    loaded = load_model(folder)
    manifest = loaded.manifest
    training = dict(manifest.training)
    training.setdefault("tile_size", manifest.tile_size)
    crops = rebuild_split(training, roots)
    metrics = _measure(loaded, crops)
    manifest.metrics = metrics["metrics"]
    manifest.temperature = metrics["temperature"]
    manifest.anomaly_reference = metrics.get("anomaly_reference", {})
    manifest.training["remeasured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_manifest(manifest, folder)
    logger.info("Rewrote the metrics of %s", folder)
    return manifest.metrics


# Training crops scored for the anomaly reference. Evenly spaced over the sorted training
# crops, 1,000 place the percentiles within about 1.5 points and keep the export of a
# U-Net (four masked passes per crop) to minutes on a CPU.
REFERENCE_CROPS = 1000


def _measure_test(loaded, crops: dict) -> dict:
    """Test-split figures of ``loaded`` without temperature scaling, for comparisons."""
    manifest = loaded.manifest
    if manifest.task == "reconstruction":
        scores = reconstruction_scores(loaded.module, crops["test"], tile_size=manifest.tile_size, input_size=manifest.input_size)
        return {"metrics": {"test": reconstruction_report(scores, crops["test"])}}
    logits, labels = classifier_logits(
        loaded.module, crops["test"], manifest.classes, tile_size=manifest.tile_size,
        input_size=manifest.input_size, mean=manifest.mean, std=manifest.std,
    )
    return {"metrics": {"test": scored_report(logits, labels, manifest.classes, 1.0)}}


def _measure(loaded, crops: dict) -> dict:
    manifest = loaded.manifest
    module = loaded.module
    if manifest.task == "reconstruction":
        kwargs = dict(tile_size=manifest.tile_size, input_size=manifest.input_size)
        train = crops["train"]
        if len(train) > REFERENCE_CROPS:
            train = [train[i] for i in np.linspace(0, len(train) - 1, REFERENCE_CROPS).round().astype(int)]
        train_scores = reconstruction_scores(module, train, **kwargs)
        test_scores = reconstruction_scores(module, crops["test"], **kwargs)
        val_scores = reconstruction_scores(module, crops["val"], **kwargs)
        return {
            "temperature": 1.0,
            "anomaly_reference": reference_percentiles(train_scores),
            "metrics": {
                "split_level": "tile",
                "note": split_note(manifest.training),
                "test": reconstruction_report(test_scores, crops["test"]),
                "val": reconstruction_report(val_scores, crops["val"]),
            },
        }

    kwargs = dict(tile_size=manifest.tile_size, input_size=manifest.input_size, mean=manifest.mean, std=manifest.std)
    val_logits, val_labels = classifier_logits(module, crops["val"], manifest.classes, **kwargs)
    temperature = fit_temperature(val_logits, val_labels)
    test_logits, test_labels = classifier_logits(module, crops["test"], manifest.classes, **kwargs)
    test = scored_report(test_logits, test_labels, manifest.classes, temperature)
    val = scored_report(val_logits, val_labels, manifest.classes, temperature)
    return {
        "temperature": temperature,
        "metrics": {
            "split_level": "tile",
            "note": split_note(manifest.training),
            "test": test,
            "val": {key: val[key] for key in ("count", "accuracy", "balanced_accuracy", "macro_f1", "auroc", "ece_before_temperature", "ece_after_temperature")},
        },
    }


def _same_predictions(full: dict, half: dict) -> bool:
    """Check that float16 weights cost no accuracy.

    Test balanced accuracy and AUROC may drop by at most 0.002 (under one tile in 500),
    and the reconstruction error may rise by at most 0.1 %.
    """
    a, b = full["metrics"]["test"], half["metrics"]["test"]
    if "balanced_accuracy" in a:
        tolerance = 0.002
        if b["balanced_accuracy"] < a["balanced_accuracy"] - tolerance:
            return False
        return a["auroc"] is None or b["auroc"] >= a["auroc"] - tolerance
    return b["mean_error"] <= a["mean_error"] * 1.001 + 1e-6
