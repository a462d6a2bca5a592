"""`reinlite` command line: a thin dispatcher, one subcommand per module.

    reinlite info                                   the Rein parameter table of a backbone
    reinlite data benchmark --out DIR [--seed N] [--source N] [--target N]
    reinlite train --config NAME_OR_PATH [key=value ...]
    reinlite eval ... ; reinlite predict IMAGE ... --checkpoint CKPT
    reinlite costs (alias: bench)                   what each method costs, side by side
    reinlite gpu-check --out DIR [--tiny]           the GPU path measured (Table 8), one call
    reinlite sweep | probe | pretrain | pretrain-mae | domain-shift ...   experiments (reinlite.experiments)

Each subcommand's ``add_*`` function defines its arguments and sets ``func``, which calls
into the module that owns the work.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


# ----------------------------------------------------------------------------- info (core)
def add_info(sub) -> None:
    p = sub.add_parser("info", help="build a backbone with Rein, run an image through it, print parameters")
    p.add_argument("--backbone", default="course_vit", help="timm ViT name or course_vit (default)")
    p.add_argument("--pretrained", default="true", help="true, false or a local weights file")
    p.add_argument("--img-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--num-tokens", type=int, default=None, help="default: the release config's (100)")
    p.add_argument("--rank", type=int, default=None, help="default: the release config's (16)")
    p.set_defaults(func=run_info)


def run_info(args) -> int:
    import time

    import torch

    from reinlite.models.backbone import build_backbone, parameter_table

    from dataclasses import asdict

    from reinlite.config import load_config

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


# ----------------------------------------------------------------------------- demo (core)
def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded defaults (what `make demo` runs): "
                                    "write the benchmark if missing, train Rein on the course config, "
                                    "evaluate on every target domain")
    p.add_argument("--config", default="course", help="config name or path (default: course)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.iters=200")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from reinlite.engine.demo import run_demo as demo

    demo(args.config, args.overrides)
    return 0


# ----------------------------------------------------------------------------- train / eval / predict (train)
def add_train(sub) -> None:
    p = sub.add_parser("train", help="train Rein + Mask2Former head (torchrun for several GPUs)")
    p.add_argument("--config", required=True, help="a shipped config name (course, gta2cs_dinov2_large) or a .json path")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. optim.iters=200")
    p.add_argument("--stop-at", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from reinlite.engine.train import run_train_cli

    return run_train_cli(args)


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="per-domain mIoU of a trained checkpoint (slide-window inference)")
    p.add_argument("--checkpoint", required=True, help="checkpoint.safetensors or its run folder")
    p.add_argument("--config", default=None, help="config (default: the one stored in the checkpoint)")
    p.add_argument("--domains", nargs="*", default=None, help="target domains (default: the config's data.targets)")
    p.add_argument("--out", default=None, help="folder for the table, metrics.json and the confusion figure")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.stride=[256,256]")
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    from reinlite.engine.evaluate import run_eval_cli

    return run_eval_cli(args)


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="coloured segmentation overlays of images")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--checkpoint", required=True, help="checkpoint.safetensors or its run folder")
    p.add_argument("--out", default=None, help="output folder (default: next to each input, *_pred.png)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours")
    p.set_defaults(func=run_predict)


def run_predict(args) -> int:
    from reinlite.engine.evaluate import run_predict_cli

    return run_predict_cli(args)


# ----------------------------------------------------------------------------- data (data)
def add_data(sub) -> None:
    p = sub.add_parser("data", help="datasets: write the embedded benchmark")
    dsub = p.add_subparsers(dest="data_command", required=True)
    b = dsub.add_parser("benchmark", help="render the embedded DGSS benchmark in the real layouts")
    b.add_argument("--out", required=True, help="output folder (e.g. data/benchmark)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--source", type=int, default=2000, help="source (gta) training images")
    b.add_argument("--target", type=int, default=500, help="images per target domain (and held-out source)")
    b.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    b.add_argument("--workers", type=int, default=0, help="processes (0: one per processor)")
    b.add_argument("--figure", default=None, help="also save a sample figure (PNG) here")
    b.set_defaults(func=run_data)


def run_data(args) -> int:
    from reinlite.data.benchmark import run_benchmark_cli

    return run_benchmark_cli(args)


def add_ship_run(sub) -> None:
    p = sub.add_parser("ship-run", help="copy a finished run's trained weights into reinlite/weights "
                                        "(what the notebooks load)")
    p.add_argument("run_dir", help="the run folder (e.g. runs/course)")
    p.add_argument("--name", default="course", help="shipped as reinlite/weights/NAME_run.* (default course)")
    p.add_argument("--command", default="", help="the command that trained it (recorded)")
    p.set_defaults(func=run_ship_run)


def run_ship_run(args) -> int:
    from reinlite.course import checkout_weights_dir, ship_run

    path = ship_run(args.run_dir, args.name, args.command, dest=checkout_weights_dir())
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


# ----------------------------------------------------------------------------- costs
def add_costs(sub) -> None:
    from reinlite.experiments.costs import add_arguments

    p = sub.add_parser("costs", aliases=["bench"],
                       help="step time, peak memory and parameters of Rein vs frozen / full / LoRA / VPT / AdaptFormer")
    add_arguments(p)
    p.set_defaults(func=run_costs)


def run_costs(args) -> int:
    from reinlite.experiments.costs import run_bench as run

    return run(args)


# ----------------------------------------------------------------------------- gpu-check (gpu)
def add_gpu_check(sub) -> None:
    from reinlite.experiments.gpu_check import add_arguments

    p = sub.add_parser("gpu-check", help="the GPU path in one call (<= 8 min): Rein vs full fine-tuning "
                                         "time and memory against the paper's Table 8, bf16, compile, "
                                         "slide inference, NCCL; --tiny: seconds on the CPU")
    add_arguments(p)
    p.set_defaults(func=run_gpu_check)


def run_gpu_check(args) -> int:
    from reinlite.experiments.gpu_check import run_cli

    return run_cli(args)


# ----------------------------------------------------------------------------- experiments
def add_probe(sub) -> None:
    from reinlite.experiments.probe import add_arguments

    p = sub.add_parser("probe", help="linear probe of frozen backbone features, source -> targets, vs a random ViT")
    add_arguments(p)
    p.set_defaults(func=run_probe)


def run_probe(args) -> int:
    from reinlite.experiments.probe import run

    out = run(args)
    print(out["table"])
    if "pca" in out:
        print(f"saved {out['pca']}")
    return 0


def add_pretrain(sub) -> None:
    from reinlite.experiments.pretrain import add_arguments

    p = sub.add_parser("pretrain", help="pretrain the proxy-supervised course backbone (course_vit)")
    add_arguments(p)
    p.set_defaults(func=run_pretrain)


def run_pretrain(args) -> int:
    from reinlite.experiments import command_of
    from reinlite.experiments.pretrain import add_arguments, run

    return run(args, command_of("reinlite pretrain", args, add_arguments))


def add_pretrain_mae(sub) -> None:
    from reinlite.experiments.pretrain_mae import add_arguments

    p = sub.add_parser("pretrain-mae", help="pretrain the self-supervised course backbone (course_vit_mae, MAE-style)")
    add_arguments(p)
    p.set_defaults(func=run_pretrain_mae)


def run_pretrain_mae(args) -> int:
    from reinlite.experiments import command_of
    from reinlite.experiments.pretrain_mae import add_arguments, run

    run(args, command_of("reinlite pretrain-mae", args, add_arguments))
    return 0


def add_domain_shift(sub) -> None:
    from reinlite.experiments.domain_shift import add_arguments

    p = sub.add_parser("domain-shift", help="train a small CNN on the source, mIoU on every target: is the shift real?")
    add_arguments(p)
    p.set_defaults(func=run_domain_shift)


def run_domain_shift(args) -> int:
    from reinlite.experiments.domain_shift import run

    out = run(args)
    print(out["table"])
    return 0


def add_sweep(sub) -> None:
    from reinlite.experiments.sweep import add_arguments

    p = sub.add_parser("sweep", help="Rein vs the baselines and its ablations at one budget, over seeds "
                                     "and backbones (learning curves with --eval-at)")
    add_arguments(p)
    p.set_defaults(func=run_sweep)


def run_sweep(args) -> int:
    from reinlite.experiments import command_of
    from reinlite.experiments.sweep import add_arguments, run, summarise

    overrides = list(args.overrides or []) + list(getattr(args, "extra_overrides", None) or [])
    command = " ".join([command_of("reinlite sweep", args, add_arguments), *overrides])
    data = run(args, command)
    if data.get("runs"):
        print(summarise(data["runs"], data.get("config", {})))
    return 0


SUBCOMMANDS = [add_info, add_demo, add_train, add_eval, add_predict, add_ship_run, add_data, add_costs,
               add_gpu_check, add_probe, add_pretrain, add_pretrain_mae, add_domain_shift, add_sweep]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reinlite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    import logging
    import os

    # Idle OpenMP threads sleep instead of spinning: on a machine whose cores other jobs share,
    # spinning threads made 2-thread steps 3-15x slower (docs/speed.md). Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:  # ConfigError, CheckpointError too  # bad input: one clear line, no traceback
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"reinlite {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
