"""`reinlite gpu-check`: the GPU path, measured in one call, next to the paper's Table 8.

    reinlite gpu-check --out runs/gpu_check            # one GPU, <= 8 minutes in all
    reinlite gpu-check --out /tmp/gc --tiny            # seconds, on the CPU (what the tests run)
    reinlite gpu-check --out /tmp/gc --tiny --device cuda   # a 1-minute smoke test on a GPU

The release configuration (``gta2cs_dinov2_large``: DINOv2-L/16 at 512 x 512 with *random*
weights, no download; Rein m = 100, r = 16; Mask2Former with the deformable pixel decoder;
12,544 points; batch 4), built through the project's one builder (:func:`build`), then:

=================  =====================================================================
phase              what it measures
=================  =====================================================================
step_rein_bf16     Rein training step (forward, Mask2Former loss with Hungarian matching,
step_rein_fp32     backward, AdamW): median seconds over ``--steps`` steps after
step_full_bf16     ``--warmup``, and peak memory (``torch.cuda.max_memory_allocated``: the
step_full_fp32     weights, grads, optimiser state and activations); full fine-tuning alike.
                   bf16 = bf16 autocast (how ``reinlite train`` runs on a GPU); fp32 =
                   no autocast (TF32 matmuls as PyTorch's default leaves them: off).
profile            ``torch.profiler`` over a few Rein bf16 steps: the share of the step
                   spent in the multi-scale deformable attention of the pixel decoder
                   (``reinlite.head.MSDeformAttn``; its ``grid_sample`` calls, forward and
                   backward, told apart from the loss's point sampling by their shapes).
train              ``--train-steps`` (200) Rein steps under bf16 on the embedded benchmark's
                   GTA images upscaled to the crop (random shapes if it is absent), poly
                   lr: every loss finite, the last 20 below the first 20.
slide              slide-window inference (crop 512, stride 341) of 1024 x 512 images
                   (``reinlite.evaluate.infer``): images per second, bf16 and fp32.
ddp                ``torchrun --nproc_per_node=1`` of a minimal DDP step (NCCL on a GPU,
                   gloo on the CPU): the release model wrapped in DistributedDataParallel,
                   a few bf16 steps and an all_reduce.
compile            the Rein bf16 step with ``torch.compile(model)`` in a child process
                   killed at its time budget (skipped then); the compile time and the
                   compiled step's median.
train_cli          ``torchrun --nproc_per_node=1 -m reinlite.cli train`` with the release
                   config, random weights and a few iterations (the real loop on the device).
=================  =====================================================================

Time: every phase has a budget (seconds, :data:`GPU_BUDGETS`); a phase runs with
``min(budget, time left)`` and is *skipped* (reported as such) when less than its minimum
is left of ``--budget`` (480 s, model construction included). Step loops stop at their
phase's budget (``truncated`` in the report). Results: ``gpu_check.json`` and
``gpu_check.md`` in ``--out``. Table 8 of the paper (one RTX 3090 Ti, 40k iterations):
Rein 9.5 h / 10.0 GB, full fine-tuning 11.2 h / 14.7 GB, Rein / full = 0.85 time, 0.68 memory.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import platform
import shlex
import signal
import statistics
import tempfile
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

RELEASE = "gta2cs_dinov2_large"
PAPER = dict(gpu="RTX 3090 Ti", iters=40000, rein_hours=9.5, rein_gb=10.0, full_hours=11.2, full_gb=14.7)
PAPER["time_ratio"] = round(PAPER["rein_hours"] / PAPER["full_hours"], 2)   # 0.85
PAPER["memory_ratio"] = round(PAPER["rein_gb"] / PAPER["full_gb"], 2)       # 0.68

PHASES = ("step_rein_bf16", "step_rein_fp32", "profile", "step_full_bf16", "step_full_fp32",
          "train", "slide", "ddp", "compile", "train_cli")
# (budget, minimum) seconds per phase, in the order they run; the total is --budget.
GPU_BUDGETS = {"build_rein": (60, 5), "step_rein_bf16": (35, 10), "step_rein_fp32": (45, 10),
               "profile": (30, 10), "build_full": (40, 5), "step_full_bf16": (35, 10), "step_full_fp32": (45, 10),
               "train": (110, 30), "slide": (25, 8), "ddp": (60, 30), "compile": (120, 60),
               "train_cli": (60, 40)}
# Tiny: caps only; the two torchrun children get more (two interpreters start on a CPU).
TINY_BUDGETS = {k: (max(b // 2, 10), 1) for k, (b, _) in GPU_BUDGETS.items()}
TINY_BUDGETS.update(ddp=(120, 1), train_cli=(120, 1))
TINY_PHASES = tuple(p for p in PHASES if p != "train_cli")  # `reinlite train`: tests/test_train.py
GIB = 2 ** 30

# The tiny mode: a 4-block ViT-Ti/16 at 64 x 64 with a small head of the same kind (msdeform).
TINY_OVERRIDES = [
    "model.backbone=vit_tiny_patch16_224", "model.img_size=64", "model.patch_size=16",
    'model.backbone_kwargs={"depth": 4}', "model.out_indices=null",
    'model.rein={"num_tokens": 16, "rank": 4, "query_dim": 64}',
    "model.head.hidden_dim=64", "model.head.num_layers=3", "model.head.num_heads=4",
    "model.head.ffn_dim=128", "model.head.mask_dim=64", "model.head.num_queries=16",
    "model.head.pixel_decoder_layers=2", "model.head.pixel_decoder_ffn=128",
    "loss.num_points=256", "optim.batch_size=2", "optim.lr=0.0005", "data.crop_size=[64,64]",
    "eval.crop=[64,64]", "eval.stride=[43,43]",
]


@dataclass
class Settings:
    """What one gpu-check run does (the CLI's arguments)."""

    out: str = "runs/gpu_check"
    tiny: bool = False
    device: str = "auto"            # auto | cuda | cpu
    budget_s: float = 480.0         # the whole run, model construction included
    warmup: Optional[int] = None    # None: 5 (tiny 1)
    steps: Optional[int] = None     # measured steps; None: 20 (tiny 3)
    train_steps: Optional[int] = None  # None: 200 (tiny 12)
    slide_images: Optional[int] = None  # None: 20 (tiny 2)
    ddp_steps: int = 3
    compile: Optional[bool] = None  # None: on a GPU yes, in tiny mode on the CPU no
    phases: Optional[Sequence[str]] = None  # None: all of PHASES (tiny: TINY_PHASES)
    data_root: str = "data/benchmark"

    def resolved(self) -> "Settings":
        s = Settings(**asdict(self))
        s.warmup = (1 if s.tiny else 5) if s.warmup is None else s.warmup
        s.steps = (3 if s.tiny else 20) if s.steps is None else s.steps
        s.train_steps = (12 if s.tiny else 200) if s.train_steps is None else s.train_steps
        s.slide_images = (2 if s.tiny else 20) if s.slide_images is None else s.slide_images
        if s.device == "auto":
            s.device = "cuda" if torch.cuda.is_available() and not s.tiny else "cpu"
        if s.compile is None:
            s.compile = s.device == "cuda"
        s.phases = list((TINY_PHASES if s.tiny else PHASES) if s.phases is None else s.phases)
        unknown = sorted(set(s.phases) - set(PHASES))
        if unknown:
            raise ValueError(f"unknown gpu-check phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
        return s


# ----------------------------------------------------------------------------- the project's API
# Everything that touches the project's config / builder / data lives in these functions.
def check_config(tiny: bool, method: str = "rein", extra: Sequence[str] = ()):
    """The release config with random weights (``method``: rein | full; full fine-tuning
    trains the backbone at lr x 0.1); tiny: a 4-block ViT-Ti/16 at 64 x 64, a small head."""
    from .config import load_config

    overrides = ["model.pretrained=false", f"model.method={method}"]
    overrides += ["optim.backbone_lr_mult=0.1"] if method == "full" else []
    overrides += TINY_OVERRIDES if tiny else []
    return load_config(RELEASE, overrides + list(extra))


def config_facts(cfg) -> dict[str, Any]:
    """The few config values the check needs and reports, read in one place."""
    m = cfg.model
    return dict(backbone=m.backbone, img_size=m.img_size, method=m.method,
                num_classes=int(m.head.num_classes), crop=list(cfg.data.crop_size),
                batch_size=int(cfg.optim.batch_size), lr=float(cfg.optim.lr),
                backbone_lr_mult=float(cfg.optim.backbone_lr_mult), grad_clip=cfg.optim.grad_clip,
                poly_power=float(cfg.optim.poly_power), iters=int(cfg.optim.iters),
                eval_crop=list(cfg.eval.crop), eval_stride=list(cfg.eval.stride), seed=int(cfg.seed),
                rein=dict(num_tokens=m.rein.num_tokens, rank=m.rein.rank, query_dim=m.rein.query_dim),
                num_points=int(cfg.loss.num_points))


def build(cfg, device: torch.device):
    """The model through the project's one builder, on ``device``, with its criterion and a
    factory of fresh optimisers: (model, criterion, make_optimizer)."""
    from .model import build_criterion, build_model
    from .optim import build_optimizer

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device)
    criterion = build_criterion(cfg.loss, cfg.model.head.num_classes).to(device)
    return model, criterion, (lambda: build_optimizer(model, cfg.optim))


def domain_images(cfg, domain: str, split: str, count: int, root: str) -> tuple[list, str]:
    """Up to ``count`` (uint8 image [3, H, W], long label [H, W]) of a benchmark domain and
    the source's name; random shapes (the project's test data) without the benchmark."""
    from .config import load_config
    from .data.pipeline import build_dataset, load_sample

    try:
        ds = build_dataset(load_config(cfg, ["data.kind=benchmark", f"data.root={root}", "data.roots={}"]),
                           domain, split)
        source = f"benchmark {root} ({domain}/{split})"
    except (FileNotFoundError, ValueError, OSError):
        ds = build_dataset(load_config(cfg, ["data.kind=random", "data.random_count=16",
                                             "data.random_size=[128,256]"]), domain, split)
        source = "random shapes 128 x 256 (no benchmark at %s)" % root
    return [load_sample(ds, i) for i in range(min(count, len(ds)))], source


# ----------------------------------------------------------------------------- data
def _upscaled_crop(image: torch.Tensor, label: torch.Tensor, crop: Sequence[int],
                   g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize so that the image covers the crop (bilinear / nearest), then a random crop.
    image uint8 [3, H, W], label long [H, W] -> uint8 [3, ch, cw], long [ch, cw]."""
    ch, cw = int(crop[0]), int(crop[1])
    h, w = image.shape[-2:]
    f = max(ch / h, cw / w)
    nh, nw = max(ch, round(h * f)), max(cw, round(w * f))
    img = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)[0]
    lab = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    y0 = int(torch.randint(0, nh - ch + 1, (), generator=g))
    x0 = int(torch.randint(0, nw - cw + 1, (), generator=g))
    img = img[:, y0:y0 + ch, x0:x0 + cw].round().clamp(0, 255).to(torch.uint8)
    return img, lab[y0:y0 + ch, x0:x0 + cw].contiguous()


def make_batches(samples: list, crop: Sequence[int], batch_size: int, count: int, device,
                 seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches (normalised images [B, 3, h, w], labels [B, h, w]) on ``device``,
    cycling through ``samples`` with random upscaled crops."""
    from .data.transforms import normalize

    g = torch.Generator().manual_seed(seed)
    out, k = [], 0
    for _ in range(count):
        ims, labs = [], []
        for _ in range(batch_size):
            im, lab = _upscaled_crop(*samples[k % len(samples)], crop, g)
            ims.append(im)
            labs.append(lab)
            k += 1
        out.append((normalize(torch.stack(ims).to(device)), torch.stack(labs).to(device)))
    return out


# ----------------------------------------------------------------------------- measurements
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_step(net, criterion, optimizer, images, labels, amp: bool,
               grad_clip: Optional[float] = None) -> torch.Tensor:
    """One step as ``reinlite train`` takes it: forward under autocast, the loss outside it,
    the gradient norm (clipped at ``grad_clip``; the release: none), AdamW."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        outputs = net(images)
    loss = criterion(outputs, labels)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    torch.nn.utils.clip_grad_norm_(params, float(grad_clip or "inf"))
    optimizer.step()
    return loss.detach()


def time_steps(net, criterion, optimizer, batch, amp: bool, device: torch.device, warmup: int,
               steps: int, cap_s: float, iters: int) -> dict[str, Any]:
    """Median step time over ``steps`` steps after ``warmup`` (stopping at ``cap_s``) and the
    peak memory of the whole run of steps (CUDA only)."""
    images, labels = batch
    _free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    times, losses, first = [], [], None
    start = time.perf_counter()
    truncated = False
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        loss = train_step(net, criterion, optimizer, images, labels, amp)
        _sync(device)
        dt = time.perf_counter() - t0
        losses.append(float(loss))
        first = dt if first is None else first
        if i >= warmup:
            times.append(dt)
        if time.perf_counter() - start > cap_s and i + 1 < warmup + steps:
            truncated = True
            break
    out: dict[str, Any] = dict(steps=len(times), warmup=min(warmup, len(losses)), truncated=truncated,
                               first_step_s=round(first, 4), median_s=None, hours_40k=None,
                               losses_finite=all(math.isfinite(v) for v in losses),
                               peak_gib=None, reserved_gib=None, before_steps_gib=None)
    if times:
        med = statistics.median(times)
        out.update(median_s=round(med, 4), min_s=round(min(times), 4), max_s=round(max(times), 4),
                   hours_40k=round(med * iters / 3600, 2))
    if device.type == "cuda":
        out.update(peak_gib=round(torch.cuda.max_memory_allocated(device) / GIB, 2),
                   reserved_gib=round(torch.cuda.max_memory_reserved(device) / GIB, 2),
                   before_steps_gib=round(before / GIB, 2))
    if not times:
        out["status"] = "failed"
        out["error"] = f"no step measured within {cap_s:.0f} s (warm-up {warmup})"
    return out


def _event_attr(evt, *names) -> float:
    for n in names:
        if hasattr(evt, n):
            return float(getattr(evt, n))
    return 0.0


MSDEFORM_RANGE = "reinlite.msdeform_attn"
_STATUS_KEYS = ("reason", "error", "log_tail", "by_choice")


def profile_steps(model, criterion, optimizer, batch, amp: bool, device: torch.device,
                  steps: int = 3) -> dict[str, Any]:
    """torch.profiler over ``steps`` training steps (after one unprofiled): the share of the
    step in the multi-scale deformable attention.

    - ``msdeform_sampling_share``: the deformable attention's ``grid_sample`` kernels (forward
      and backward; told from the loss's point sampling, which samples 1-channel masks with
      one point per row, by their input's channels > 1) over all device time (CPU time on a CPU);
    - ``msdeform_forward_share``: everything inside ``MSDeformAttn.forward`` (a
      record_function range around each module; forward only) over the same total;
    - ``..._of_step`` variants divide by the profiled steps' wall time instead.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    from .head import MSDeformAttn

    images, labels = batch
    cuda = device.type == "cuda"
    wrapped = []
    for mod in model.modules():
        if isinstance(mod, MSDeformAttn):
            orig = mod.forward

            def fwd(*a, _orig=orig, **k):
                with record_function(MSDEFORM_RANGE):
                    return _orig(*a, **k)

            mod.forward = fwd
            wrapped.append(mod)
    try:
        train_step(model, criterion, optimizer, images, labels, amp)
        _sync(device)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts, record_shapes=True) as prof:
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(model, criterion, optimizer, images, labels, amp)
            _sync(device)
            wall_us = (time.perf_counter() - t0) * 1e6
    finally:
        for mod in wrapped:
            del mod.forward  # back to the class's forward
    # On a GPU, kineto lists every kernel as an event of its own (device_type CUDA): their
    # self times sum to the device total; an op's (CPU-side) device_time_total is the kernels
    # it and its children launched. On a CPU, the ops' self CPU times sum to the total.
    self_key = ("self_device_time_total", "self_cuda_time_total") if cuda else ("self_cpu_time_total",)
    incl_key = ("device_time_total", "cuda_time_total") if cuda else ("cpu_time_total",)
    total = sampling = point_sampling = forward = 0.0
    ops: dict[str, float] = {}
    for evt in prof.key_averages(group_by_input_shape=True):
        on_cpu = str(getattr(evt, "device_type", "CPU")).endswith("CPU")
        annotation = bool(getattr(evt, "is_user_annotation", False))
        if evt.key == MSDEFORM_RANGE:
            if on_cpu:
                forward = max(forward, _event_attr(evt, *incl_key))
            continue
        if not annotation and (on_cpu != cuda):
            total += _event_attr(evt, *self_key)
        if not on_cpu or annotation:
            continue
        ops[evt.key] = ops.get(evt.key, 0.0) + _event_attr(evt, *self_key)
        if evt.key in ("aten::grid_sampler_2d", "aten::grid_sampler_2d_backward"):
            shapes = getattr(evt, "input_shapes", None) or []
            channels = shapes[0][1] if shapes and len(shapes[0]) == 4 else 0
            if channels > 1:
                sampling += _event_attr(evt, *incl_key)
            else:
                point_sampling += _event_attr(evt, *incl_key)
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:10]
    share = (lambda v, d: round(v / d, 4) if d else None)
    return dict(steps=steps, amp="bf16" if amp else "fp32", msdeform_modules=len(wrapped),
                timer="device (CUDA kernels)" if cuda else "CPU",
                total_ms=round(total / 1e3, 2), wall_ms=round(wall_us / 1e3, 2),
                msdeform_sampling_share=share(sampling, total),
                msdeform_forward_share=share(forward, total),
                msdeform_sampling_of_step=share(sampling, wall_us),
                msdeform_forward_of_step=share(forward, wall_us),
                loss_point_sampling_share=share(point_sampling, total),
                top_ops=[dict(op=k, ms=round(v / steps / 1e3, 3), share=share(v, total)) for k, v in top])


