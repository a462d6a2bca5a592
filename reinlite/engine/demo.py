"""The main job (``make demo``): the course run end to end on the embedded defaults.

    python -m reinlite.cli demo [--config course] [key=value ...]

Writes the embedded benchmark if it is missing, trains with the config (a finished run with
the same config is not trained again), evaluates the source's held-out split and every
unseen target domain, prints the table and saves figures under ``<run dir>/eval``.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

from reinlite.config import load_config
from reinlite.data.pipeline import resolve_path
from reinlite.engine.evaluate import evaluate, load_run
from reinlite.engine.train import train

log = logging.getLogger(__name__)


def run_demo(config: str = "course", overrides: Sequence[str] = (), eval_source: bool = True) -> dict:
    """Benchmark (if missing) -> train -> evaluate; prints the table and the time of each
    part. Returns the evaluation dict with ``timing`` (seconds per part)."""
    cfg = load_config(config, overrides)
    d = cfg.data
    t0 = time.perf_counter()
    if d.kind == "benchmark" and not (resolve_path(d.root) / "benchmark.json").is_file():
        from reinlite.data.benchmark import write_benchmark

        log.info("writing the embedded benchmark to %s ...", d.root)
        write_benchmark(d.root)
    t1 = time.perf_counter()
    result = train(cfg)
    t2 = time.perf_counter()
    model, _ = load_run(result["checkpoint"], cfg)
    domains = ([d.source] if eval_source else []) + list(d.targets)
    out_dir = cfg.run_dir / "eval"
    res = evaluate(model, cfg, domains, out_dir)
    t3 = time.perf_counter()
    print(res["table"])
    print(f"\nmean mIoU over the unseen target domains ({', '.join(res['targets'])}): {res['mean']:.1f}")
    print(f"time: benchmark {t1 - t0:.0f} s, training {t2 - t1:.0f} s ({result['step']} steps), "
          f"evaluation {t3 - t2:.0f} s, total {t3 - t0:.0f} s")
    print(f"figures: {out_dir / 'confusion.png'}, {out_dir / 'miou.png'}")
    res["timing"] = dict(benchmark=t1 - t0, train=t2 - t1, eval=t3 - t2, total=t3 - t0)
    return res
