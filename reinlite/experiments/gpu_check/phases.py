"""The measurements: the model through the project's builder, batches of upscaled crops,
the training step as ``reinlite train`` takes it, and what each phase measures of it:

- :func:`time_steps`: median seconds per step after a warm-up, peak CUDA memory;
- :func:`profile_steps`: the share of the step in the multi-scale deformable attention;
- :func:`slide_rate`: images per second of slide-window inference.
"""
from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from reinlite.experiments.gpu_check.settings import GIB

def build(cfg, device: torch.device):
    """The model through the project's one builder, on ``device``, with its criterion and a
    factory of fresh optimisers: (model, criterion, make_optimizer)."""
    from reinlite.models.segmentor import build_criterion, build_model
    from reinlite.engine.optim import build_optimizer

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device)
    criterion = build_criterion(cfg.loss, cfg.model.head.num_classes).to(device)
    return model, criterion, (lambda: build_optimizer(model, cfg.optim))


def domain_images(cfg, domain: str, split: str, count: int, root: str) -> tuple[list, str]:
    """Up to ``count`` (uint8 image [3, H, W], long label [H, W]) of a benchmark domain and
    the source's name; random shapes (the project's test data) without the benchmark."""
    from reinlite.config import load_config
    from reinlite.data.pipeline import build_dataset, load_sample

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
    from reinlite.data.transforms import normalize

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
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_step(net, criterion, optimizer, images, labels, amp: bool,
               grad_clip: Optional[float] = None) -> torch.Tensor:
    """One step as ``reinlite train`` takes it (reinlite.engine.step.train_step: forward under
    autocast, the loss outside it, the gradient norm clipped at ``grad_clip`` (the release:
    none), AdamW) on one batch; returns the loss (detached)."""
    from reinlite.engine import step

    return step.train_step(net, images, lambda outputs: criterion(outputs, labels), optimizer,
                           grad_clip=grad_clip, amp=amp).loss


def time_steps(net, criterion, optimizer, batch, amp: bool, device: torch.device, warmup: int,
               steps: int, cap_s: float, iters: int) -> dict[str, Any]:
    """Median step time over ``steps`` steps after ``warmup`` (stopping at ``cap_s``) and the
    peak memory of the whole run of steps (CUDA only)."""
    images, labels = batch
    free_memory(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    times, losses, first = [], [], None
    start = time.perf_counter()
    truncated = False
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        loss = train_step(net, criterion, optimizer, images, labels, amp)
        sync(device)
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

    from reinlite.models.head import MSDeformAttn

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
        sync(device)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts, record_shapes=True) as prof:
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(model, criterion, optimizer, images, labels, amp)
            sync(device)
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
    from reinlite.engine.evaluate import infer

    model.eval()
    kw = dict(mode="slide", crop=facts["eval_crop"], stride=facts["eval_stride"],
              num_classes=facts["num_classes"], amp=amp)
    infer(model, images[0].to(device), **kw)  # warm-up
    sync(device)
    times = []
    start = time.perf_counter()
    for im in images:
        t0 = time.perf_counter()
        pred = infer(model, im.to(device), **kw)
        sync(device)
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
