"""A training run's own checkpoints: trainable weights + the whole config (safetensors),
and the optimiser state beside them, written atomically; strict loading with a key report."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from reinlite.weights import CheckpointError, _mismatch_report

CKPT_NAME = "checkpoint.safetensors"
OPTIM_NAME = "optimizer.pt"
FORMAT = "reinlite-train-v2"


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The parameters that train (Rein / the baseline's, and the head): what a run saves."""
    return {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}


def save_run_checkpoint(out_dir: str | os.PathLike, model: nn.Module, optimizer, step: int,
                        config: dict) -> Path:
    """Write ``checkpoint.safetensors`` (trainable weights; metadata: format, step, the whole
    config as JSON, so the model can be rebuilt from the file alone) and ``optimizer.pt``
    (optimiser state + step), each atomically (temp file + rename). Returns the weights path."""
    import json

    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.cpu().contiguous() for k, v in trainable_state_dict(model).items()}
    meta = {"format": FORMAT, "step": str(step), "config": json.dumps(config)}
    tmp_w, tmp_o = out_dir / (CKPT_NAME + ".tmp"), out_dir / (OPTIM_NAME + ".tmp")
    save_file(weights, str(tmp_w), metadata=meta)
    if optimizer is not None:
        torch.save({"step": step, "optimizer": optimizer.state_dict()}, tmp_o)
        os.replace(tmp_o, out_dir / OPTIM_NAME)
    os.replace(tmp_w, out_dir / CKPT_NAME)
    return out_dir / CKPT_NAME


def read_run_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """(weights, metadata) of a run's checkpoint (the file, or its run folder)."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / CKPT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from err
    return weights, meta


def read_optimizer_state(weights_path: str | os.PathLike, step: int) -> dict:
    """The optimiser state saved beside ``weights_path``; it must be of the same ``step``."""
    opt_path = Path(weights_path).with_name(OPTIM_NAME)
    if not opt_path.is_file():
        raise FileNotFoundError(f"{opt_path} is missing: a run folder holds {CKPT_NAME} and "
                                f"{OPTIM_NAME}; resume needs both (or train.resume=none)")
    state = torch.load(opt_path, map_location="cpu", weights_only=True)
    if int(state["step"]) != int(step):
        raise CheckpointError(f"{opt_path} (step {state['step']}) does not belong to "
                              f"{weights_path} (step {step})")
    return state["optimizer"]


def load_trainable(model: nn.Module, weights: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Load a run's trainable weights strictly: weights of another model are a
    :class:`CheckpointError` listing the missing and unexpected keys and shape mismatches."""
    expected = {k: tuple(v.shape) for k, v in trainable_state_dict(model).items()}
    report = _mismatch_report(expected, weights, f"{source} does not match this model (trainable weights):")
    if report:
        raise CheckpointError(report)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v.to(params[k].dtype))
