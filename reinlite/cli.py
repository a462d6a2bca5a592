"""`reinlite` command line: one table of subcommands (:data:`COMMANDS`).

    reinlite info                                   the Rein parameter table of a backbone
    reinlite data benchmark --out DIR [--seed N] [--source N] [--target N]
    reinlite train --config NAME_OR_PATH [key=value ...]
    reinlite eval ... ; reinlite predict IMAGE ... --checkpoint CKPT
    reinlite costs (alias: bench)                   what each method costs, side by side
    reinlite gpu-check --out DIR [--tiny]           the GPU path measured (Table 8), one call
    reinlite sweep | probe | pretrain | pretrain-mae | domain-shift ...   experiments (reinlite.experiments)

A row names the subcommand, its help, the function that adds its arguments and the one that
runs it; "module:function" names are imported only when needed, so the core never imports
the experiments. Bad input (the project's :class:`reinlite.errors.InputError`, which
``ConfigError`` is, ``CheckpointError`` and ``FileNotFoundError``) is printed as one line with
exit status 2; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

Function = Union[Callable, str]  # a function, or "module:function" imported when needed


@dataclass(frozen=True)
class Command:
    """One subcommand: ``arguments(parser)`` adds its arguments, ``run(args)`` does the work."""
    name: str
    help: str
    arguments: Function
    run: Function
    aliases: tuple[str, ...] = ()


def _load(function: Function) -> Callable:
    if callable(function):
        return function
    module, name = function.split(":")
    return getattr(importlib.import_module(module), name)


# ----------------------------------------------------------------------------- arguments of the core commands
def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="course_vit", help="timm ViT name or course_vit (default)")
    p.add_argument("--pretrained", default="true", help="true, false or a local weights file")
    p.add_argument("--img-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--num-tokens", type=int, default=None, help="default: the release config's")
    p.add_argument("--rank", type=int, default=None, help="default: the release config's")


def _config_args(p: argparse.ArgumentParser, default: Optional[str] = None) -> None:
    if default is None:
        p.add_argument("--config", required=True,
                       help="a shipped config name (course, gta2cs_dinov2_large) or a .json path")
    else:
        p.add_argument("--config", default=default, help=f"config name or path (default: {default})")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.iters=200")


def _train_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--stop-at", type=int, default=None, help="stop (with a checkpoint) after this many steps")


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint.safetensors or its run folder")
    p.add_argument("--config", default=None, help="config (default: the one stored in the checkpoint)")
    p.add_argument("--domains", nargs="*", default=None, help="target domains (default: the config's data.targets)")
    p.add_argument("--out", default=None, help="folder for the table, metrics.json and the confusion figure")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.stride=[256,256]")


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--checkpoint", required=True, help="checkpoint.safetensors or its run folder")
    p.add_argument("--out", default=None, help="output folder (default: next to each input, *_pred.png)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours")


def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True)
    b = sub.add_parser("benchmark", help="render the embedded DGSS benchmark in the real layouts")
    b.add_argument("--out", required=True, help="output folder (e.g. data/benchmark)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--source", type=int, default=2000, help="source (gta) training images")
    b.add_argument("--target", type=int, default=500, help="images per target domain (and held-out source)")
    b.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    b.add_argument("--workers", type=int, default=0, help="processes (0: one per processor)")
    b.add_argument("--figure", default=None, help="also save a sample figure (PNG) here")
    b.add_argument("--format", choices=("folders", "hf"), default="folders",
                   help="folders: the real layouts (default); hf: one Hugging Face DatasetDict "
                        "(splits train, validation and one per target; data.kind=hf reads it)")
    b.add_argument("--from", dest="from_dir", default=None,
                   help="with --format hf: export this already written benchmark instead of rendering one")


def _ship_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run folder (e.g. runs/course)")
    p.add_argument("--name", default="course", help="shipped as reinlite/weights/NAME_run.* (default course)")
    p.add_argument("--command", default="", help="the command that trained it (recorded)")


# ----------------------------------------------------------------------------- runs that print or adapt
def run_info(args) -> int:
    import time
    from dataclasses import asdict

    import torch

    from reinlite.config import load_config
    from reinlite.models.backbone import build_backbone, parameter_table

    pretrained = {"true": True, "false": False}.get(args.pretrained.lower(), args.pretrained)
    rein = asdict(load_config("gta2cs_dinov2_large").model.rein)
    rein.update({k: v for k, v in dict(num_tokens=args.num_tokens, rank=args.rank).items() if v is not None})
    start = time.perf_counter()
    bb = build_backbone(args.backbone, pretrained=pretrained, img_size=args.img_size, rein=rein)
    h, w = args.img_size or bb.vit.patch_embed.img_size
    with torch.no_grad():
        feats, queries = bb(torch.randn(1, 3, h, w))
    print(f"backbone {args.backbone} ({'pretrained' if pretrained else 'random'}), input 1x3x{h}x{w}, "
          f"{len(bb.vit.blocks)} blocks, embed dim {bb.embed_dim}, patch {bb.patch_size}")
    for f, s in zip(feats, bb.strides):
        print(f"  stride {s:>2}: {tuple(f.shape)}")
    print(f"  queries  : {tuple(queries.shape)}")
    print(parameter_table(bb))
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def run_demo(args) -> int:
    from reinlite.engine.demo import run_demo as demo

    demo(args.config, args.overrides)
    return 0


def run_ship_run(args) -> int:
    from reinlite.course import checkout_weights_dir, ship_run

    path = ship_run(args.run_dir, args.name, args.command, dest=checkout_weights_dir())
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def run_probe(args) -> int:
    from reinlite.experiments.probe import run

    out = run(args)
    print(out["table"])
    if "pca" in out:
        print(f"saved {out['pca']}")
    return 0


def run_pretrain(args) -> int:
    from reinlite.experiments import command_of
    from reinlite.experiments.pretrain import add_arguments, run

    return run(args, command_of("reinlite pretrain", args, add_arguments))


def run_pretrain_mae(args) -> int:
    from reinlite.experiments import command_of
    from reinlite.experiments.pretrain_mae import add_arguments, run

    run(args, command_of("reinlite pretrain-mae", args, add_arguments))
    return 0


def run_domain_shift(args) -> int:
    from reinlite.experiments.domain_shift import run

    print(run(args)["table"])
    return 0


def run_sweep(args) -> int:
    from reinlite.experiments import command_of
    from reinlite.experiments.sweep import add_arguments, run, summarise

    overrides = list(args.overrides or []) + list(getattr(args, "extra_overrides", None) or [])
    command = " ".join([command_of("reinlite sweep", args, add_arguments), *overrides])
    data = run(args, command)
    if data.get("runs"):
        print(summarise(data["runs"], data.get("config", {})))
    return 0


# ----------------------------------------------------------------------------- the table
X = "reinlite.experiments"
COMMANDS = [
    Command("info", "build a backbone with Rein, run an image through it, print parameters", _info_args, run_info),
    Command("demo", "the main job on the embedded defaults (what `make demo` runs): write the benchmark if "
                    "missing, train Rein on the course config, evaluate on every target domain",
            lambda p: _config_args(p, default="course"), run_demo),
    Command("train", "train Rein + Mask2Former head (torchrun for several GPUs)", _train_args,
            "reinlite.engine.train:run_train_cli"),
    Command("eval", "per-domain mIoU of a trained checkpoint (slide-window inference)", _eval_args,
            "reinlite.engine.evaluate:run_eval_cli"),
    Command("predict", "coloured segmentation overlays of images", _predict_args,
            "reinlite.engine.evaluate:run_predict_cli"),
    Command("ship-run", "copy a finished run's trained weights into reinlite/weights (what the notebooks load)",
            _ship_run_args, run_ship_run),
    Command("data", "datasets: write the embedded benchmark (folders or a Hugging Face dataset)", _data_args, "reinlite.data.benchmark:run_benchmark_cli"),
    Command("costs", "step time, peak memory and parameters of Rein vs frozen / full / LoRA / VPT / AdaptFormer",
            f"{X}.costs:add_arguments", f"{X}.costs:run_bench", aliases=("bench",)),
    Command("gpu-check", "the GPU path in one call (<= 8 min): Rein vs full fine-tuning time and memory against "
                         "the paper's Table 8, bf16, compile, slide inference, NCCL; --tiny: seconds on the CPU",
            f"{X}.gpu_check:add_arguments", f"{X}.gpu_check:run_cli"),
    Command("probe", "linear probe of frozen backbone features, source -> targets, vs a random ViT",
            f"{X}.probe:add_arguments", run_probe),
    Command("pretrain", "pretrain the proxy-supervised course backbone (course_vit)",
            f"{X}.pretrain:add_arguments", run_pretrain),
    Command("pretrain-mae", "pretrain the self-supervised course backbone (course_vit_mae, MAE-style)",
            f"{X}.pretrain_mae:add_arguments", run_pretrain_mae),
    Command("domain-shift", "train a small CNN on the source, mIoU on every target: is the shift real?",
            f"{X}.domain_shift:add_arguments", run_domain_shift),
    Command("sweep", "Rein vs the baselines and its ablations at one budget, over seeds and backbones "
                     "(learning curves with --eval-at)", f"{X}.sweep:add_arguments", run_sweep),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reinlite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, aliases=list(command.aliases))
        _load(command.arguments)(p)
        p.set_defaults(func=command.run)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input (one line, exit 2), not a bug (a traceback)."""
    from reinlite.errors import InputError  # ConfigError is one
    from reinlite.weights import CheckpointError

    return InputError, CheckpointError, FileNotFoundError


def main(argv: Optional[Sequence[str]] = None) -> int:
    import logging
    import os

    # Idle OpenMP threads sleep instead of spinning: on a machine whose cores other jobs share,
    # spinning threads made 2-thread steps 3-15x slower (docs/speed.md). Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(_load(args.func)(args) or 0)
    except Exception as err:
        if not isinstance(err, user_errors()):
            raise
        print(f"reinlite {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
