"""Weights from outside: safe loading, key matching with clear errors, key adaptation (prefixes,
patch size, position grid), and the shipped course backbones, whose files lie in this folder.

Weights from outside never run code when loaded: ``.safetensors`` files are read with
safetensors; anything else goes through ``torch.load(weights_only=True)``, and a file that
needs more (pickled classes, functions) is refused with a message naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "load_state_dict_file",
    "strip_prefix",
    "check_keys",
    "extract_rein_state_dict",
    "load_rein_checkpoint",
    "adapt_state_dict",
    "COURSE_BACKBONES",
    "course_vit_config",
    "course_vit_weights_path",
]

COURSE_VIT = "course_vit"
COURSE_VIT_MAE = "course_vit_mae"
# The shipped offline course backbones (same ViT shape, reinlite/weights/<name>.{json,safetensors}),
# and the module that pretrains each.
COURSE_BACKBONES = {
    COURSE_VIT: "reinlite.experiments.pretrain (supervised proxies of the task)",
    COURSE_VIT_MAE: "reinlite.experiments.pretrain_mae (self-supervised, masked-image modelling)",
}
WEIGHTS_DIR = Path(__file__).parent  # the shipped files lie beside this module
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


# ----------------------------------------------------------------------------- the shipped course backbones
def course_vit_config(name: str = COURSE_VIT) -> dict[str, Any]:
    """A shipped course backbone's record (timm kwargs, sha256, the command that made it)."""
    if name not in COURSE_BACKBONES:
        raise ValueError(f"unknown course backbone {name!r}; expected one of {sorted(COURSE_BACKBONES)}")
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the course backbone's config ships with the package "
            f"(made by {COURSE_BACKBONES[name]})"
        )
    return json.loads(path.read_text())


def shipped(name: str) -> bool:
    """Whether a course backbone's record ``<name>.json`` lies in the weights folder."""
    return (WEIGHTS_DIR / f"{name}.json").is_file()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def course_vit_weights_path(verify: bool = True, name: str = COURSE_VIT) -> Path:
    """Path of a shipped course backbone's weights; checks the recorded sha256."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the course backbone's weights ship with reinlite")
    if verify:
        expected = course_vit_config(name).get("sha256")
        actual = _sha256(path)
        if expected and expected != actual:
            raise CheckpointError(f"{path}: sha256 {actual} does not match the recorded {expected}")
    return path


# ----------------------------------------------------------------------------- key adaptation
def _strip_backbone_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in ("backbone.", "module.backbone.", "module."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix):]: v for k, v in state_dict.items()}
    if any(k.startswith("backbone.") for k in state_dict):  # whole-model checkpoint: keep the backbone
        return {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return state_dict


def _grid(num_positions: int, old_grid: Optional[Sequence[int]]) -> tuple[int, int]:
    if old_grid is not None:
        return int(old_grid[0]), int(old_grid[1])
    side = int(round(num_positions ** 0.5))
    if side * side != num_positions:
        raise CheckpointError(
            f"cannot infer the position-embedding grid of {num_positions} positions; pass old_grid=(h, w)"
        )
    return side, side


def adapt_state_dict(
    state_dict: dict[str, Tensor], model: nn.Module, old_grid: Optional[Sequence[int]] = None
) -> dict[str, Tensor]:
    """Make a ViT state dict fit ``model``: key names, patch size and position grid.

    - ``backbone.`` prefixes are removed (the release's and mmseg's whole-model checkpoints).
    - The patch kernel [C, 3, p0, p0] is resized bicubically to the model's [C, 3, p, p].
    - The position embedding [1, prefix + h0 * w0, C] is resampled (bicubic) to the model's grid.
    - The model family's own timm converter then maps foreign names (DINOv2's ``mask_token``
      and ``register_tokens``, OpenAI CLIP, ...).
    """
    state_dict = _strip_backbone_prefix(dict(state_dict))
    target = model.state_dict()
    kernel_key = "patch_embed.proj.weight"
    if kernel_key in state_dict and kernel_key in target:
        kernel = state_dict[kernel_key]
        size = tuple(target[kernel_key].shape[-2:])
        if kernel.ndim == 4 and tuple(kernel.shape[-2:]) != size:
            state_dict[kernel_key] = F.interpolate(
                kernel.float(), size=size, mode="bicubic", align_corners=False
            ).to(kernel.dtype)
    if "pos_embed" in state_dict and getattr(model, "pos_embed", None) is not None:
        from timm.layers import resample_abs_pos_embed

        pos = state_dict["pos_embed"]
        if pos.ndim == 3:
            dinov2_original = "mask_token" in state_dict
            prefix = 1 if dinov2_original else (
                0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1))
            new_grid = tuple(model.patch_embed.grid_size)
            old = _grid(pos.shape[1] - prefix, old_grid)
            if old != new_grid:
                state_dict["pos_embed"] = resample_abs_pos_embed(
                    pos, list(new_grid), list(old), num_prefix_tokens=prefix,
                    interpolation="bicubic", antialias=False, align_corners=False)
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is not None:
        state_dict = convert(state_dict, model)
    # classification heads are not part of a segmentation backbone
    return {k: v for k, v in state_dict.items() if not (k.startswith("head.") and k not in target)}
