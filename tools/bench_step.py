"""The course training step, old commit vs this tree, side by side in one run.

    python tools/bench_step.py                       # timing: 3b8dff1 vs this tree, 1 and 2 threads
    python tools/bench_step.py --repeats 7 --threads 1 2 --md docs/speed.md --json docs/speed.json
    python tools/bench_step.py --check --steps 20     # numerics: the losses of 20 steps, old vs new
    python tools/bench_step.py --profile --tree .    # torch.profiler table of 3 steps of one tree

The old commit is checked out in a temporary ``git worktree`` (removed afterwards). Every
measurement is a fresh process whose PYTHONPATH starts with *its own* tree, so it imports that
tree's ``reinlite``. The processes are interleaved (old, new, new, old, ...) and the medians over
repeats are compared: on a shared machine the ratio of interleaved runs is what counts, and the
load average of the run is printed with the table.

A process builds the course model (``reinlite/configs/course.json`` of its tree) the old way
(``reinlite.engine.train.load_config / build_model``, a dict config) or, where ``load_config`` gives a
typed config (issue 12's layout), the new way (``reinlite.models.segmentor.build_model(cfg.model)``), the criterion
``reinlite.models.losses.Mask2FormerLoss`` with the course loss config, and AdamW on the trainable
parameters (``reinlite.engine.optim.build_optimizer`` where the tree has it). One step is the
tree's ``reinlite.engine.step.train_step`` (re-seed, forward, loss, zero_grad, backward, clip the
gradient norm at 1.0, AdamW; the same operations written out for trees older than it). The batches are fixed random images and blocky
random label maps (8 x 64 x 128, a few classes each, some void) from a fixed seed, cycled.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "3b8dff1"
RESULT = "BENCH_STEP_RESULT "


# ----------------------------------------------------------------------------- the worker
def _build(threads: int, seed: int = 0):
    """(model, criterion, optimizer, batches) of the course config, from whichever reinlite is
    first on the path."""
    import dataclasses

    import torch

    torch.set_num_threads(threads)
    from reinlite.engine.train import load_config

    cfg = load_config("course")
    if isinstance(cfg, dict):  # the old layout (commit 3b8dff1): a dict, everything in reinlite.engine.train
        from reinlite.engine.train import build_model

        model_cfg, loss_cfg = cfg, dict(cfg["loss"])
        num_classes = cfg["model"]["head"]["num_classes"]
        lr = cfg["optim"]["lr"]
    else:  # the new layout (issue 12): a typed Config, reinlite.models.segmentor builds
        from reinlite.config import load_config
        from reinlite.models.segmentor import build_model

        cfg = load_config("course")
        model_cfg = cfg.model
        loss_cfg = dataclasses.asdict(cfg.loss)
        num_classes = cfg.model.head.num_classes
        lr = cfg.optim.lr
    from reinlite.models.losses import Mask2FormerLoss

    torch.manual_seed(seed)
    model = build_model(model_cfg)
    model.train()
    criterion = Mask2FormerLoss(num_classes=num_classes, **loss_cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    try:  # the tree's one optimizer builder (trees before it: the same AdamW, built here)
        from reinlite.engine.optim import build_optimizer
    except ImportError:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    else:
        optimizer = build_optimizer(params, lr=lr, weight_decay=0.05)
    return model, criterion, optimizer, params, _batches(seed, num_classes)


def _step_function():
    """The tree's one training step (reinlite.engine.step.train_step); for trees older than it,
    the same operations in the same order."""
    try:
        from reinlite.engine.step import train_step
    except ImportError:
        import torch

        def train_step(model, inputs, loss_fn, optimizer, *, params, grad_clip, amp=False):
            losses = loss_fn(model(inputs))
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            return losses
        return train_step
    return lambda *a, **k: train_step(*a, **k).losses


def _batches(seed: int, num_classes: int, count: int = 4, batch: int = 8, size=(64, 128)):
    """``count`` fixed batches: images [B, 3, H, W] ~ N(0, 1) and label maps [B, H, W] made of
    4 x 8 blocks of 2-7 classes per image, with a void (255) rectangle in half of them."""
    import torch

    g = torch.Generator().manual_seed(1000 + seed)
    h, w = size
    out = []
    for _ in range(count):
        images = torch.randn(batch, 3, h, w, generator=g)
        labels = []
        for _ in range(batch):
            k = int(torch.randint(2, 8, (1,), generator=g))
            classes = torch.randperm(num_classes, generator=g)[:k]
            grid = classes[torch.randint(0, k, (4, 8), generator=g)]
            lab = grid.repeat_interleave(h // 4, 0).repeat_interleave(w // 8, 1).clone()
            if torch.rand(1, generator=g) < 0.5:
                y, x = int(torch.randint(0, h // 2, (1,), generator=g)), int(torch.randint(0, w // 2, (1,), generator=g))
                lab[y:y + h // 4, x:x + w // 4] = 255
            labels.append(lab)
        out.append((images, torch.stack(labels)))
    return out


def worker(spec: dict) -> dict:
    import torch

    threads, steps, warmup = int(spec["threads"]), int(spec["steps"]), int(spec["warmup"])
    t_build = time.perf_counter()
    model, criterion, optimizer, params, batches = _build(threads, int(spec.get("seed", 0)))
    build_s = time.perf_counter() - t_build
    compile_s = None
    net = model
    if spec.get("compile"):
        net = torch.compile(model)

    one_step = _step_function()

    def step(k: int) -> dict:
        torch.manual_seed(10_000 + k)  # the loop re-seeds every step
        images, labels = batches[k % len(batches)]
        return one_step(net, images, lambda outputs: criterion(outputs, labels), optimizer,
                        params=params, grad_clip=1.0)

    if spec.get("profile"):
        from torch.profiler import ProfilerActivity, profile

        for k in range(warmup):
            step(k)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            for k in range(warmup, warmup + steps):
                step(k)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=int(spec.get("rows", 40)))
        return dict(table=table)

    times, cpu_times, record = [], [], []
    for k in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        losses = step(k)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if k == 0 and spec.get("compile"):
            compile_s = dt
        if k >= warmup:
            times.append(dt)
            cpu_times.append(dc)
        if spec.get("record"):
            record.append({key: float(v.detach()) for key, v in losses.items()})
    out = dict(times=times, cpu_times=cpu_times, wall_s=statistics.median(times) if times else None,
               cpu_s=statistics.median(cpu_times) if cpu_times else None, build_s=build_s,
               compile_s=compile_s, threads=threads, torch_threads=torch.get_num_threads())
    if spec.get("record"):
        out["losses"] = record
        out["param_sum"] = float(sum(p.detach().double().sum() for p in params))
    return out


# ----------------------------------------------------------------------------- the driver
def spawn(tree: Path, spec: dict) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = str(spec["threads"])
    env.setdefault("HF_HUB_OFFLINE", "1")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=str(tree))
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    raise RuntimeError(f"worker in {tree} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")


class OldTree:
    """``git worktree add --detach TMP COMMIT``, removed on exit."""

    def __init__(self, commit: str):
        self.commit = commit

    def __enter__(self) -> Path:
        self.tmp = Path(tempfile.mkdtemp(prefix="reinlite-old-"))
        self.path = self.tmp / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(self.path), self.commit],
                       check=True, capture_output=True)
        return self.path

    def __exit__(self, *exc):
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.path)],
                       capture_output=True)
        subprocess.run(["rm", "-rf", str(self.tmp)])


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def time_side_by_side(args) -> dict:
    trees_label = {"old": f"{args.old} (worktree)", "new": str(Path(args.new).resolve())}
    runs: dict = {t: {"old": [], "new": []} for t in args.threads}
    loads = [_load()]
    t_start = time.perf_counter()
    with OldTree(args.old) as old_path:
        trees = {"old": old_path, "new": Path(args.new).resolve()}
        for r in range(args.repeats):
            for threads in args.threads:
                order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
                for side in order:
                    spec = dict(threads=threads, steps=args.steps, warmup=args.warmup,
                                compile=bool(args.compile and side == "new"))
                    res = spawn(trees[side], spec)
                    runs[threads][side].append(res)
                    print(f"  round {r + 1}/{args.repeats}  threads {threads}  {side}: "
                          f"step {res['wall_s'] * 1e3:7.1f} ms wall, {res['cpu_s'] * 1e3:7.1f} ms cpu"
                          f"  (load {_load()})", flush=True)
            loads.append(_load())
    rows = []
    for threads in args.threads:
        o, n = runs[threads]["old"], runs[threads]["new"]
        med = lambda rs, key: statistics.median(x[key] for x in rs)  # noqa: E731
        pair_ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(o, n)]
        rows.append(dict(threads=threads, old_ms=med(o, "wall_s") * 1e3, new_ms=med(n, "wall_s") * 1e3,
                         old_cpu_ms=med(o, "cpu_s") * 1e3, new_cpu_ms=med(n, "cpu_s") * 1e3,
                         ratio=med(o, "wall_s") / med(n, "wall_s"),
                         ratio_cpu=med(o, "cpu_s") / med(n, "cpu_s"),
                         pair_ratio_median=statistics.median(pair_ratios),
                         old_spread_ms=[min(x["wall_s"] for x in o) * 1e3, max(x["wall_s"] for x in o) * 1e3],
                         new_spread_ms=[min(x["wall_s"] for x in n) * 1e3, max(x["wall_s"] for x in n) * 1e3]))
    omp = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}
    return dict(old=args.old, new=trees_label["new"], repeats=args.repeats, steps=args.steps, omp_env=omp,
                warmup=args.warmup, compile=bool(args.compile), rows=rows, load_average=loads,
                seconds=round(time.perf_counter() - t_start, 1), cpu_count=os.cpu_count(), runs=runs)


def table(result: dict) -> str:
    lines = [f"Course training step (batch 8 at 64 x 128, 1,024 points), old = {result['old']}, "
             f"new = this tree{' + torch.compile' if result['compile'] else ''}; medians of "
             f"{result['repeats']} interleaved fresh processes x {result['steps']} steps "
             f"(after {result['warmup']} warm-up); load average during the run: "
             f"{' -> '.join(result['load_average'])} on {result['cpu_count']} cores"
             + (f"; {', '.join(f'{k}={v}' for k, v in result['omp_env'].items())}" if result.get("omp_env") else "")
             + ".", "",
             "| threads | old ms/step | new ms/step | speed-up (wall) | speed-up (pairs) | old cpu ms | new cpu ms | speed-up (cpu) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['threads']} | {r['old_ms']:.1f} ({r['old_spread_ms'][0]:.0f}-{r['old_spread_ms'][1]:.0f}) "
                     f"| {r['new_ms']:.1f} ({r['new_spread_ms'][0]:.0f}-{r['new_spread_ms'][1]:.0f}) "
                     f"| **{r['ratio']:.2f}x** | {r['pair_ratio_median']:.2f}x | {r['old_cpu_ms']:.1f} "
                     f"| {r['new_cpu_ms']:.1f} | {r['ratio_cpu']:.2f}x |")
    return "\n".join(lines)


BEGIN, END = "<!-- bench_step:begin -->", "<!-- bench_step:end -->"


def write_block(path: Path, text: str) -> None:
    """Replace the block between BEGIN and END markers in ``path`` (or write the file)."""
    block = f"{BEGIN}\n{text}\n{END}"
    old = path.read_text() if path.is_file() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + block + rest.split(END, 1)[1]
    else:
        new = (old + "\n" if old else "") + block + "\n"
    path.write_text(new)


def check_numerics(args) -> dict:
    """20 (``--steps``) steps in each tree from the same seed; the loss of every step compared."""
    with OldTree(args.old) as old_path:
        spec = dict(threads=args.threads[0], steps=0, warmup=args.steps, record=True)
        old = spawn(old_path, spec)
        new = spawn(Path(args.new).resolve(), spec)
    keys = sorted(old["losses"][0])
    worst = {k: max(abs(a[k] - b[k]) for a, b in zip(old["losses"], new["losses"])) for k in keys}
    last = {k: (old["losses"][-1][k], new["losses"][-1][k]) for k in keys}
    return dict(steps=args.steps, threads=args.threads[0], max_abs_diff=worst,
                final_loss_old=old["losses"][-1]["loss"], final_loss_new=new["losses"][-1]["loss"],
                final_diff=abs(old["losses"][-1]["loss"] - new["losses"][-1]["loss"]),
                param_sum_old=old["param_sum"], param_sum_new=new["param_sum"], last=last,
                loss_old=[x["loss"] for x in old["losses"]], loss_new=[x["loss"] for x in new["losses"]])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--old", default=OLD_COMMIT, help="the commit to compare with (default %(default)s)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per (tree, threads)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per process (5; --check: 20)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--new", default=str(ROOT), help="the tree to compare with the old commit (default: this one)")
    p.add_argument("--compile", action="store_true", help="torch.compile the new tree's model")
    p.add_argument("--check", action="store_true", help="compare the losses of --steps steps instead of timing")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table for --tree")
    p.add_argument("--tree", default=str(ROOT), help="--profile: the tree to profile")
    p.add_argument("--json", default=None, help="write the result as JSON here")
    p.add_argument("--md", default=None, help="write the table (markdown) here")
    args = p.parse_args(argv)
    # a killed run still removes its temporary worktree (SIGTERM -> SystemExit -> __exit__)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.worker:
        print(RESULT + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    if args.profile:
        res = spawn(Path(args.tree).resolve(), dict(threads=args.threads[0], steps=args.steps or 3,
                                                     warmup=args.warmup, profile=True))
        print(res["table"])
        return 0
    if args.check:
        args.steps = args.steps or 20
        res = check_numerics(args)
        print(f"{res['steps']} steps at {res['threads']} thread(s): final loss old {res['final_loss_old']:.8f} "
              f"new {res['final_loss_new']:.8f} (|diff| {res['final_diff']:.2e}); worst |diff| per key over "
              f"all steps: " + ", ".join(f"{k} {v:.1e}" for k, v in res["max_abs_diff"].items()))
        out = res
    else:
        args.steps = args.steps or 5
        out = time_side_by_side(args)
        text = table(out)
        print("\n" + text)
        if args.md:
            write_block(Path(args.md), text)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