def slide_rate(model, images: list[torch.Tensor], facts: dict, amp: bool, device, cap_s: float) -> dict:
    """Images per second of slide-window inference (crop / stride of the config's eval)."""
    from .evaluate import infer

    model.eval()
    kw = dict(mode="slide", crop=facts["eval_crop"], stride=facts["eval_stride"],
              num_classes=facts["num_classes"], amp=amp)
    infer(model, images[0].to(device), **kw)  # warm-up
    _sync(device)
    times = []
    start = time.perf_counter()
    for im in images:
        t0 = time.perf_counter()
        pred = infer(model, im.to(device), **kw)
        _sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > cap_s:
            break
    model.train()
    h, w = images[0].shape[-2:]
    rows = max(math.ceil((h - facts["eval_crop"][0]) / facts["eval_stride"][0]), 0) + 1
    cols = max(math.ceil((w - facts["eval_crop"][1]) / facts["eval_stride"][1]), 0) + 1
    return dict(images=len(times), size=[int(h), int(w)], windows=rows * cols,
                seconds_per_image=round(statistics.median(times), 4),
                images_per_s=round(1.0 / statistics.median(times), 2),
                pred_shape=list(pred.shape))


# ----------------------------------------------------------------------------- child processes
def _child_env(threads: Optional[int] = None) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_child(cmd: list[str], cap_s: float, result_path: Path, what: str,
               threads: Optional[int] = None) -> dict[str, Any]:
    """Run a child process with a timeout; its JSON result (possibly partial) merged in. The
    child runs in a session of its own, so that a timeout ends it with everything it started
    (torchrun's worker, inductor's compile workers)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_child_env(threads), start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=cap_s)
        rc, timed_out = proc.returncode, False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output, _ = proc.communicate()
        rc, timed_out = None, True
    tail = (output or "")[-1500:]
    res: dict[str, Any] = json.loads(result_path.read_text()) if result_path.is_file() else {}
    res.update(child_s=round(time.perf_counter() - t0, 1), command=shlex.join(cmd))
    if timed_out:
        res.update(status="skipped", reason=f"{what} did not finish within its {cap_s:.0f} s budget")
    elif rc != 0:
        res.update(status="failed", error=f"exit code {rc}", log_tail=tail)
    return res


def _torchrun(module_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
            "-m", *module_args]


def ddp_worker(tiny: bool, device_name: str, steps: int, out: Path) -> int:
    """Run under torchrun: init the process group (NCCL on a GPU, else gloo), DDP-wrap the
    model, a few training steps, an all_reduce; writes ``out`` (rank 0)."""
    import torch.distributed as dist

    backend = "nccl" if device_name == "cuda" else "gloo"
    t0 = time.perf_counter()
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if device_name == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        cfg = check_config(tiny)
        facts = config_facts(cfg)
        model, criterion, make_opt = build(cfg, device)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local] if device.type == "cuda" else None)
        opt = make_opt()
        samples = [(torch.randint(0, 256, (3, *facts["crop"]), dtype=torch.uint8),
                    torch.randint(0, 4, tuple(facts["crop"])) * 3) for _ in range(facts["batch_size"])]
        batch = make_batches(samples, facts["crop"], facts["batch_size"], 1, device)[0]
        losses, times = [], []
        for _ in range(steps):
            _sync(device)
            s = time.perf_counter()
            losses.append(float(train_step(net, criterion, opt, *batch, amp=True)))
            _sync(device)
            times.append(time.perf_counter() - s)
        check = torch.full((1,), float(rank + 1), device=device)
        dist.all_reduce(check)
        ok = float(check) == world * (world + 1) / 2
        if rank == 0:
            out.write_text(json.dumps(dict(
                backend=backend, world=world, device=str(device), steps=steps, losses=losses,
                losses_finite=all(math.isfinite(v) for v in losses), all_reduce_ok=ok,
                last_step_s=round(times[-1], 4), total_s=round(time.perf_counter() - t0, 1),
                status="ok" if ok and all(math.isfinite(v) for v in losses) else "failed")))
    finally:
        dist.destroy_process_group()
    return 0


def compile_worker(tiny: bool, device_name: str, warmup: int, steps: int, out: Path,
                   data_root: str = "data/benchmark") -> int:
    """The Rein bf16 step with torch.compile(model): compile time (the first step) and the
    median step; writes ``out`` after the compile and again at the end."""
    device = torch.device(device_name)
    cfg = check_config(tiny)
    facts = config_facts(cfg)
    model, criterion, make_opt = build(cfg, device)
    opt = make_opt()
    samples, source = domain_images(cfg, "gta", "train", facts["batch_size"], data_root)
    batch = make_batches(samples, facts["crop"], facts["batch_size"], 1, device)[0]
    net = torch.compile(model)
    _sync(device)
    t0 = time.perf_counter()
    train_step(net, criterion, opt, *batch, amp=True)
    _sync(device)
    result = dict(compile_s=round(time.perf_counter() - t0, 1), data=source)
    out.write_text(json.dumps(result))
    res = time_steps(net, criterion, opt, batch, True, device, max(warmup - 1, 0), steps, 1e9, facts["iters"])
    result.update(res)
    out.write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- the run
class Clock:
    """The run's deadline: each phase gets min(its budget, what is left - a reserve)."""

    def __init__(self, total_s: float, reserve_s: float = 3.0):
        self.start, self.total, self.reserve = time.perf_counter(), total_s, reserve_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total - self.elapsed() - self.reserve


