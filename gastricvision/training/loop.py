"""The training loop shared by every recipe.

One :class:`Trainer` runs epochs over a :class:`TrainTiles` set with a recipe-supplied
loss and validation function. It handles the device (CUDA, then MPS, then CPU),
mixed precision and channels-last memory on GPUs, data-parallel training when started
by ``torchrun`` (NCCL on GPUs, gloo on CPUs), resumable checkpoints, early stopping on a
validation metric, a wall-clock budget, a progress bar and one log line per interval.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["DistributedContext", "FitResult", "LoopConfig", "Trainer", "init_distributed", "seed_everything", "select_device"]

logger = logging.getLogger(__name__)


def select_device(requested: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; any torch device string is accepted."""
    if requested and requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            from ..errors import GastricVisionError

            raise GastricVisionError(f"--device {requested}: CUDA is not available on this machine; use --device cpu.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class DistributedContext:
    """Process group membership; ``world_size`` 1 means a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("Joined process group: rank %d of %d (%s)", rank, world_size, backend)
    return DistributedContext(rank, world_size, local_rank)


@dataclass
class LoopConfig:
    """Settings of one training run (the recipe fills the defaults).

    Attributes:
        epochs: Maximum number of epochs.
        batch_size: Samples per step and process.
        lr: Peak learning rate of AdamW (after a linear warm-up, cosine decay).
        weight_decay: AdamW weight decay.
        warmup_epochs: Length of the linear warm-up, in epochs.
        max_minutes: Wall-clock budget; training stops at the first step past it.
        patience: Epochs without improvement of the validation metric before stopping.
        seed: Seed for weights, sampling and augmentation.
        workers: Data loader processes.
        log_every: Steps between log lines.
        amp: ``auto`` (bf16 where supported, else fp16, on CUDA only), ``off``, ``bf16`` or ``fp16``.
        balance: ``sampler`` (class-balanced sampling), ``weights`` (class-weighted loss,
            applied by the recipe) or ``none``.
        out_dir: Run folder for checkpoints and history.
        resume: Continue from the checkpoint in ``out_dir`` when there is one.
    """

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    max_minutes: float | None = None
    patience: int = 5
    seed: int = 0
    workers: int = 0
    log_every: int = 20
    amp: str = "auto"
    balance: str = "sampler"
    out_dir: Path = Path("runs/run")
    resume: bool = False


@dataclass
class FitResult:
    """Summary of a finished run."""

    epochs_run: int
    best_epoch: int
    best_metric: float
    stopped_because: str
    seconds: float
    images_per_second: float
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Run epochs of ``loss_fn`` over ``train_set`` and keep the best model by ``validate``.

    Args:
        model: The network to train (moved to ``device``; wrapped for DDP when needed).
        loss_fn: ``loss_fn(model, images_uint8, labels) -> scalar loss``; images are
            ``uint8`` NCHW on the device, so each recipe normalises them its own way.
        validate: ``validate(model) -> dict`` with ``metric_name`` among its keys; run on
            the main process after every epoch.
        metric_name: Key of the validation metric used for early stopping.
        mode: ``max`` or ``min``: whether a larger metric is better.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
        validate: Callable[[nn.Module], dict],
        *,
        metric_name: str,
        mode: str,
        config: LoopConfig,
        device: torch.device,
        context: DistributedContext | None = None,
    ):
        self.config = config
        self.device = device
        self.context = context or DistributedContext()
        self.loss_fn = loss_fn
        self.validate = validate
        self.metric_name = metric_name
        self.mode = mode
        # Channels-last memory is faster for convolutions on recent GPUs and on x86 CPUs.
        self.model = model.to(device).to(memory_format=torch.channels_last)
        self.wrapped: nn.Module = self.model
        if self.context.enabled:
            device_ids = None
            if device.type == "cuda":
                device_ids = [device.index if device.index is not None else self.context.local_rank]
            self.wrapped = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.autocast_dtype = self._autocast_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)

    # ------------------------------------------------------------------ setup

    def _autocast_dtype(self) -> torch.dtype | None:
        amp = self.config.amp
        if self.device.type != "cuda" or amp == "off":
            return None
        if amp == "fp16":
            return torch.float16
        if amp == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16

    def _loader(self, train_set, labels: list[int] | None) -> DataLoader:
        config = self.config
        sampler = None
        shuffle = True
        if self.context.enabled:
            sampler = DistributedSampler(
                train_set, num_replicas=self.context.world_size, rank=self.context.rank, shuffle=True, seed=config.seed
            )
            shuffle = False
        elif config.balance == "sampler" and labels is not None:
            sampler = WeightedRandomSampler(
                _balanced_weights(labels), num_samples=len(labels), replacement=True,
                generator=torch.Generator().manual_seed(config.seed),
            )
            shuffle = False
        return DataLoader(
            train_set,
            batch_size=config.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=config.workers,
            pin_memory=self.device.type == "cuda",
            drop_last=len(train_set) > config.batch_size * self.context.world_size,
            persistent_workers=config.workers > 0,
            generator=torch.Generator().manual_seed(config.seed),
        )

    # ------------------------------------------------------------------ fit

    def fit(self, train_set, labels: list[int] | None = None) -> FitResult:
        """Train until the epoch limit, early stopping or the time budget, whichever is first.

        Args:
            train_set: A :class:`~gastricvision.training.data.TrainTiles`.
            labels: Class index per sample (-1 for unlabelled), for balanced sampling.
        """
        config = self.config
        seed_everything(config.seed + self.context.rank)
        loader = self._loader(train_set, labels)
        steps_per_epoch = max(1, len(loader))
        total_steps = steps_per_epoch * config.epochs
        warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))

        parameters = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(warmup_steps, total_steps))

        state = {"epoch": 0, "best_metric": None, "best_epoch": 0, "bad_epochs": 0, "history": [], "elapsed": 0.0}
        best_state: dict[str, torch.Tensor] | None = None
        if config.resume:
            restored = load_checkpoint(config.out_dir, self.model, optimizer, scheduler, self.device)
            if restored is not None:
                state.update(restored["state"])
                best_state = restored["best_model"]
                logger.info("Resumed from %s at epoch %d", config.out_dir, state["epoch"])

        start = time.monotonic() - state["elapsed"]
        images_seen = 0
        compute_seconds = 0.0
        stopped = "epoch limit"
        budget = config.max_minutes * 60 if config.max_minutes else math.inf

        for epoch in range(state["epoch"] + 1, config.epochs + 1):
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            if isinstance(loader.sampler, DistributedSampler):
                loader.sampler.set_epoch(epoch)

            epoch_loss, epoch_images, epoch_seconds, out_of_time = self._run_epoch(
                loader, optimizer, scheduler, epoch, steps_per_epoch, total_steps, start, budget
            )
            images_seen += epoch_images
            compute_seconds += epoch_seconds

            record = {"epoch": epoch, "train_loss": epoch_loss, "lr": scheduler.get_last_lr()[0], "seconds": round(time.monotonic() - start, 1)}
            metrics = self._validate_on_main()
            record.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
            metric = metrics.get(self.metric_name)
            improved = _improved(metric, state["best_metric"], self.mode)
            if improved:
                state.update(best_metric=metric, best_epoch=epoch, bad_epochs=0)
                best_state = {k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()}
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            state["history"].append(record)
            state["elapsed"] = time.monotonic() - start

            if self.context.is_main:
                logger.info(
                    "epoch %d/%d done: train loss %.4f, val %s %s%s, elapsed %s",
                    epoch, config.epochs, epoch_loss, self.metric_name,
                    f"{metric:.4f}" if metric is not None else "n/a",
                    " (best)" if improved else "", _clock(state["elapsed"]),
                )
                save_checkpoint(config.out_dir, self.model, optimizer, scheduler, state, best_state)
                _write_history(config.out_dir, state["history"])

            if out_of_time:
                stopped = f"time budget of {config.max_minutes:g} min"
                break
            if state["bad_epochs"] >= config.patience:
                stopped = f"no improvement of val {self.metric_name} for {config.patience} epochs"
                break

        if best_state is not None:
            self.model.load_state_dict(best_state)
        seconds = time.monotonic() - start
        rate = images_seen * self.context.world_size / compute_seconds if compute_seconds else 0.0
        logger.info("Training stopped (%s) after %s; best val %s %.4f at epoch %d",
                    stopped, _clock(seconds), self.metric_name, state["best_metric"] or float("nan"), state["best_epoch"])
        return FitResult(
            epochs_run=state["epoch"],
            best_epoch=state["best_epoch"],
            best_metric=float(state["best_metric"]) if state["best_metric"] is not None else float("nan"),
            stopped_because=stopped,
            seconds=seconds,
            images_per_second=rate,
            history=state["history"],
        )

    def _run_epoch(self, loader, optimizer, scheduler, epoch, steps_per_epoch, total_steps, start, budget):
        from tqdm import tqdm

        self.wrapped.train()
        config = self.config
        total_loss, count, images = 0.0, 0, 0
        interval_images, interval_start = 0, time.monotonic()
        epoch_start = time.monotonic()
        out_of_time = False
        bar = tqdm(
            total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", unit="step",
            disable=not self.context.is_main, leave=False, dynamic_ncols=True,
        )
        for step, (images_u8, labels) in enumerate(loader, start=1):
            images_u8 = images_u8.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            images_u8 = images_u8.contiguous(memory_format=torch.channels_last)

            with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                loss = self.loss_fn(self.wrapped, images_u8, labels)
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.scaler.step(optimizer)
            self.scaler.update()
            scheduler.step()

            batch = images_u8.shape[0]
            total_loss += float(loss.detach()) * batch
            count += batch
            images += batch
            interval_images += batch
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / count:.4f}")

            elapsed = time.monotonic() - start
            if self.context.is_main and (step % config.log_every == 0 or step == steps_per_epoch):
                now = time.monotonic()
                rate = interval_images * self.context.world_size / max(now - interval_start, 1e-9)
                done = (epoch - 1) * steps_per_epoch + step
                eta = (now - epoch_start) / step * (total_steps - done)
                eta = min(eta, max(0.0, budget - elapsed))
                logger.info(
                    "epoch %d step %d/%d loss %.4f lr %.2e images/s %.1f elapsed %s eta %s",
                    epoch, step, steps_per_epoch, total_loss / count, scheduler.get_last_lr()[0],
                    rate, _clock(elapsed), _clock(eta),
                )
                interval_images, interval_start = 0, now
            if elapsed > budget:
                out_of_time = True
                break
        bar.close()
        if self.context.enabled:
            # Every rank must stop at the same epoch when any one ran out of time.
            flag = torch.tensor([1.0 if out_of_time else 0.0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        return total_loss / max(count, 1), images, time.monotonic() - epoch_start, out_of_time

    def _validate_on_main(self) -> dict:
        metrics: dict = {}
        if self.context.is_main:
            self.model.eval()
            metrics = self.validate(self.model)
            self.model.train()
        if self.context.enabled:
            holder = [metrics]
            dist.broadcast_object_list(holder, src=0)
            metrics = holder[0]
        return metrics


def _balanced_weights(labels: list[int]) -> torch.Tensor:
    """Sampling weight per sample so that every class is drawn equally often.

    Unlabelled samples (-1) count as one more class of their own.
    """
    labels_array = np.asarray(labels)
    values, counts = np.unique(labels_array, return_counts=True)
    per_class = {int(v): 1.0 / c for v, c in zip(values, counts)}
    return torch.tensor([per_class[int(v)] for v in labels_array], dtype=torch.double)


def _warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _improved(metric, best, mode: str) -> bool:
    if metric is None or (isinstance(metric, float) and math.isnan(metric)):
        return best is None
    if best is None:
        return True
    return metric > best + 1e-6 if mode == "max" else metric < best - 1e-6


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _write_history(out_dir: Path, history: list[dict]) -> None:
    import csv

    out_dir = Path(out_dir)
    (out_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    keys = sorted({key for row in history for key in row}, key=lambda k: (k != "epoch", k))
    with (out_dir / "history.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
