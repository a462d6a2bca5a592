"""`reinlite costs` (alias `reinlite bench`, `make bench`): what Rein costs next to the
baselines, measured side by side in one run.

    reinlite costs                      # the course configuration on this CPU (a few minutes)
    reinlite costs --amp bf16           # the same under bf16 autocast
    reinlite costs --json costs.json --markdown costs.md

It prints (and writes as markdown and JSON):

1. **Training step** of every method on the course configuration: backbone + the course's
   Mask2Former head + loss (Hungarian matching included) + backward + AdamW step, on one
   fixed batch of rendered benchmark crops. Each (method, repeat) runs in a *fresh process*
   (so memory is measured honestly); repeats are interleaved (method order rotated every
   round) so that load from other processes hits every method alike; medians are printed.
   - time: the median step time of ``--steps`` steps after ``--warmup`` steps;
   - peak memory: ``weights + buffers + (peak RSS during the steps - RSS before them)``:
     the kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs) with glibc's
     mmap threshold pinned so that freed tensors go back to the OS. Everything the step
     allocates (activations kept for backward, grads, optimiser state) is in it.
2. **The Rein layer's overhead**: a Rein step against "frozen+bwd", the same frozen
   backbone and head with the gradient flowing back through every block (what Rein needs,
   minus Rein itself): in the whole training step and in the backbone alone (forward +
   backward of the backbone with a plain loss on its features).
3. **Trainable parameters** of each method for DINOv2-S/B/L shapes at 512 x 512, patch 16
   (built on the meta device: no memory); Rein's DINOv2-L count is the paper's 2,990,081.
4. **DINOv2-L at 512 x 512** with the release's head on a GPU (skipped without one).

Methods: rein (m = ``--num-tokens``, rank and Q from the course config), frozen (head only),
frozen+bwd (reference only), full, lora (r = 8), vpt (``--num-prompts``), adaptformer (64).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from reinlite.config import AdaptFormerConfig, LoraConfig, ReinConfig, VptConfig
from reinlite.errors import InputError

METHODS = ("rein", "frozen", "frozen+bwd", "full", "lora", "vpt", "adaptformer")
TRAINED = ("rein", "full", "lora", "vpt", "adaptformer")  # methods whose backbone part trains
COUNT_BACKBONES = (("DINOv2-S", "vit_small_patch14_dinov2"), ("DINOv2-B", "vit_base_patch14_dinov2"),
                   ("DINOv2-L", "vit_large_patch14_dinov2"))
MMAP_THRESHOLD = 64 * 1024


# ----------------------------------------------------------------------------- configuration
def describe(run, note: str) -> dict[str, Any]:
    """The bench's view of a run config (reinlite.config.Config): the config itself (``run``,
    what every model is built from) and the facts the report prints."""
    from dataclasses import asdict

    return dict(run=run.to_dict(), backbone=dict(name=run.model.backbone, note=note),
                crop_size=list(run.data.crop_size), batch_size=run.optim.batch_size,
                head=asdict(run.model.head), rein=asdict(run.model.rein), source=run.name)


def course_config(num_tokens: int = ReinConfig.num_tokens, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The course run (reinlite/configs/course.json) with Rein at m = ``num_tokens``; the
    baselines learn as many queries. The ViT is built at the crop size."""
    from reinlite.config import load_config

    run = load_config("course", [f"model.rein.num_tokens={num_tokens}", *overrides])
    return describe(run, f"{run.model.backbone} (shipped weights)")


def tiny_config() -> dict[str, Any]:
    """A seconds-long configuration for tests."""
    from reinlite.config import load_config

    run = load_config("course", [
        "name=tiny", "optim.batch_size=1", "data.crop_size=[32,32]", "model.img_size=[32,32]",
        "loss.num_points=64", 'model.rein={"num_tokens": 4, "rank": 2, "query_dim": 16}',
        'model.head={"hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "mask_dim": 16}',
        "model.backbone=vit_tiny_patch16_224", "model.pretrained=false", "model.patch_size=16",
        'model.backbone_kwargs={"depth": 4, "embed_dim": 32, "num_heads": 2}'])
    return describe(run, "tiny ViT (dim 32, depth 4)")


