"""Experiment exercises: change one Rein choice, train briefly, compare.

The notebooks describe what Rein's design choices do (the sink of notebook 03, the scale's start
in 04, the query link and the token count m in 06). :func:`quick_run` lets a student *measure*
it: one short run of reinlite's own trainer (:func:`reinlite.engine.train.train`) with the
course config, one Rein option changed, evaluated with :func:`reinlite.engine.evaluate.evaluate`
and summarised with the Rein diagnostics the training loop logs
(:mod:`reinlite.engine.diagnostics`)::

    from reinlite.course.experiments import quick_run
    small = quick_run({"scale_init": 1e-3}, steps=100)
    large = quick_run({"scale_init": 1.0}, steps=100)
    small["final_delta_ratio"], large["final_delta_ratio"]   # ||s Delta f|| / ||f||

About 0.5 s per step on one laptop core with the course config (64 x 128 crops, batch 8), so
100 steps plus the evaluation of 24 images per domain stays under 2 minutes. Each record
carries a ``signature`` (a hash of its numbers) that
:func:`reinlite.course.feedback.check_experiment` recomputes: it checks that the runs were made
and that a student's conclusion agrees with them.

``sink=False`` is the one choice that is not a keyword of :class:`reinlite.Rein`: token 0 is
dropped *before* the softmax instead of after it (the "no sink" variant of notebook 03). It
is made by wrapping the library's :func:`reinlite.models.rein.token_similarity` for the
duration of the run (the softmax over tokens 1..m-1 equals the kept columns renormalised),
so the rest of the layer is the library's code unchanged.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch

from reinlite.config import Config, ConfigError, load_config
from reinlite.config_checks import validate
from reinlite.engine.evaluate import evaluate
from reinlite.engine.train import train
from reinlite.models import rein as rein_module
from reinlite.engine.evaluate import load_run

__all__ = ["quick_run", "run_signature", "without_sink", "METRICS", "metric"]

#: the numbers a conclusion can be about, each a function of a quick_run record
METRICS = {
    "final_loss": "mean training loss over the last fifth of the steps",
    "target_miou": "mean mIoU over the unseen target domains",
    "source_miou": "mIoU on the held-out source images",
    "delta_ratio": "||s Delta f|| / ||f|| averaged over the blocks, at the last logged step",
    "scale": "Rein's scale s at the end (1.0 and fixed with zero_init_delta)",
}


def metric(record: Mapping[str, Any], name: str) -> float:
    """The value of metric ``name`` (a key of :data:`METRICS`) in a :func:`quick_run` record."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    if name == "final_loss":
        loss = list(record["loss"])
        tail = loss[-max(1, len(loss) // 5):]
        return float(sum(tail) / len(tail))
    key = {"target_miou": "target_mean", "source_miou": "source_miou",
           "delta_ratio": "final_delta_ratio", "scale": "final_scale"}[name]
    value = record.get(key)
    return float("nan") if value is None else float(value)


def run_signature(record: Mapping[str, Any]) -> str:
    """A short hash of a record's numbers and settings (everything but the signature itself)."""
    body = {k: v for k, v in record.items() if k != "signature"}
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def without_sink() -> Iterator[None]:
    """Within the block, Rein drops token 0 *before* the softmax (no sink): every patch's
    kept similarities sum to 1 again. Restores the library's function on exit."""
    library = rein_module.token_similarity

    def similarity_without_sink(features, tokens, use_softmax: bool = True):
        s = library(features, tokens, use_softmax)                 # [B, n, m]
        if not use_softmax:
            return s
        kept = s[..., 1:]
        return torch.cat([torch.zeros_like(s[..., :1]), kept / kept.sum(-1, keepdim=True)], dim=-1)

    rein_module.token_similarity = similarity_without_sink
    try:
        yield
    finally:
        rein_module.token_similarity = library


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def quick_run(rein_options: Optional[Mapping[str, Any]] = None, steps: int = 100, seed: int = 0, *,
              sink: bool = True, config: Union[str, dict, Config] = "course",
              overrides: Sequence[str] = (), eval_images: int = 24,
              domains: Optional[Sequence[str]] = None, out_dir: Optional[str] = None,
              threads: Optional[int] = None, progress: bool = False) -> dict:
    """Train the course model briefly with some Rein options changed; evaluate; summarise.

    Args:
        rein_options: keywords of :class:`reinlite.Rein` to change, e.g. ``{"scale_init": 1.0}``,
            ``{"zero_init_delta": True}``, ``{"link_to_queries": False}``, ``{"num_tokens": 8}``.
        steps: optimiser steps (the poly schedule runs over exactly these).
        seed: the run's seed (data order, augmentation, initialisation).
        sink: False drops token 0 before the softmax (see :func:`without_sink`).
        config: the base config (a shipped name, a path, a dict or a Config); ``overrides``
            are ``key=value`` strings applied after it.
        eval_images: images per domain for the evaluation (the first ones, always the same).
        domains: domains to evaluate (default: the source's held-out split and every target).
        out_dir: where the run writes its checkpoint and log (default: a temporary folder).
    Returns:
        dict(options, sink, seed, rein (every Rein option of the run), steps, seconds, loss [steps], log_steps, scale, delta_ratio
        (the logged values), final_scale, final_delta_ratio, query_cosine, miou {domain: mIoU},
        source_miou, target_mean, signature).
    """
    options = dict(rein_options or {})
    if int(steps) < 1:
        raise ValueError(f"quick_run: steps must be at least 1, got {steps!r}")
    cfg = load_config(config, overrides)
    cfg = copy.deepcopy(cfg)
    if cfg.model.rein is None and options:
        raise ConfigError(f"quick_run: the config {getattr(cfg, 'name', config)!r} has no Rein layer "
                          f"(model.rein is null); cannot set {sorted(options)}")
    for key, value in options.items():
        if not hasattr(cfg.model.rein, key):
            known = ", ".join(sorted(vars(cfg.model.rein)))
            raise ConfigError(f"quick_run: {key!r} is not an option of Rein; expected one of: {known}")
        setattr(cfg.model.rein, key, value)
    cfg.seed = int(seed)
    cfg.optim.iters = int(steps)
    cfg.train.log_every = max(1, int(steps) // 20)
    cfg.train.ckpt_every = int(steps)
    cfg.train.resume = "none"
    cfg.train.progress = bool(progress)
    cfg.train.tensorboard = False
    cfg.eval.max_images = int(eval_images)
    if threads is not None:
        cfg.threads = int(threads)
    validate(cfg)

    with contextlib.ExitStack() as stack:
        if out_dir is None:
            out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="reinlite-quick-"))
        cfg.out_dir = str(out_dir)
        if not sink:
            stack.enter_context(without_sink())
        t0 = time.perf_counter()
        result = train(cfg)
        model, _ = load_run(result["checkpoint"], cfg)
        names = list(domains) if domains else [cfg.data.source] + list(cfg.data.targets)
        scores = evaluate(model, cfg, names, progress=False)
        seconds = time.perf_counter() - t0
        log = _read_log(cfg.run_dir / "log.jsonl")

    rein_logged = [e for e in log if "rein_scale" in e]
    ratios = [e for e in rein_logged if "rein_delta_ratio" in e]
    miou = {d: round(float(v["miou"]), 3) for d, v in scores["domains"].items()}
    source = cfg.data.source
    record = dict(
        options={k: options[k] for k in sorted(options)}, sink=bool(sink), seed=int(seed),
        rein={k: v for k, v in sorted(vars(cfg.model.rein).items())},
        steps=int(result["step"]), seconds=round(seconds, 1),
        loss=[round(float(x), 5) for x in result["losses"]],
        log_steps=[int(e["step"]) for e in ratios],
        scale=[round(float(e["rein_scale"]), 6) for e in ratios],
        delta_ratio=[round(float(e["rein_delta_ratio"]), 6) for e in ratios],
        final_scale=round(float(rein_logged[-1]["rein_scale"]), 6) if rein_logged else None,
        final_delta_ratio=round(float(ratios[-1]["rein_delta_ratio"]), 6) if ratios else None,
        query_cosine=(round(float(rein_logged[-1]["query_cosine"]), 4)
                      if rein_logged and "query_cosine" in rein_logged[-1] else None),
        miou=miou,
        source_miou=miou.get(source),
        target_mean=(round(float(scores["mean"]), 3) if scores["targets"] else None),
    )
    record["signature"] = run_signature(record)
    return record
