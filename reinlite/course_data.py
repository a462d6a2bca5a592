"""Data and runs the course notebooks 00, 01 and 07-10 share: "load if present, else make it".

- :func:`benchmark_root`: the embedded benchmark's folder (written on first use; a small one
  in fast mode, ``REINLITE_FAST=1``, so CI always sees the same images).
- :func:`data_dir`: where data and runs live (``$REINLITE_DATA``, else ``<checkout>/data``).

Writing is atomic (a temporary folder renamed at the end), so notebooks that run in parallel
(``pytest -n 2``) never read half a benchmark. The library itself does not depend on this module.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

from .course import is_fast, pick

__all__ = ["FAST_BENCHMARK", "FULL_BENCHMARK", "repo_root", "data_dir", "benchmark_root"]

#: the small benchmark written in fast mode: source images, and images per target (and held out)
FAST_BENCHMARK = dict(source=32, target=8)
#: the full benchmark: the command line's defaults (``reinlite data benchmark``)
FULL_BENCHMARK = dict(source=2000, target=500)


def repo_root() -> Optional[Path]:
    """The checkout that holds this ``reinlite`` (None for an installed package)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def data_dir() -> Path:
    """``$REINLITE_DATA``, else ``<checkout>/data`` (where ``reinlite data benchmark --out
    data/benchmark`` writes from the checkout), else ``~/.cache/reinlite``."""
    if os.environ.get("REINLITE_DATA"):
        return Path(os.environ["REINLITE_DATA"]).expanduser()
    root = repo_root()
    return root / "data" if root is not None else Path.home() / ".cache" / "reinlite"


def benchmark_root(root=None, seed: int = 0, verbose: bool = True) -> Path:
    """The embedded benchmark's folder: load if present, else write it.

    Full mode: ``data/benchmark`` with the command line's defaults (2000 source images, 500
    per target; about a minute with 2 workers on an idle machine). Fast mode:
    ``data/benchmark_fast`` with :data:`FAST_BENCHMARK`.
    """
    from .data.benchmark import write_benchmark

    sizes = dict(FAST_BENCHMARK) if is_fast() else dict(FULL_BENCHMARK)
    root = Path(root) if root is not None else data_dir() / pick("benchmark", "benchmark_fast")
    manifest = root / "benchmark.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        if verbose:
            print(f"benchmark: {root} (present: {m['source']} source images, {m['target']} per "
                  f"target, seed {m['seed']})")
        return root
    tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
    if verbose:
        print(f"benchmark: writing {sizes['source']} source images + {sizes['target']} per target "
              f"to {root} ...")
    root.parent.mkdir(parents=True, exist_ok=True)
    write_benchmark(tmp, seed=seed, workers=pick(2, 1), progress=False, **sizes)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return root
