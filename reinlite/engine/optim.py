"""The optimiser and the learning-rate schedule (the release's recipe).

    optimizer = build_optimizer(model, cfg.optim)     # AdamW on the trainable weights only
    lr_k = poly_lr(cfg.optim.lr, k, cfg.optim.iters)  # lr * (1 - k / iters) ** 0.9

Weight decay is 0 for norms, query / level embeddings, Rein's tokens and scale (the release's
custom keys), and a fully fine-tuned ViT's position embedding and cls / register tokens.
Trainable weights under ``backbone.`` get ``lr * backbone_lr_mult``: the authors' corrected
full fine-tuning uses 0.1 (release issue #45), Rein and the other methods 1.0.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reinlite.config import OptimConfig

NO_DECAY_KEYS = ("norm", "query_embed", "level_embed", "learnable_tokens", "rein.scale",
                 "pos_embed", "cls_token", "reg_token")
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)


def param_groups(model: nn.Module, weight_decay: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Trainable parameters in groups by (weight decay, lr factor). Each group has ``params``,
    ``weight_decay``, ``lr_mult`` and ``names``; empty groups are left out."""
    norm_params = {id(p) for mod in model.modules() if isinstance(mod, _NORM_TYPES)
                   for p in mod.parameters(recurse=False)}
    groups: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if (id(p) in norm_params or any(k in name for k in NO_DECAY_KEYS)) else weight_decay
        mult = backbone_lr_mult if name.startswith("backbone.") else 1.0
        g = groups.setdefault((decay, mult), dict(params=[], names=[], weight_decay=decay, lr_mult=mult))
        g["params"].append(p)
        g["names"].append(name)
    order = sorted(groups, key=lambda key: (key[0] == 0.0, -key[1]))  # decay first, as before
    return [groups[k] for k in order]


def build_optimizer(model: nn.Module, o: OptimConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (``names`` dropped; ``lr_mult`` kept for :func:`set_lr`)."""
    groups = param_groups(model, o.weight_decay, o.backbone_lr_mult)
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def poly_lr(base_lr: float, step: int, iters: int, power: float = 0.9) -> float:
    """lr at ``step`` (0-based): base * (1 - step / iters) ** power (mmseg PolyLR, eta_min 0)."""
    return base_lr * (1 - min(step, iters) / iters) ** power


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr`` times its ``lr_mult``."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
