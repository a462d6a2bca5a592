"""Rein's diagnostics: how much does the refinement move the features, and how alike are the queries?

Three numbers, logged by the training loop every ``train.log_every`` steps for a Rein run
(``log.jsonl``) and recorded by the sweep at every evaluation point:

    rein_scale        s, the learnable scalar of f' = f + s * Delta f (starts at 1e-3;
                      1.0 and not learnable with ``zero_init_delta``)
    rein_delta_ratio  ||s * Delta f_i|| / ||f_i|| for each block i, on the training batch
                      (Frobenius norms over every patch of the batch; prefix tokens excluded),
                      and its mean over the L blocks. 0 means Rein changes nothing; 0.1 means
                      the refinement is a tenth the size of the frozen feature it refines.
    query_cosine      mean pairwise cosine between the m instance queries [m, Q]
                      (1 = identical queries, ~0 = unrelated)

The ratio is measured on the batch the step already computes: :func:`record_delta_ratios`
hooks the Rein module for the one forward pass it wraps and reads each block's input and
output (out - in = s * Delta f on the patches), so it adds two norms per block on logged
steps and nothing on the others.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

__all__ = ["mean_pairwise_cosine", "query_cosine", "rein_of", "record_delta_ratios", "rein_scale"]


def mean_pairwise_cosine(q: Tensor) -> float:
    """Mean cosine similarity between distinct rows of q [m, Q] (1 = identical rows)."""
    q = q.detach().float()
    cos = torch.nn.functional.cosine_similarity(q[:, None], q[None], dim=-1)   # [m, m]
    return float(cos[~torch.eye(len(q), dtype=torch.bool, device=q.device)].mean())


def rein_of(model: nn.Module) -> Optional[nn.Module]:
    """The Rein module of a segmentor or backbone, or None (baselines have none)."""
    backbone = getattr(model, "backbone", model)
    return getattr(backbone, "rein", None)


def query_cosine(model: nn.Module) -> Optional[float]:
    """Mean pairwise cosine of Rein's queries, or None when the model has no Rein queries."""
    rein = rein_of(model)
    if rein is None:
        return None
    with torch.no_grad():
        q = rein.queries()
    return None if q is None else mean_pairwise_cosine(q)


def rein_scale(model: nn.Module) -> Optional[float]:
    """Rein's scale s as a float, or None without Rein."""
    rein = rein_of(model)
    return None if rein is None else float(torch.as_tensor(rein.scale).detach())


@contextmanager
def record_delta_ratios(model: nn.Module, enabled: bool = True) -> Iterator[dict[int, float]]:
    """Record ||s * Delta f_i|| / ||f_i|| of every block during the wrapped forward pass.

    Yields a dict {block i: ratio} filled as the forward runs (empty for a model without
    Rein, or when ``enabled`` is False). Usage::

        with record_delta_ratios(model, enabled=logging_this_step) as ratios:
            outputs = model(images)
        # ratios == {0: 0.004, 1: 0.006, ...}
    """
    rein = rein_of(model) if enabled else None
    ratios: dict[int, float] = {}
    if rein is None:
        yield ratios
        return

    def hook(module, args, kwargs, output):
        x = args[0]                                   # [B, N, c] block output before Rein
        layer = args[1] if len(args) > 1 else kwargs["layer"]
        prefix = args[2] if len(args) > 2 else kwargs.get("num_prefix_tokens", 1)
        with torch.no_grad():
            f = x[:, prefix:].float()
            moved = output[:, prefix:].float() - f   # s * Delta f, [B, n, c]
            ratios[int(layer)] = float(moved.norm() / f.norm().clamp_min(1e-12))

    handle = rein.register_forward_hook(hook, with_kwargs=True)
    try:
        yield ratios
    finally:
        handle.remove()


def rein_log_entry(model: nn.Module, ratios: dict[int, float]) -> dict:
    """The diagnostics of a Rein model for one ``log.jsonl`` line ({} without Rein)."""
    if rein_of(model) is None:
        return {}
    entry = {"rein_scale": rein_scale(model)}
    if ratios:
        per_layer = [ratios[i] for i in sorted(ratios)]
        entry["rein_delta_ratio"] = sum(per_layer) / len(per_layer)
        entry["rein_delta_ratio_layers"] = per_layer
    qc = query_cosine(model)
    if qc is not None:
        entry["query_cosine"] = qc
    return entry
