"""The phases that run in child processes: :func:`run_child` (a time budget; a timeout ends
the child's whole process session), and the two workers ``python -m reinlite.experiments.gpu_check
--worker ddp | compile`` runs: :func:`ddp_worker` (under torchrun: NCCL / gloo, DDP, an
all_reduce) and :func:`compile_worker` (``torch.compile``: compile time and compiled median)."""
from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from reinlite.experiments.gpu_check.phases import build, domain_images, make_batches, sync, time_steps, train_step
from reinlite.engine.device import pick_device
from reinlite.experiments.gpu_check.settings import check_config, config_facts

def _child_env(threads: Optional[int] = None) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_child(cmd: list[str], cap_s: float, result_path: Path, what: str,
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


def torchrun(module_args: list[str]) -> list[str]:
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
    device = pick_device(device_name, index=local)
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
            sync(device)
            s = time.perf_counter()
            losses.append(float(train_step(net, criterion, opt, *batch, amp=True)))
            sync(device)
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
    sync(device)
    t0 = time.perf_counter()
    train_step(net, criterion, opt, *batch, amp=True)
    sync(device)
    result = dict(compile_s=round(time.perf_counter() - t0, 1), data=source)
    out.write_text(json.dumps(result))
    res = time_steps(net, criterion, opt, batch, True, device, max(warmup - 1, 0), steps, 1e9, facts["iters"])
    result.update(res)
    out.write_text(json.dumps(result))
    return 0
