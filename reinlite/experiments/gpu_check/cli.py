"""``reinlite gpu-check`` and ``python -m reinlite.experiments.gpu_check`` (also the children's entry:
``--worker ddp | compile``)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from reinlite.experiments.gpu_check.children import compile_worker, ddp_worker
from reinlite.experiments.gpu_check.report import format_markdown
from reinlite.experiments.gpu_check.run import run_gpu_check
from reinlite.experiments.gpu_check.settings import PHASES, Settings

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/gpu_check", help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--tiny", action="store_true", help="the seconds-long CPU mode (ViT-Ti/16 at 64 x 64)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run (default 480)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5, tiny 1)")
    p.add_argument("--steps", type=int, default=None, help="measured steps (default 20, tiny 3)")
    p.add_argument("--train-steps", type=int, default=None, help="steps of the loss check (default 200, tiny 12)")
    p.add_argument("--slide-images", type=int, default=None, help="images for slide inference (default 20)")
    p.add_argument("--ddp-steps", type=int, default=3)
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="run the torch.compile phase (default: on a GPU)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--phases", nargs="*", default=None, metavar="PHASE",
                   help=f"only these phases (default all; --tiny: all but train_cli): {' '.join(PHASES)}")
    p.add_argument("--data-root", default="data/benchmark", help="the embedded benchmark (random shapes if absent)")
    p.add_argument("--worker", choices=("ddp", "compile"), default=None, help=argparse.SUPPRESS)


def run_cli(args) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.worker == "ddp":
        return ddp_worker(args.tiny, "cuda" if args.device == "cuda" else "cpu", args.ddp_steps, Path(args.out))
    if args.worker == "compile":
        return compile_worker(args.tiny, args.device, args.warmup or 1, args.steps or 3, Path(args.out),
                              args.data_root)
    settings = Settings(out=args.out, tiny=args.tiny, device=args.device, budget_s=args.budget,
                        warmup=args.warmup, steps=args.steps, train_steps=args.train_steps,
                        slide_images=args.slide_images, ddp_steps=args.ddp_steps, compile=args.compile,
                        phases=args.phases, data_root=args.data_root)
    report = run_gpu_check(settings)
    print(format_markdown(report))
    print(f"wrote {Path(args.out) / 'gpu_check.json'} and {Path(args.out) / 'gpu_check.md'}")
    return 1 if report["status"] == "failed" else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from reinlite.experiments.gpu_check import __doc__ as package_doc

    p = argparse.ArgumentParser(prog="python -m reinlite.experiments.gpu_check", description=package_doc.splitlines()[0])
    add_arguments(p)
    return run_cli(p.parse_args(argv))

