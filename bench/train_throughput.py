"""Training throughput (images/s) of every GastricVision model on this machine.

Run from the repository root:

    .venv/bin/python bench/train_throughput.py [--device auto] [--batch-size 32]

Each model takes optimiser steps on random tiles at its registry input size, with the
loss, mixed precision and memory format its training recipe uses (the student's steps
include the teacher's forward pass). Data loading is left out, so the figure is the
upper bound a run can reach; compare it with the ``images/s`` of the training log lines
to see whether loading limits a run.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from gastricvision.models import MODEL_SPECS, create_model
from gastricvision.training.loop import LoopConfig, Trainer, select_device
from gastricvision.training.recipes import (
    LITE0_FROZEN,
    _freeze,
    _normalisation,
    autoencoder_loss,
    classification_loss,
    distillation_loss,
    unet_loss,
)
from gastricvision.weights import Manifest

# Architectures as the shipped weights use them; the recipe defaults are the registry's.
SHIPPED_ARCHITECTURES = {"binary": "tf_efficientnet_lite0", "student": "resnet18"}


def build(name: str, device: torch.device, architecture: str | None):
    spec = MODEL_SPECS[name]
    architecture = architecture or spec.architecture
    reconstruction = spec.task == "reconstruction"
    mean, std = _normalisation(architecture, reconstruction)
    model = create_model(architecture, None if reconstruction else len(spec.classes), imagenet=False)
    if architecture == "tf_efficientnet_lite0":
        _freeze(model, LITE0_FROZEN, True, architecture)

    if name == "student":
        teacher_arch = SHIPPED_ARCHITECTURES["binary"]
        teacher = create_model(teacher_arch, 2).eval().to(device).to(memory_format=torch.channels_last)
        teacher_mean, teacher_std = _normalisation(teacher_arch, False)
        teacher_manifest = Manifest(
            name="binary", task="binary", architecture=teacher_arch, classes=["Normal", "Abnormal"],
            input_size=spec.input_size, tile_size=spec.tile_size, mean=list(teacher_mean), std=list(teacher_std),
            sha256="0" * 64,
        )
        loss = distillation_loss(teacher, teacher_manifest, mean, std, 0.7, 4.0, spec.input_size)
    elif name == "autoencoder":
        loss = autoencoder_loss()
    elif name == "unet":
        loss = unet_loss(0.35)
    else:
        loss = classification_loss(mean, std, None)
    return model, loss, spec, architecture


def measure(name: str, device: torch.device, batch_size: int, steps: int, architecture: str | None) -> tuple[str, float]:
    model, loss_fn, spec, architecture = build(name, device, architecture)
    trainer = Trainer(
        model, loss_fn, lambda module: {}, metric_name="none", mode="max",
        config=LoopConfig(batch_size=batch_size), device=device,
    )
    optimizer = torch.optim.AdamW([p for p in trainer.model.parameters() if p.requires_grad], lr=1e-4)
    images = torch.randint(0, 256, (batch_size, 3, spec.input_size, spec.input_size), dtype=torch.uint8, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, max(1, len(spec.classes)), (batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=trainer.autocast_dtype, enabled=trainer.autocast_dtype is not None):
            loss = loss_fn(trainer.model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(optimizer)
        trainer.scaler.update()

    trainer.model.train()
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return architecture, steps * batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (default 5)")
    parser.add_argument("--models", default=",".join(MODEL_SPECS), help="comma-separated registry names")
    parser.add_argument("--recipe-architectures", action="store_true",
                        help="use the registry's default architectures instead of the shipped ones")
    args = parser.parse_args(argv)

    device = select_device(args.device)
    name_of_device = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device {device} ({name_of_device}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch_size}")
    for name in args.models.split(","):
        architecture = None if args.recipe_architectures else SHIPPED_ARCHITECTURES.get(name)
        used, rate = measure(name, device, args.batch_size, args.steps, architecture)
        size = MODEL_SPECS[name].input_size
        print(f"  {name:<12} {used:<22} {size} px  {rate:8.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