# ----------------------------------------------------------------------------- one measurement
# the baselines' sizes: their config defaults (reinlite.config), the one home
BASELINE_KWARGS = dict(lora=dict(rank=LoraConfig.rank), adaptformer=dict(bottleneck=AdaptFormerConfig.bottleneck))


def run_config(method: str, cfg: dict, num_prompts: int = VptConfig.num_prompts):
    """The run config (reinlite.config.Config) of ``method`` on the bench's ``cfg``."""
    from dataclasses import replace

    from reinlite.config import backbone_lr_mult, from_dict

    if method not in METHODS:
        raise InputError(f"unknown bench method {method!r}; choose from {', '.join(METHODS)}")
    run = from_dict(cfg["run"])
    base = "frozen" if method == "frozen+bwd" else method
    kwargs = dict(num_prompts=num_prompts) if base == "vpt" else BASELINE_KWARGS.get(base, {})
    # the method's own backbone lr factor (x0.1 for full fine-tuning), as `reinlite train` resolves it
    optim = replace(run.optim, backbone_lr_mult=backbone_lr_mult(replace(run.optim, backbone_lr_mult=None), base))
    return replace(run, model=replace(run.model, method=base, method_kwargs=dict(kwargs)), optim=optim)


def build_model(method: str, cfg: dict, num_prompts: int = VptConfig.num_prompts, segmentor: bool = False):
    """(backbone, head) for ``method`` on ``cfg``, through the one builder (reinlite.models.segmentor);
    the whole segmentor (in train mode) with ``segmentor=True``."""
    from reinlite.models.segmentor import build_model as build

    model = build(run_config(method, cfg, num_prompts).model)
    bb, head = model.backbone, model.head
    if method == "frozen+bwd":  # the gradient flows back through every frozen block (no weight grads)
        bb.vit.blocks[0].register_forward_pre_hook(
            lambda module, args: (args[0].detach().requires_grad_(True),) + tuple(args[1:]))
    if segmentor:
        return model.train()
    return bb.train(), head.train()


