"""Loading weights from outside safely, and matching their keys with clear errors.

Weights from outside never run code when loaded: ``.safetensors`` files are read with
safetensors; anything else goes through ``torch.load(weights_only=True)``, and a file that
needs more (pickled classes, functions) is refused with a message naming it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "load_state_dict_file",
    "strip_prefix",
    "check_keys",
    "extract_rein_state_dict",
    "load_rein_checkpoint",
    "save_run_checkpoint",
    "read_run_checkpoint",
    "load_trainable",
]

REIN_PREFIX = "backbone.reins."


class CheckpointError(ValueError):
    """A weights file that cannot be used: unreadable, unsafe, or with the wrong keys."""


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``.pth``/``.pt``/``.bin`` file, safely.

    Whole-training checkpoints that wrap the weights under ``state_dict`` or ``model`` (as
    mmsegmentation and DINOv2 releases do) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: refused to load. Only plain tensors are accepted (torch.load with "
            f"weights_only=True); this file needs more ({str(err).splitlines()[0]}). Convert it "
            f"to safetensors in a trusted environment first."
        ) from err
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and all(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return dict(obj)


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Keep the entries whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _mismatch_report(expected: Mapping[str, tuple], given: Mapping[str, Tensor],
                     header: str) -> Optional[str]:
    """The one key-mismatch report: missing / unexpected keys and shape mismatches of
    ``given`` against ``expected`` (name -> shape), or None when they match."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [f"{k}: file {tuple(given[k].shape)} vs model {tuple(expected[k])}"
                  for k in sorted(set(expected) & set(given))
                  if tuple(given[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or mismatched):
        return None
    lines = [header]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:12])}"
                     + (" ..." if len(missing) > 12 else ""))
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:12])}"
                     + (" ..." if len(unexpected) > 12 else ""))
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:6])}")
    return "\n".join(lines)


def check_keys(
    module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint"
) -> None:
    """Raise :class:`CheckpointError` listing missing / unexpected keys and shape mismatches."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    report = _mismatch_report(expected, state_dict, f"{source} does not match {type(module).__name__}:")
    if report:
        raise CheckpointError(report)


def extract_rein_state_dict(
    state_dict: Mapping[str, Tensor], prefix: str = REIN_PREFIX
) -> dict[str, Tensor]:
    """Pull the Rein weights out of a whole-model checkpoint (keys under ``backbone.reins.``).

    A state dict that is already Rein-only (no key has the prefix) is returned unchanged.
    """
    if any(k.startswith(prefix) for k in state_dict):
        return strip_prefix(state_dict, prefix)
    return dict(state_dict)


def load_rein_checkpoint(
    rein: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, Tensor],
    prefix: str = REIN_PREFIX,
) -> nn.Module:
    """Load released Rein weights into ``rein`` with strict key checking.

    Args:
        rein: a :class:`reinlite.Rein` built with the same L, c, m, r, Q.
        checkpoint: a path (safetensors / pth) or a state dict, Rein-only or whole-model.
    Raises:
        CheckpointError: naming missing / unexpected keys and shape mismatches.
    """
    source = "state dict"
    if not isinstance(checkpoint, Mapping):
        source = str(checkpoint)
        checkpoint = load_state_dict_file(checkpoint)
    rein_sd = extract_rein_state_dict(checkpoint, prefix)
    check_keys(rein, rein_sd, source)
    rein.load_state_dict(rein_sd, strict=True)
    return rein


# ----------------------------------------------------------------------------------------
# A training run's own checkpoints (reinlite.train)
# ----------------------------------------------------------------------------------------
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
