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


def check_keys(
    module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint"
) -> None:
    """Raise :class:`CheckpointError` listing missing / unexpected keys and shape mismatches."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match {type(module).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:12])}"
                         + (" ..." if len(missing) > 12 else ""))
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:12])}"
                         + (" ..." if len(unexpected) > 12 else ""))
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:6])}")
        raise CheckpointError("\n".join(lines))


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