def _batch(cfg: dict, seed: int = 0):
    """A fixed batch of rendered source-domain crops: normalised images [B,3,H,W], train ids [B,H,W]."""
    import numpy as np
    import torch

    from reinlite.data.classes import CITYSCAPES_LUT
    from reinlite.data.synthetic import render_sample

    from reinlite.data.transforms import normalize

    h, w = cfg["crop_size"]
    images, labels = [], []
    for i in range(cfg["batch_size"]):
        out = render_sample(np.random.SeedSequence([777, seed, i]), "gta", size=(h, w))
        images.append(torch.from_numpy(out["image"]).permute(2, 0, 1))
        labels.append(torch.from_numpy(CITYSCAPES_LUT[out["label"]].astype(np.int64)))
    return normalize(torch.stack(images)), torch.stack(labels)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(method: str, cfg: dict, steps: int = 5, warmup: int = 2, amp: str = "none",
            part: str = "step", threads: int = 1, num_prompts: int = VptConfig.num_prompts, device: str = "cpu",
            seed: int = 0) -> dict[str, Any]:
    """Time ``steps`` training steps of ``method`` (after ``warmup``) and their peak memory.

    part="step": the training step of ``reinlite train`` (reinlite.engine.step.train_step):
    backbone + head + Mask2Former loss + backward + gradient-norm clip + AdamW over the
    release's parameter groups (build_optimizer, the backbone lr multiplier included);
    part="backbone": backbone only, loss = sum of the feature maps' means (+ queries'), the
    same step and optimizer (the head's weights get no gradient, so AdamW skips them).
    Returns dict(times, cpu_times [s], wall_s, cpu_s (medians), peak_bytes, peak_extra_bytes,
    static_bytes, trainable).
    """
    import torch

    from reinlite.engine.device import amp_enabled, pick_device
    from reinlite.engine.optim import build_optimizer, poly_lr, set_lr
    from reinlite.engine.step import train_step
    from reinlite.models.backbone import count_parameters
    from reinlite.models.segmentor import build_criterion

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = pick_device(device)
    model = build_model(method, cfg, num_prompts, segmentor=True).to(dev)
    bb = model.backbone
    images, labels = _batch(cfg, seed)
    images, labels = images.to(dev), labels.to(dev)
    run = run_config(method, cfg, num_prompts)
    criterion = build_criterion(run.loss, run.model.head.num_classes).to(dev)
    optimizer = build_optimizer(model, run.optim)
    set_lr(optimizer, poly_lr(run.optim.lr, 0, run.optim.iters, run.optim.poly_power))
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    trainable = count_parameters(bb, trainable_only=True)
    use_amp = amp_enabled(amp, dev)

    def backbone_loss(outputs):
        feats, queries = outputs
        loss = sum(f.float().mean() for f in feats)
        return loss + queries.float().mean() if queries is not None else loss

    if part == "step":
        net, loss_fn = model, (lambda outputs: criterion(outputs, labels))
    else:
        net, loss_fn = bb, backbone_loss
    nothing_trains = part == "backbone" and not any(p.requires_grad for p in bb.parameters()) \
        and method != "frozen+bwd"

    def step():
        if nothing_trains:  # "frozen" backbone alone: nothing to train, only the forward
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                bb(images)
            return
        train_step(net, images, loss_fn, optimizer, params=trainable_params,
                   grad_clip=run.optim.grad_clip, amp=use_amp)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    static = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    rss0 = _rss_bytes()
    _reset_peak()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        mem0 = torch.cuda.memory_allocated()
    times, cpu_times = [], []
    for i in range(warmup + steps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    if dev.type == "cuda":
        peak_extra = torch.cuda.max_memory_allocated() - mem0
    else:
        peak_extra = max(0, _peak_rss_bytes() - rss0)  # without a reset: the process's peak so far
    return dict(method=method, part=part, amp=amp, times=times, cpu_times=cpu_times,
                wall_s=statistics.median(times), cpu_s=statistics.median(cpu_times),
                peak_extra_bytes=int(peak_extra), static_bytes=int(static),
                peak_bytes=int(static + peak_extra), trainable=int(trainable), threads=threads,
                device=device)


def _worker_main(argv: Sequence[str]) -> int:
    spec = json.loads(argv[0])
    result = measure(**spec)
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    return 0


def _spawn(spec: dict, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "reinlite.experiments.costs", "_worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    raise RuntimeError(f"bench worker for {spec['method']} failed:\n{proc.stderr[-3000:]}")


def run_measurements(methods: Sequence[str], cfg: dict, repeats: int, steps: int, warmup: int, amp: str,
                     part: str, threads: int, num_prompts: int, fresh_process: bool = True,
                     clock: str = "cpu", log=print) -> dict[str, dict]:
    """Medians over ``repeats`` interleaved rounds; each (method, round) in a fresh process.

    ``clock``: "cpu" (process CPU time per step: robust when other jobs share the cores) or
    "wall"; both are recorded, ``median_s`` is the chosen one.
    """
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)  # freed tensors return to the OS: RSS tracks live memory
    env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: CPU time counts work, not spinning
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for r in range(repeats):
        order = list(methods[r % len(methods):]) + list(methods[:r % len(methods)])
        for method in order:
            spec = dict(method=method, cfg=cfg, steps=steps, warmup=warmup, amp=amp, part=part,
                        threads=threads, num_prompts=num_prompts, seed=0)
            res = _spawn(spec, env) if fresh_process else measure(**spec)
            runs[method].append(res)
            log(f"  [{part} {amp} round {r + 1}/{repeats}] {method:<12} cpu {res['cpu_s'] * 1000:7.1f} ms  "
                f"wall {res['wall_s'] * 1000:7.1f} ms  peak {res['peak_bytes'] / 2**20:7.1f} MiB")
    out = {}
    for method, rs in runs.items():
        out[method] = dict(
            median_s=statistics.median(x[f"{clock}_s"] for x in rs),
            spread_s=[min(x[f"{clock}_s"] for x in rs), max(x[f"{clock}_s"] for x in rs)],
            cpu_s=statistics.median(x["cpu_s"] for x in rs), wall_s=statistics.median(x["wall_s"] for x in rs),
            clock=clock,
            peak_bytes=int(statistics.median(x["peak_bytes"] for x in rs)),
            peak_extra_bytes=int(statistics.median(x["peak_extra_bytes"] for x in rs)),
            static_bytes=rs[0]["static_bytes"], trainable=rs[0]["trainable"], runs=rs)
    return out


# ----------------------------------------------------------------------------- counts
def parameter_counts(backbones=COUNT_BACKBONES, num_prompts: int = 150) -> dict[str, dict[str, int]]:
    """Trainable backbone parameters per method at 512 x 512, patch 16 (meta device)."""
    import torch

    from reinlite.models.backbone import count_parameters
    from reinlite.models.baselines import build_peft_backbone

    from dataclasses import asdict

    from reinlite.config import load_config

    release = load_config("gta2cs_dinov2_large")
    args = dict(rein=asdict(release.model.rein), vpt=dict(num_prompts=num_prompts), **BASELINE_KWARGS)
    table: dict[str, dict[str, int]] = {}
    for label, name in backbones:
        row = {}
        for method in ("rein", "frozen", "full", "lora", "vpt", "adaptformer"):
            with torch.device("meta"):
                bb = build_peft_backbone(method, name, img_size=512, patch_size=16, **args.get(method, {}))
            row[method] = count_parameters(bb, trainable_only=True)
        table[label] = row
    return table




# ----------------------------------------------------------------------------- GPU
def gpu_comparison(methods: Sequence[str], steps: int, warmup: int, log=print) -> Optional[dict]:
    """DINOv2-L/16 at 512 x 512 with the release's head, batch 4, bf16 autocast, on a GPU."""
    import torch

    if not torch.cuda.is_available():
        log("GPU comparison (DINOv2-L, 512 x 512): skipped, no GPU on this machine")
        return None
    from reinlite.config import load_config

    cfg = describe(load_config("gta2cs_dinov2_large", ["model.pretrained=false"]),
                   "DINOv2-L/16 shape, random weights")
    env = dict(os.environ)
    out = {}
    for method in methods:
        spec = dict(method=method, cfg=cfg, steps=steps, warmup=warmup, amp="bf16", part="step",
                    threads=2, num_prompts=150, device="cuda", seed=0)
        try:
            res = _spawn(spec, env)
        except RuntimeError as err:  # e.g. out of memory
            log(f"  [gpu] {method}: failed ({str(err).strip().splitlines()[-1]})")
            continue
        out[method] = res
        res["median_s"] = res["wall_s"]
        log(f"  [gpu] {method:<12} {res['median_s'] * 1000:8.1f} ms  peak {res['peak_bytes'] / 2**30:6.2f} GiB")
    return dict(config=cfg, device=torch.cuda.get_device_name(0), results=out)


def run_bench(args) -> int:
    import torch

    from reinlite.experiments.costs_report import bench_figure, markdown, summarise

    if getattr(args, "from_json", None):
        report = json.loads(Path(args.from_json).read_text())
        print(markdown(report))
        if getattr(args, "figure", None):
            bench_figure(report, args.figure)
            print(f"wrote {args.figure}")
        return 0
    log = print
    cfg = tiny_config() if args.tiny else course_config(args.num_tokens)
    if getattr(args, "backbone", None) or args.img_size or args.batch_size:
        from reinlite.config import from_dict, load_config

        extra = []
        if getattr(args, "backbone", None):
            extra += [f"model.backbone={args.backbone}", "model.pretrained=false",
                      f"model.patch_size={json.dumps(args.patch_size)}"]
        if args.img_size:
            extra += [f"data.crop_size={list(args.img_size)}", f"model.img_size={list(args.img_size)}"]
        if args.batch_size:
            extra.append(f"optim.batch_size={args.batch_size}")
        note = (f"{args.backbone} shape (patch {args.patch_size or 'own'}), random weights"
                if getattr(args, "backbone", None) else cfg["backbone"]["note"])
        cfg = describe(load_config(from_dict(cfg["run"]), extra), note)
    methods = args.methods or list(METHODS)
    for m in methods:
        run_config(m, cfg, args.num_prompts)  # unknown names fail here
    log(f"reinlite costs: {cfg['backbone']['note']}, crop {cfg['crop_size']}, batch {cfg['batch_size']}, "
        f"amp {args.amp}, {args.threads} threads, {args.repeats} rounds x {args.steps} steps")
    common = dict(cfg=cfg, repeats=args.repeats, steps=args.steps, warmup=args.warmup, amp=args.amp,
                  threads=args.threads, num_prompts=args.num_prompts, fresh_process=not args.in_process,
                  clock=args.clock, log=log)
    start = time.perf_counter()
    step = run_measurements(methods, part="step", **common)
    bb_methods = [m for m in methods if m in ("rein", "frozen+bwd", "full")]
    backbone = (run_measurements(bb_methods, part="backbone", **common)
                if {"rein", "frozen+bwd"} <= set(bb_methods) and not getattr(args, "no_backbone_part", False) else {})
    report = dict(command="reinlite costs " + " ".join(getattr(args, "argv", None) or []), device=platform.processor() or "cpu",
                  cpu_count=os.cpu_count(), load_avg=os.getloadavg(), clock=args.clock, threads=args.threads,
                  amp=args.amp, repeats=args.repeats,
                  steps=args.steps, warmup=args.warmup, config=cfg, torch=torch.__version__,
                  step={m: {k: v for k, v in r.items()} for m, r in step.items()},
                  backbone=backbone)
    report["summary"] = summarise(step, backbone)
    if not args.no_counts:
        report["counts"] = parameter_counts(COUNT_BACKBONES[:1] if args.tiny else COUNT_BACKBONES)
    if not args.no_gpu and not args.tiny:
        gpu = gpu_comparison([m for m in ("rein", "frozen", "full", "lora", "vpt", "adaptformer")],
                             steps=args.steps, warmup=args.warmup, log=log)
        if gpu is None:
            report["gpu_skipped"] = "skipped: no GPU on this machine"
        else:
            report["gpu"] = gpu
    report["wall_s"] = time.perf_counter() - start
    text = markdown(report)
    print()
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if getattr(args, "figure", None):
        bench_figure(report, args.figure)
        print(f"wrote {args.figure}")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text + "\n")
        print(f"wrote {args.markdown}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", nargs="+", default=None, help=f"subset of {', '.join(METHODS)}")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds, one fresh process each (default 3)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per process (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast dtype (CPU: bf16 is a lever)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="time ratios from process CPU time (default; robust on shared cores) or wall time")
    p.add_argument("--num-tokens", type=int, default=ReinConfig.num_tokens,
                   help=f"Rein's m (default {ReinConfig.num_tokens}, the paper's)")
    p.add_argument("--num-prompts", type=int, default=VptConfig.num_prompts,
                   help=f"VPT prompts per layer on the course ViT (default {VptConfig.num_prompts})")
    p.add_argument("--img-size", type=int, nargs=2, default=None, metavar=("H", "W"), help="crop size (default: course)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the course config's")
    p.add_argument("--json", default="bench.json", help="write the full report here (default bench.json)")
    p.add_argument("--markdown", default=None, help="also write the tables here")
    p.add_argument("--backbone", default=None, help="a timm ViT name (random weights) instead of the course ViT")
    p.add_argument("--patch-size", type=int, default=None, help="with --backbone: its patch size (e.g. 16)")
    p.add_argument("--no-backbone-part", action="store_true", help="skip the backbone-only measurements")
    p.add_argument("--figure", default=None, help="also save a bar chart (PNG) here")
    p.add_argument("--from-json", default=None, help="only re-print (and re-plot) a saved report")
    p.add_argument("--no-counts", action="store_true", help="skip the DINOv2 parameter counts")
    p.add_argument("--no-gpu", action="store_true", help="skip the DINOv2-L GPU comparison")
    p.add_argument("--in-process", action="store_true", help="measure in this process (fast, memory less honest)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long configuration (tests)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return _worker_main(argv[1:])
    p = argparse.ArgumentParser(prog="reinlite costs", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    args.argv = argv
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
