"""The run: every selected phase in order, each within min(its budget, the time left of
``--budget``), skipped with its reason when too little is left or a phase it needs did not
run; the report written to ``gpu_check.json`` and ``gpu_check.md``."""
from __future__ import annotations

import json
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from reinlite.experiments.gpu_check.children import run_child, torchrun
from reinlite.models.backbone import count_parameters
from reinlite.experiments.gpu_check.phases import build, domain_images, free_memory, make_batches, profile_steps, slide_rate, time_steps, \
    train_step
from reinlite.experiments.gpu_check.report import format_markdown, summarise
from reinlite.experiments.gpu_check.settings import (GIB, GPU_BUDGETS, PAPER, RELEASE, TINY_BUDGETS, TINY_OVERRIDES, Settings,
                       check_config, config_facts)

log = logging.getLogger(__package__)  # "reinlite.experiments.gpu_check", the name before the split

_STATUS_KEYS = ("reason", "error", "log_tail", "by_choice")


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
    from reinlite.engine.device import pick_device

    device = pick_device(s.device)  # --device cuda without a GPU: a ConfigError (a ValueError)
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
                free_memory(device)
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
        return dict(build_s=round(build_s, 1), data=source,
                    trainable_params=count_parameters(model, trainable_only=True),
                    params=count_parameters(model),
                    backbone_trainable=count_parameters(model.backbone, trainable_only=True))

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
                    trainable_params=count_parameters(model, trainable_only=True))

    phase("build_full", build_full, ["build_rein"],
          wanted="step_full_bf16" in s.phases or "step_full_fp32" in s.phases)
    step["full"]["bf16"] = phase("step_full_bf16", steps_of("full", True), ["build_full"])
    step["full"]["fp32"] = phase("step_full_fp32", steps_of("full", False), ["build_full"])
    for k in ("full_model", "full_criterion", "full_make_opt"):
        state.pop(k, None)
    free_memory(device)

    def train_run(cap):
        from reinlite.engine.optim import poly_lr, set_lr

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
    free_memory(device)

    tmp = out_dir / "children"
    tmp.mkdir(exist_ok=True)
    common = (["--tiny"] if s.tiny else []) + ["--device", s.device]
    child_threads = 1 if s.tiny and s.device == "cpu" else None

    def ddp(cap):
        path = tmp / "ddp.json"
        path.unlink(missing_ok=True)
        return run_child(torchrun(["reinlite.experiments.gpu_check", "--worker", "ddp", "--out", str(path),
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
        return run_child([sys.executable, "-m", "reinlite.experiments.gpu_check", "--worker", "compile", "--out",
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
        res = run_child(torchrun(["reinlite.cli", "train", "--config", RELEASE, *overrides]),
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

