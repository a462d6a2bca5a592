"""What a user can mistype, checked before anything is built (called by ``load_config``).

Names (method, backbone, pixel decoder, modes) are checked against the config's vocabulary
with a did-you-mean; every number declared with :func:`reinlite.config.at_least` or
:func:`reinlite.config.above` against its range; and values that contradict each other.
Every failure is a :class:`reinlite.config.ConfigError` naming the key, the value and what
was expected.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Sequence

from reinlite.config import (COURSE_BACKBONE_NAMES, METHODS, PIXEL_DECODERS, Config, ConfigError,
                             method_options)


def validate(cfg: Config) -> None:
    """Values that no builder could use, and values that contradict each other: names (method,
    backbone, pixel decoder, modes), counts and rates out of range. Raises :class:`ConfigError`."""
    m, d = cfg.model, cfg.data
    _one_of("model.method", m.method, METHODS)
    _one_of("model.head.pixel_decoder", m.head.pixel_decoder, PIXEL_DECODERS)
    _one_of("eval.mode", cfg.eval.mode, ("slide", "whole"))
    _one_of("amp", cfg.amp, ("auto", "bf16", "none", None))
    from reinlite.data.kinds import DATA_KINDS

    _one_of("data.kind", d.kind, tuple(DATA_KINDS))
    _check_backbone(m.backbone)
    method_options(m)  # options of another kind than the method takes
    if m.method == "rein" and m.rein is None:
        raise ConfigError("model.method is 'rein' but model.rein is null; give Rein's options "
                          "or choose model.method=frozen")
    if m.rein is not None and m.rein.link_to_queries and m.method == "rein":
        q = m.head.num_queries
        if q is not None and q != m.rein.num_tokens:
            raise ConfigError(
                f"model.head.num_queries={q} conflicts with model.rein.num_tokens="
                f"{m.rein.num_tokens}: Rein's tokens are the decoder's queries (Eqs. 6-7); "
                f"drop model.head.num_queries (it is derived) or change model.rein.num_tokens")
    _check_ranges(cfg)
    if m.rein is not None and m.rein.zero_init_delta and not m.rein.shared_mlps:
        raise ConfigError("model.rein.zero_init_delta needs model.rein.shared_mlps=true "
                          "(it zero-initialises W_f)")
    if m.head.hidden_dim % m.head.num_heads:
        raise ConfigError(f"model.head.hidden_dim={m.head.hidden_dim} is not divisible by "
                          f"model.head.num_heads={m.head.num_heads}")
    if d.short_sides and (d.scale_range or d.train_resize):
        raise ConfigError("data.short_sides (the release's random short side) cannot be combined "
                          "with data.train_resize / data.scale_range (the course's resize then "
                          "random factor); set data.short_sides=null for the latter")


def _check_ranges(node: Any, prefix: str = "") -> None:
    """Every field declared with :func:`at_least` / :func:`above`, in the whole tree."""
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            _check_ranges(value, key + ".")
        elif "low" in f.metadata and value is not None:
            low, most, strict = f.metadata["low"], f.metadata.get("most"), f.metadata.get("strict")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key} must be a number, got {value!r}")
            if value < low or (strict and value == low) or (most is not None and value > most):
                need = (f"> {low:g}" if strict else f">= {low:g}") + (f" and <= {most:g}" if most is not None else "")
                raise ConfigError(f"{key} must be {need}, got {value!r}")


def _one_of(key: str, value: Any, choices: Sequence) -> None:
    if value in choices:
        return
    names = [str(c) for c in choices if c is not None]
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"{key} must be one of {', '.join(names)}, got {value!r}{hint}")


def _check_backbone(name: Any) -> None:
    """``model.backbone`` is a shipped course backbone or a model that timm knows (else a
    did-you-mean from timm's list). Hub names (``hf-hub:...``) are left to timm."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model.backbone must be a timm model name or one of "
                          f"{', '.join(COURSE_BACKBONE_NAMES)}, got {name!r}")
    if name in COURSE_BACKBONE_NAMES or ":" in name:
        return
    import timm  # only for timm names: the course configs do not pay for the import

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, list(COURSE_BACKBONE_NAMES) + timm.list_models(), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ConfigError(f"model.backbone {name!r} is neither a course backbone "
                      f"({', '.join(COURSE_BACKBONE_NAMES)}) nor a timm model{hint}; "
                      f"timm.list_models('vit_*') lists timm's ViTs")
