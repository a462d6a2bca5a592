#!/usr/bin/env python
"""Execute course notebooks in place and strip their volatile metadata (outputs are kept).

    python tools/run_notebooks.py notebooks/02_token_similarity.ipynb ...   # execute + clean
    python tools/run_notebooks.py --fast notebooks/*.ipynb                  # REINLITE_FAST=1
    python tools/run_notebooks.py --strip-only notebooks/*.ipynb            # clean, don't run
    python tools/run_notebooks.py --check notebooks/*.ipynb                 # exit 1 if not clean

``--check`` also fails on outputs stored from a fast-mode run (REINLITE_FAST=1, what CI uses to
test that the notebooks run): the committed notebooks must show full-mode numbers. Signs of a
fast run (:func:`fast_mode_outputs`): the fast benchmark's folder ``benchmark_fast``, a
"fast mode ... True" line, or a training step count of at most :data:`FAST_MAX_STEPS` (the
fast values of ``course.pick`` for training runs are 4 to 40 steps; full runs train 150 or more).

Executing uses nbclient with the current environment's ``python3`` kernel, from the
notebook's own folder, with HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1. A notebook is written
back only when every cell ran without an error and (unless ``--allow-stderr``) no cell wrote
to stderr. Stripped: execution timestamps (cell ``execution`` / ``ExecuteTime``), kernel and
language version info, widget state and the widget-view outputs that point into it (their
text/plain fallback is kept), ``collapsed`` / ``scrolled`` view flags; consecutive stream
outputs are merged (their chunking depends on timing). Kept: outputs,
execution counts, ``tags`` and ``jupyter.source_hidden`` (collapsed solution cells).
The wall time of each run is printed (and written to ``--times FILE`` as json).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import nbformat

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
VOLATILE_CELL_KEYS = ("execution", "ExecuteTime", "collapsed", "scrolled")
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def strip_notebook(nb: Any) -> Any:
    """Remove volatile metadata from ``nb`` (a NotebookNode or dict) in place and return it."""
    meta = nb.setdefault("metadata", {})
    meta.pop("widgets", None)
    meta["kernelspec"] = dict(KERNELSPEC)
    meta["language_info"] = {"name": "python"}
    for key in [k for k in meta if k not in ("kernelspec", "language_info", "nbval", "title")]:
        meta.pop(key)
    ids = nb.get("nbformat", 4) > 4 or nb.get("nbformat_minor", 0) >= 5
    for index, cell in enumerate(nb.get("cells", [])):
        if not ids:
            cell.pop("id", None)  # nbformat < 4.5 has no cell ids
        elif not cell.get("id"):
            cell["id"] = f"cell-{index:03d}"  # stable, unlike a random uuid
        cmeta = cell.setdefault("metadata", {})
        for key in VOLATILE_CELL_KEYS:
            cmeta.pop(key, None)
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data")
            if data is not None and WIDGET_MIME in data:
                data.pop(WIDGET_MIME)
                if not data:
                    continue
            if "metadata" in output and isinstance(output["metadata"], dict):
                output["metadata"].pop("execution", None)
            previous = kept[-1] if kept else None
            if (output.get("output_type") == "stream" and previous is not None
                    and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
                # one stream per run of prints: how the kernel chunks them is timing-dependent
                previous["text"] = "".join(previous["text"]) + "".join(output["text"])
                continue
            kept.append(output)
        cell["outputs"] = kept
    return nb


def problems(nb: Any) -> list[str]:
    """Errors and stderr output stored in ``nb`` (empty when the notebook is clean)."""
    found = []
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(f"cell {index}: stored error {output.get('ename')}: {output.get('evalue')}")
            elif output.get("output_type") == "stream" and output.get("name") == "stderr":
                text = "".join(output.get("text", ""))
                found.append(f"cell {index}: stderr: {text.strip()[:200]}")
    return found


def volatile(nb: Any) -> list[str]:
    """Volatile metadata still present in ``nb``."""
    found = []
    if "widgets" in nb.get("metadata", {}):
        found.append("notebook metadata: widgets state")
    if set(nb.get("metadata", {}).get("language_info", {})) - {"name"}:
        found.append("notebook metadata: language_info details")
    for index, cell in enumerate(nb.get("cells", [])):
        for key in VOLATILE_CELL_KEYS:
            if key in cell.get("metadata", {}):
                found.append(f"cell {index}: metadata {key}")
        for output in cell.get("outputs", []):
            if WIDGET_MIME in output.get("data", {}):
                found.append(f"cell {index}: widget view output")
    return found


#: a step count of at most this many steps in an output is taken for a fast-mode training run
FAST_MAX_STEPS = 40
_FAST_PATTERNS = (
    (re.compile(r"benchmark_fast"), "the fast benchmark's folder (benchmark_fast)"),
    (re.compile(r"(?i)fast mode[^\n]{0,40}?\bTrue\b"), "a 'fast mode ... True' line"),
)
# "600 steps", "steps 6", "steps trained: 4", "for 30 steps" (plural only: a progress line
# "step 10: loss ..." is not a run's length; "step=0.25" is a slider, not a count)
_STEPS = (re.compile(r"(?i)\b(\d[\d,]*)(?![.\d])\s+steps\b"),
          re.compile(r"(?i)\bsteps(?:\s+trained)?\s*[:=]?\s*(\d[\d,]*)(?![.\d])"))


def _output_text(output: Any) -> str:
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    return "".join(output.get("data", {}).get("text/plain", ""))


def fast_mode_outputs(nb: Any, max_steps: int = FAST_MAX_STEPS) -> list[str]:
    """Outputs of ``nb`` that come from a fast-mode run (empty when none do)."""
    found = []
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            text = _output_text(output)
            for pattern, what in _FAST_PATTERNS:
                match = pattern.search(text)
                if match:
                    found.append(f"cell {index}: fast-mode output ({what}): {match.group(0)!r}")
            for match in (m for pattern in _STEPS for m in pattern.finditer(text)):
                steps = int(match.group(1).replace(",", ""))
                if 0 < steps <= max_steps:
                    found.append(f"cell {index}: fast-mode output (a run of {steps} steps, at most "
                                 f"{max_steps}): {match.group(0)!r}")
    return found


# Kernels' idle OpenMP threads sleep instead of spinning (on shared cores spinning threads made
# cells 3-15x slower, docs/speed.md); set before a kernel imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def execute(path: Path, timeout: int = 600, allow_stderr: bool = False) -> float:
    """Run ``path`` top to bottom, strip it and write it back; return the wall time in seconds."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    found = problems(nb)
    if found and not allow_stderr:
        raise RuntimeError(f"{path}: not written back:\n  " + "\n  ".join(found))
    strip_notebook(nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--fast", action="store_true", help="set REINLITE_FAST=1 for the kernel")
    parser.add_argument("--strip-only", action="store_true", help="only remove volatile metadata")
    parser.add_argument("--check", action="store_true",
                        help="run nothing; exit 1 if a notebook stores errors, stderr, volatile metadata "
                             "or fast-mode outputs")
    parser.add_argument("--allow-stderr", action="store_true")
    parser.add_argument("--timeout", type=int, default=600, help="per cell, seconds")
    parser.add_argument("--retries", type=int, default=1,
                        help="run a notebook again after a cell timeout or a dead kernel (default 1)")
    parser.add_argument("--times", type=Path, help="write {notebook: seconds} as json here")
    args = parser.parse_args(argv)

    if args.check:
        bad = 0
        for path in args.notebooks:
            nb = nbformat.read(path, as_version=4)
            found = problems(nb) + volatile(nb) + fast_mode_outputs(nb)
            for line in found:
                print(f"{path}: {line}")
            bad += bool(found)
        return 1 if bad else 0

    if args.strip_only:
        for path in args.notebooks:
            nb = nbformat.read(path, as_version=4)
            nbformat.write(strip_notebook(nb), path)
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if args.fast:
        os.environ["REINLITE_FAST"] = "1"
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    times, failed = {}, 0
    for path in args.notebooks:
        for attempt in range(args.retries + 1):
            try:
                times[str(path)] = round(execute(path, args.timeout, args.allow_stderr), 1)
                print(f"{path}: {times[str(path)]:.1f} s", flush=True)
                break
            except Exception as err:  # report every notebook, fail at the end
                # a lost kernel reply (seen with ipykernel 7 on a loaded machine) leaves an idle
                # kernel and a client that waits until the timeout: run the notebook again
                if isinstance(err, (CellTimeoutError, DeadKernelError)) and attempt < args.retries:
                    print(f"{path}: {type(err).__name__}, running it again", file=sys.stderr, flush=True)
                    continue
                failed += 1
                print(f"{path}: FAILED: {type(err).__name__}: {str(err)[-2000:]}", file=sys.stderr, flush=True)
                break
    if args.times:
        args.times.write_text(json.dumps(times, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
