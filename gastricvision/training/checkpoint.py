"""Resumable training checkpoints without pickle.

A checkpoint is two files in the run folder: ``checkpoint.safetensors`` with every
tensor (model, best model so far, optimiser state) and ``checkpoint.json`` with the
rest (optimiser hyper-parameters, scheduler state, epoch, best metric, history).
Keeping pickle out means a checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["CHECKPOINT_JSON", "CHECKPOINT_TENSORS", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"


def save_checkpoint(out_dir, model: nn.Module, optimizer, scheduler, state: dict, best_model: dict | None) -> Path:
    """Write the checkpoint atomically (temporary files, then rename)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        tensors[f"model/{key}"] = value.detach().cpu().contiguous()
    for key, value in (best_model or {}).items():
        tensors[f"best/{key}"] = value.detach().cpu().contiguous()

    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{name}"] = value.detach().cpu().contiguous()

    meta = {
        "state": state,
        "optimizer_param_groups": optimizer_state["param_groups"],
        "optimizer_scalars": {
            str(index): {name: value for name, value in values.items() if not isinstance(value, torch.Tensor)}
            for index, values in optimizer_state["state"].items()
        },
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "has_best": best_model is not None,
    }

    tensor_path = out_dir / CHECKPOINT_TENSORS
    json_path = out_dir / CHECKPOINT_JSON
    save_file(tensors, str(tensor_path) + ".tmp")
    json_path.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=1, default=float))
    os.replace(str(tensor_path) + ".tmp", tensor_path)
    os.replace(json_path.with_suffix(".json.tmp"), json_path)
    return tensor_path


def load_checkpoint(out_dir, model: nn.Module, optimizer, scheduler, device) -> dict | None:
    """Restore model, optimiser and scheduler in place from ``out_dir``.

    Returns:
        ``{"state": ..., "best_model": ...}``, or None when the folder has no checkpoint.
    """
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    tensor_path, json_path = out_dir / CHECKPOINT_TENSORS, out_dir / CHECKPOINT_JSON
    if not (tensor_path.is_file() and json_path.is_file()):
        logger.info("No checkpoint in %s; starting from scratch", out_dir)
        return None

    tensors = load_file(str(tensor_path))
    meta = json.loads(json_path.read_text())

    model.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
    best = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")} if meta.get("has_best") else None

    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value.to(device)
    for index, scalars in meta["optimizer_scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
    scheduler_state = dict(meta["scheduler"])
    scheduler_state["lr_lambdas"] = [None] * len(optimizer.param_groups)
    scheduler.load_state_dict(scheduler_state)
    return {"state": meta["state"], "best_model": best}
