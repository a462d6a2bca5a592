"""Where a run computes, and whether it autocasts: one rule for train, evaluate and the harnesses.

    device = pick_device(cfg.device)          # "auto" | "cpu" | "cuda" | "cuda:1"
    amp = amp_enabled(cfg.amp, device)        # "auto" | "bf16" | "none"

``device``: "auto" takes the GPU when torch sees one and the CPU otherwise; "cpu" is the CPU;
"cuda" (or "cuda:N") without a GPU is refused with a ``ConfigError`` that says so (no silent
fallback: a run asked to use a GPU that is not there should not quietly take days on a CPU).
``amp``: "bf16" autocasts the forward pass to bfloat16 on any device, "auto" does so on a GPU
only (the release's setting there; on a CPU fp32 is the default), "none" never.
"""
from __future__ import annotations

from typing import Optional

import torch

from reinlite.config import ConfigError

__all__ = ["pick_device", "amp_enabled"]

AMP_CHOICES = ("auto", "bf16", "none")


def pick_device(pref: Optional[str] = "auto", index: Optional[int] = None) -> torch.device:
    """The torch.device for ``pref`` ("auto", "cpu", "cuda", "cuda:N"; None = "auto").
    ``index`` picks the GPU when ``pref`` names none (torchrun's LOCAL_RANK)."""
    pref = str(pref or "auto").lower()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(pref)
    except RuntimeError as err:
        raise ConfigError(f"device={pref!r} is not a device; expected auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={pref!r} but torch sees no GPU on this machine; "
                              "use device=auto (the CPU when there is no GPU) or device=cpu")
        if device.index is None:
            device = torch.device("cuda", int(index or 0))
    elif device.type != "cpu":
        raise ConfigError(f"device={pref!r} is not supported; expected auto, cpu, cuda or cuda:N")
    return device


def amp_enabled(amp: Optional[str], device: torch.device) -> bool:
    """Whether the forward pass runs under bf16 autocast: ``amp`` "bf16" (always), "auto"
    (on a GPU only) or "none" / None (never)."""
    amp = "none" if amp is None else str(amp).lower()
    if amp not in AMP_CHOICES:
        raise ConfigError(f"amp={amp!r}: expected one of {', '.join(AMP_CHOICES)}")
    return amp == "bf16" or (amp == "auto" and torch.device(device).type == "cuda")
