"""The optimiser and the learning-rate schedules: the project's one AdamW and its two schedules.

    optimizer = build_optimizer(model, cfg.optim)     # AdamW, the release's parameter groups
    lr_k = poly_lr(cfg.optim.lr, k, cfg.optim.iters)  # lr * (1 - k / iters) ** 0.9
    set_lr(optimizer, lr_k)                           # every group: lr_k * its lr_mult

Weight decay is 0 for norms, query / level embeddings, Rein's tokens and scale (the release's
custom keys), and a fully fine-tuned ViT's position embedding and cls / register tokens.
Trainable weights under ``backbone.`` get ``lr * backbone_lr_mult``: the authors' corrected
full fine-tuning uses 0.1 (release issue #45), Rein and the other methods 1.0.

The research programs (reinlite.experiments) build their AdamW here too, from plain settings:
``build_optimizer(params_or_groups, lr=..., weight_decay=...)`` (settings not given are
OptimConfig's defaults), and the pretraining programs' schedule is :func:`warmup_cosine_lr`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterable, Optional, Sequence, Union

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


def ndim_decay_groups(params: Iterable[torch.Tensor], weight_decay: float) -> list[dict]:
    """Two groups, as the pretraining programs use: matrices and kernels (ndim >= 2) with
    ``weight_decay``, biases and norms (ndim < 2) without."""
    params = list(params)
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


ParamsOrModel = Union[nn.Module, Iterable[torch.Tensor], Sequence[dict]]


def build_optimizer(params: ParamsOrModel, o: Optional[OptimConfig] = None, *,
                    lr: Optional[float] = None, weight_decay: Optional[float] = None,
                    betas: Optional[Sequence[float]] = None, eps: Optional[float] = None,
                    backbone_lr_mult: Optional[float] = None) -> torch.optim.AdamW:
    """The project's AdamW.

    params: a model (its trainable parameters in :func:`param_groups`, the release's rules;
        ``lr_mult`` kept for :func:`set_lr`), or parameters / parameter groups as torch.optim
        takes them (used as given).
    o: the settings (default: ``OptimConfig()``'s); keywords override single settings.
    Each group starts at ``lr * lr_mult``.
    """
    o = o if o is not None else OptimConfig()
    given = dict(lr=lr, weight_decay=weight_decay, eps=eps, backbone_lr_mult=backbone_lr_mult,
                 betas=None if betas is None else list(betas))
    o = replace(o, **{k: v for k, v in given.items() if v is not None})
    if isinstance(params, nn.Module):
        groups = param_groups(params, o.weight_decay, o.backbone_lr_mult)
        for g in groups:
            g.pop("names")
            g["lr"] = o.lr * g["lr_mult"]
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def poly_lr(base_lr: float, step: int, iters: int, power: float = 0.9) -> float:
    """lr at ``step`` (0-based): base * (1 - step / iters) ** power (mmseg PolyLR, eta_min 0)."""
    return base_lr * (1 - min(step, iters) / iters) ** power


def warmup_cosine_lr(base_lr: float, step: int, total: int, warmup: int, final_ratio: float = 1e-2) -> float:
    """lr at ``step`` (0-based) of the pretraining programs: a linear warm-up over ``warmup``
    steps to ``base_lr``, then a cosine decay to ``final_ratio * base_lr`` at ``total``.

        step < warmup:  base * (step + 1) / warmup
        else:           lo + (base - lo) / 2 * (1 + cos(pi * (step - warmup) / (total - warmup))),
                        lo = final_ratio * base
    """
    if step < warmup:
        return base_lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return final_ratio * base_lr + 0.5 * (base_lr - final_ratio * base_lr) * (1 + math.cos(math.pi * p))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr`` times its ``lr_mult``."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