def run_gpu_check(settings: Settings) -> dict[str, Any]:
    """Run every phase that fits; returns the report (also written to ``settings.out``).
    The tiny mode on a CPU runs on one thread (its models are too small to gain from more,
    and a shared machine's other jobs make more threads wait)."""
    s = settings.resolved()
    threads = torch.get_num_threads()
    if s.tiny and s.device == "cpu":
        torch.set_num_threads(1)
    try:
        return _run(s)
    finally:
        torch.set_num_threads(threads)


def _run(s: Settings) -> dict[str, Any]:
    device = torch.device(s.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("gpu-check: --device cuda but torch sees no GPU (use --tiny for the CPU mode)")
    if device.type == "cpu" and not s.tiny:
        raise ValueError("gpu-check: no GPU on this machine; DINOv2-L at 512 x 512 does not fit the "
                         "8-minute budget on a CPU: run --tiny (the CPU mode) instead")
    budgets = TINY_BUDGETS if s.tiny else GPU_BUDGETS
    clock = Clock(s.budget_s)
    out_dir = Path(s.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = dict(
        format="reinlite-gpu-check-v1", tiny=s.tiny, settings=asdict(s), paper=PAPER,
        meta=_meta(device), phases={}, results={})
    phases, results = report["phases"], report["results"]

    def phase(name: str, fn: Callable[[float], dict], needs: Sequence[str] = (),
              wanted: Optional[bool] = None) -> Optional[dict]:
        if not (name in s.phases if wanted is None else wanted):
            if wanted is None:
                why = "; the tiny mode leaves it out by default" if s.tiny and name == "train_cli" else ""
                phases[name] = dict(status="skipped", reason=f"not selected (--phases{why})", by_choice=True)
            return None
        budget, minimum = budgets[name]
        missing = [n for n in needs if phases.get(n, {}).get("status") != "ok"]
        cap = min(budget, clock.left())
        if missing:
            phases[name] = dict(status="skipped", reason=f"needs {', '.join(missing)}")
        elif cap < minimum:
            phases[name] = dict(status="skipped", reason=f"would exceed the {s.budget_s:.0f} s total: "
                                f"{max(clock.left(), 0):.0f} s left, needs at least {minimum} s")
        else:
            log.info("gpu-check: %s (budget %.0f s, %.0f s elapsed)", name, cap, clock.elapsed())
            t0 = time.perf_counter()
            try:
                res = fn(cap) or {}
                status = res.pop("status", "ok")
                phases[name] = dict(status=status, seconds=round(time.perf_counter() - t0, 1),
                                    budget_s=round(cap, 1), **{k: v for k, v in res.items() if k in _STATUS_KEYS})
                if res.get("truncated"):  # stopped at its budget: fewer steps than asked for
                    phases[name]["truncated"] = True
                results[name] = {k: v for k, v in res.items() if k not in _STATUS_KEYS}
            except Exception as err:  # a phase that breaks is reported; the others still run
                log.warning("gpu-check: %s failed:\n%s", name, traceback.format_exc())
                phases[name] = dict(status="failed", seconds=round(time.perf_counter() - t0, 1),
                                    budget_s=round(cap, 1), error=f"{type(err).__name__}: {str(err)[:500]}")
            finally:
                _free(device)
        log.info("gpu-check: %s -> %s", name, phases[name]["status"])
        return results.get(name)

    cfg = check_config(s.tiny, "rein")
    facts = config_facts(cfg)
    report["config"] = dict(name=RELEASE, **facts)
    state: dict[str, Any] = {}

    def build_rein(cap):
        t0 = time.perf_counter()
        model, criterion, make_opt = build(cfg, device)
        build_s = time.perf_counter() - t0
        samples, source = domain_images(cfg, "gta", "train", max(16, facts["batch_size"]), s.data_root)
        state.update(model=model, criterion=criterion, make_opt=make_opt, samples=samples,
                     init={k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad})
        state["batch"] = make_batches(samples, facts["crop"], facts["batch_size"], 1, device)[0]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        return dict(build_s=round(build_s, 1), data=source, trainable_params=trainable, params=total,
                    backbone_trainable=sum(p.numel() for p in model.backbone.parameters() if p.requires_grad))

    phase("build_rein", build_rein, wanted=True)

    def steps_of(key: str, amp: bool):
        def fn(cap):
            opt = state[key + "_make_opt"]() if key + "_make_opt" in state else state["make_opt"]()
            model = state.get(key + "_model", state["model"])
            crit = state.get(key + "_criterion", state["criterion"])
            try:
                return time_steps(model, crit, opt, state["batch"], amp, device, s.warmup, s.steps,
                                  cap, facts["iters"])
            finally:
                del opt
        return fn

    step = dict(rein={}, full={})
    step["rein"]["bf16"] = phase("step_rein_bf16", steps_of("rein", True), ["build_rein"])
    step["rein"]["fp32"] = phase("step_rein_fp32", steps_of("rein", False), ["build_rein"])

    def prof(cap):
        opt = state["make_opt"]()
        return profile_steps(state["model"], state["criterion"], opt, state["batch"],
                             True, device, steps=1 if s.tiny else 3)

    phase("profile", prof, ["build_rein"])

    def build_full(cap):
        t0 = time.perf_counter()
        fcfg = check_config(s.tiny, "full")
        model, criterion, make_opt = build(fcfg, device)
        state.update(full_model=model, full_criterion=criterion, full_make_opt=make_opt)
        return dict(build_s=round(time.perf_counter() - t0, 1), backbone_lr_mult=fcfg.optim.backbone_lr_mult,
                    trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad))

    phase("build_full", build_full, ["build_rein"],
          wanted="step_full_bf16" in s.phases or "step_full_fp32" in s.phases)
    step["full"]["bf16"] = phase("step_full_bf16", steps_of("full", True), ["build_full"])
    step["full"]["fp32"] = phase("step_full_fp32", steps_of("full", False), ["build_full"])
    for k in ("full_model", "full_criterion", "full_make_opt"):
        state.pop(k, None)
    _free(device)

    def train_run(cap):
        from .optim import poly_lr, set_lr

        model = state["model"]
        with torch.no_grad():  # a fresh start: the trainable weights as built
            params = dict(model.named_parameters())
            for k, v in state["init"].items():
                params[k].copy_(v)
        opt = state["make_opt"]()
        batches = make_batches(state["samples"], facts["crop"], facts["batch_size"],
                               max(1, len(state["samples"]) // facts["batch_size"]), device, seed=1)
        losses = []
        start = time.perf_counter()
        amp = True
        for k in range(s.train_steps):
            set_lr(opt, poly_lr(facts["lr"], k, s.train_steps, facts["poly_power"]))
            losses.append(float(train_step(model, state["criterion"], opt, *batches[k % len(batches)], amp)))
            if not math.isfinite(losses[-1]) or (time.perf_counter() - start > cap and k + 1 < s.train_steps):
                break
        n = min(20, max(1, len(losses) // 4))
        first, last = statistics.mean(losses[:n]), statistics.mean(losses[-n:])
        finite = all(math.isfinite(v) for v in losses)
        res = dict(steps=len(losses), requested=s.train_steps, truncated=finite and len(losses) < s.train_steps,
                   amp="bf16", data_batches=len(batches),
                   first_mean=round(first, 4), last_mean=round(last, 4), window=n, finite=finite,
                   falls=finite and last < first,
                   seconds_per_step=round((time.perf_counter() - start) / len(losses), 4),
                   losses=[round(v, 4) for v in losses])
        if not (finite and last < first):
            res["status"] = "failed"
            res["error"] = ("loss not finite" if not finite else f"loss did not fall ({first:.3f} -> {last:.3f})")
        return res

    phase("train", train_run, ["build_rein"])

    def slide(cap):
        h, w = (64, 128) if s.tiny else (512, 1024)  # Cityscapes' evaluation size, 1024 x 512
        imgs, source = domain_images(cfg, "cityscapes", "val", s.slide_images, s.data_root)
        imgs = [F.interpolate(im[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
                .round().clamp(0, 255).to(torch.uint8) for im, _ in imgs]
        res = dict(data=source)
        for amp in ((True, False) if device.type == "cuda" or s.tiny else (False,)):
            res["bf16" if amp else "fp32"] = slide_rate(state["model"], imgs, facts, amp, device, cap / 2)
        return res

    phase("slide", slide, ["build_rein"])
    for k in ("model", "criterion", "make_opt", "batch", "init"):
        state.pop(k, None)
    _free(device)

    tmp = out_dir / "children"
    tmp.mkdir(exist_ok=True)
    common = (["--tiny"] if s.tiny else []) + ["--device", s.device]
    child_threads = 1 if s.tiny and s.device == "cpu" else None

    def ddp(cap):
        path = tmp / "ddp.json"
        path.unlink(missing_ok=True)
        return _run_child(_torchrun(["reinlite.gpu_check", "--worker", "ddp", "--out", str(path),
                                     "--ddp-steps", str(s.ddp_steps), *common]),
                          cap, path, "the DDP run", child_threads)

    phase("ddp", ddp)

    def compiled(cap):
        if not s.compile:
            return dict(status="skipped", by_choice=True,
                        reason="torch.compile not requested (tiny mode on a CPU: inductor's C++ "
                               "compile takes minutes; --compile forces it)")
        path = tmp / "compile.json"
        path.unlink(missing_ok=True)
        return _run_child([sys.executable, "-m", "reinlite.gpu_check", "--worker", "compile", "--out",
                           str(path), "--warmup", str(s.warmup), "--steps", str(s.steps),
                           "--data-root", s.data_root, *common],
                          cap, path, "torch.compile (compile + steps)", child_threads)

    phase("compile", compiled)

    def train_cli(cap):
        with tempfile.TemporaryDirectory(prefix="gpu_check_train_") as run_dir:  # no checkpoint in --out
            return _train_cli(cap, Path(run_dir))

    def _train_cli(cap, run_dir: Path):
        crop = facts["crop"]
        overrides = ["model.pretrained=false", "optim.iters=3", "data.kind=random",
                     f"data.random_size=[{crop[0]},{crop[1]}]", "data.num_workers=0",
                     "train.progress=false", "train.resume=none", "train.log_every=1",
                     f"out_dir={run_dir}"] + (TINY_OVERRIDES if s.tiny else [])
        if s.device == "cpu":
            overrides.append("device=cpu")
        res = _run_child(_torchrun(["reinlite.cli", "train", "--config", RELEASE, *overrides]),
                         cap, tmp / "none.json", "reinlite train", child_threads)
        logf = run_dir / "log.jsonl"
        entries = [json.loads(line) for line in logf.read_text().splitlines()] if logf.is_file() else []
        res.update(iters=3, logged_steps=[e["step"] for e in entries],
                   losses=[e["loss"] for e in entries], checkpoint=(run_dir / "checkpoint.safetensors").is_file())
        if res.get("status") is None and not (res["checkpoint"] and entries
                                              and all(math.isfinite(e["loss"]) for e in entries)):
            res.update(status="failed", error="no checkpoint or non-finite loss")
        return res

    phase("train_cli", train_cli)

    summarise(report, step)
    report["total_s"] = round(clock.elapsed(), 1)
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out_dir / "gpu_check.md").write_text(format_markdown(report))
    return report


def _meta(device: torch.device) -> dict[str, Any]:
    meta = dict(torch=torch.__version__, python=platform.python_version(), host=platform.node(),
                device=str(device), started=time.strftime("%Y-%m-%d %H:%M:%S"))
    try:
        import timm
        meta["timm"] = timm.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        meta.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / GIB, 1), cuda=torch.version.cuda,
                    tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
                    bf16_supported=bool(torch.cuda.is_bf16_supported()))
    else:
        meta.update(gpu=None, cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return meta


def summarise(report: dict, step: dict) -> None:
    """Rein / full ratios per precision, next to the paper's."""
    ratios = {}
    for prec in ("bf16", "fp32"):
        r, f = step["rein"].get(prec) or {}, step["full"].get(prec) or {}
        ratio = {}
        if r.get("median_s") and f.get("median_s"):
            ratio["time"] = round(r["median_s"] / f["median_s"], 2)
        if r.get("peak_gib") and f.get("peak_gib"):
            ratio["memory"] = round(r["peak_gib"] / f["peak_gib"], 2)
        if ratio:
            ratios[prec] = ratio
    report["ratios"] = dict(measured=ratios, paper=dict(time=PAPER["time_ratio"], memory=PAPER["memory_ratio"]))
    states = report["phases"].values()
    report["status"] = ("failed" if any(p["status"] == "failed" for p in states) else
                        "partial" if any((p["status"] == "skipped" and not p.get("by_choice")) or p.get("truncated")
                                         for p in states)
                        else "ok")


def _fmt(v, digits=2, unit=""):
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}{unit}"


def format_markdown(report: dict) -> str:
    """Two tables: Rein vs full fine-tuning against Table 8, then every phase's result."""
    m, c, res, ph = report["meta"], report["config"], report["results"], report["phases"]
    where = m.get("gpu") or f"CPU ({m.get('threads')} thread(s))"
    mode = "tiny mode: " if report["tiny"] else ""
    lines = [f"## reinlite gpu-check: {mode}{where}, torch {m['torch']}\n",
             f"{c['backbone']} (random weights) at {c['crop'][0]} x {c['crop'][1]}, batch {c['batch_size']}, "
             f"Rein m = {c['rein']['num_tokens']}, r = {c['rein']['rank']}, Mask2Former (msdeform pixel "
             f"decoder), {c['num_points']} points; run {report['total_s']:.0f} s of a "
             f"{report['settings']['budget_s']:.0f} s budget. Status: **{report['status']}**.\n",
             f"| | Rein | full fine-tuning | Rein / full | paper, Table 8 ({PAPER['gpu']}) |",
             "|---|---|---|---|---|"]
    paper_row = {"time": f"{PAPER['rein_hours']} h / {PAPER['full_hours']} h = {PAPER['time_ratio']}",
                 "memory": f"{PAPER['rein_gb']} / {PAPER['full_gb']} GB = {PAPER['memory_ratio']}"}
    measured = report["ratios"]["measured"]
    for prec in ("bf16", "fp32"):
        r = res.get(f"step_rein_{prec}") or {}
        f = res.get(f"step_full_{prec}") or {}
        ratio = measured.get(prec, {})
        label = "bf16 autocast" if prec == "bf16" else "fp32"
        lines.append(f"| s / iteration, {label} | {_fmt(r.get('median_s'), 3)} | {_fmt(f.get('median_s'), 3)} "
                     f"| {_fmt(ratio.get('time'))} | {paper_row['time']} |")
        lines.append(f"| hours for {PAPER['iters'] // 1000}k iterations, {label} | {_fmt(r.get('hours_40k'), 1)} "
                     f"| {_fmt(f.get('hours_40k'), 1)} | | |")
        lines.append(f"| peak memory GiB, {label} | {_fmt(r.get('peak_gib'))} | {_fmt(f.get('peak_gib'))} "
                     f"| {_fmt(ratio.get('memory'))} | {paper_row['memory']} |")
    comp = res.get("compile") or {}
    lines.append(f"| s / iteration, bf16 + torch.compile | {_fmt(comp.get('median_s'), 3)} | | | |")
    lines += ["", "| phase | status | result | seconds |", "|---|---|---|---|"]
    for name in ("build_rein", "build_full") + PHASES:
        if name not in ph:
            continue
        p = ph[name]
        lines.append(f"| {name} | {p['status']} | {_phase_summary(name, res.get(name) or {}, p)} "
                     f"| {_fmt(p.get('seconds'), 1)} |")
    return "\n".join(lines) + "\n"


def _phase_summary(name: str, r: dict, p: dict) -> str:
    if p["status"] != "ok" and not r:
        return (p.get("reason") or p.get("error") or "").replace("|", "/").replace("\n", " ")[:200]
    if name == "build_rein":
        return (f"{r['params'] / 1e6:.1f}M parameters, {r['trainable_params'] / 1e6:.2f}M trainable "
                f"({r['backbone_trainable']:,} in the backbone), built in {r['build_s']} s; data: {r['data']}")
    if name == "build_full":
        return (f"full fine-tuning: {r['trainable_params'] / 1e6:.1f}M trainable, built in {r['build_s']} s"
                + f", backbone lr x {r.get('backbone_lr_mult')}")
    if name.startswith("step_"):
        text = (f"median {_fmt(r.get('median_s'), 3)} s over {r.get('steps')} steps (warm-up {r.get('warmup')})"
                f"{', truncated' if r.get('truncated') else ''}, peak {_fmt(r.get('peak_gib'))} GiB")
        return text + ("" if r.get("losses_finite") else ", NON-FINITE loss")
    if name == "profile":
        return (f"deformable attention: grid_sample fwd+bwd {_fmt(_pct(r['msdeform_sampling_share']), 1)} % and "
                f"the module's forward {_fmt(_pct(r['msdeform_forward_share']), 1)} % of {r['timer']} time "
                f"({_fmt(_pct(r['msdeform_sampling_of_step']), 1)} % / "
                f"{_fmt(_pct(r['msdeform_forward_of_step']), 1)} "
                f"% of the step's wall time); loss point sampling {_fmt(_pct(r['loss_point_sampling_share']), 1)} %")
    if name == "train":
        cut = " (stopped at its budget)" if r.get("truncated") else ""
        return (f"{r['steps']} of {r['requested']} steps bf16{cut}: "
                f"loss {r['first_mean']:.3f} -> {r['last_mean']:.3f} (means of the first / last "
                f"{r['window']}), finite: {r['finite']}, falls: {r['falls']}")
    if name == "slide":
        parts = [f"{k}: {v['images_per_s']} images/s ({v['windows']} windows of {v['size'][1]} x {v['size'][0]})"
                 for k, v in r.items() if isinstance(v, dict)]
        return "; ".join(parts)
    if name == "ddp":
        if p["status"] != "ok":
            return (p.get("reason") or p.get("error") or "")[:200]
        return (f"{r.get('backend')} world {r.get('world')}: {r.get('steps')} steps, all_reduce ok: "
                f"{r.get('all_reduce_ok')}, losses finite: {r.get('losses_finite')}")
    if name == "compile":
        if p["status"] != "ok":
            return (p.get("reason") or p.get("error") or "")[:200]
        return f"compiled in {r.get('compile_s')} s (first step); median {_fmt(r.get('median_s'), 3)} s"
    if name == "train_cli":
        return (f"`reinlite train` under torchrun: steps {r.get('logged_steps')}, losses "
                f"{[round(v, 3) for v in r.get('losses', [])]}, checkpoint: {r.get('checkpoint')}")
    return ""


def _pct(v):
    return None if v is None else 100 * v


# ----------------------------------------------------------------------------- CLI
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
    p = argparse.ArgumentParser(prog="python -m reinlite.gpu_check", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run_cli(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
