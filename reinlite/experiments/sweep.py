"""The paper's claims in small: Rein vs the baselines, and its ablations, with one budget.

Every run is the course training (``reinlite.engine.train.train``) with the *same* budget
(iterations, batch, crop, head, learning rate, data); a run changes only config keys:
``model.method``, ``model.rein.*`` (Rein) or the baseline's options (given as
``model.method_kwargs``, which the config folds into ``model.lora`` / ``vpt`` / ``adaptformer``), and
per run ``model.backbone`` / ``model.pretrained`` (``--backbones``). The one builder
(``reinlite.models.segmentor.build_model(cfg.model)``) builds every method, so each run's checkpoint
records its method and rebuilds itself (``reinlite.engine.evaluate.load_run``; the sweep evaluates
through it). Each run is evaluated on the source's held-out split and every unseen target
domain; the tables give mean +- standard deviation over seeds per domain.

    reinlite sweep --groups methods --seeds 0 1 2 optim.iters=300
    reinlite sweep --groups tokens rank pieces --seeds 0 optim.iters=300
    reinlite sweep --groups methods --only rein frozen full --backbones course_vit course_vit_mae random \\
        --seeds 0 1 optim.iters=900
    reinlite sweep --groups methods --only rein frozen full --eval-at 300 600 1200 2500 optim.iters=2500
    reinlite sweep --list                     # the runs, without running them

Groups:
  methods  rein | frozen | full (backbone lr x0.1, the authors' corrected config, release issue
           #45) | lora | vpt (prompts=--vpt-prompts) | adaptformer (their config defaults) | full_lr1 (full
           fine-tuning with the backbone at the head's lr: why the multiplier exists)
  tokens   Rein with m in 2, 10, 25, 50, 100, 200 and the base m (the paper sweeps 25..200; m=1
           is impossible: token 0 is the "do nothing" sink, so m >= 2). The decoder has m
           queries, so m also sets how many masks the head can predict.
  rank     Rein with r in 4, 8, 16, 32 and full rank
  pieces   tokens only (full rank, no MLPs, no queries: Delta f = S T + f) -> + shared MLPs
           -> + low rank -> + queries (= Rein). The paper's first step, "Rein-core", has
           per-layer MLPs (52.84M on DINOv2-L); "tokens only" has none, so it is a smaller
           first step than the paper's.

Backbones (``--backbones``, default: the config's): ``course_vit`` (proxy-supervised),
``course_vit_mae`` (self-supervised, MAE-style), ``random`` (a random ViT of the same shape:
``model.pretrained=false``), or ``LABEL=PATH`` (course_vit's shape with the weights file PATH,
e.g. an earlier pretraining step).

Learning curves (``--eval-at K1 K2 ...``): each run trains to K1, is evaluated, continues to
K2 (exact resume from its checkpoint), ... up to ``optim.iters``; every point records the
per-domain mIoU and, for Rein, the mean pairwise cosine of its queries ``rein.queries()``.

A run whose method, arguments and backbone equal an already finished run at the same seed
(rank 16 in the rank group, "+ queries" in the pieces group: both are the base Rein) is not
trained again: its record is copied, with ``same_as`` naming the run it reuses.

Results go to ``--out`` (default docs/sweep): ``results.json`` (every run: method, overrides,
backbone, trainable parameters, per-domain mIoU, curve, seconds) and ``results.md``. Finished
runs are skipped, so an interrupted sweep resumes where it stopped (an interrupted training
resumes from its checkpoint, a learning curve from its last evaluated point). The train
config's ``key=value`` overrides apply to every run.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from reinlite.config import FULL_BACKBONE_LR_MULT, AdaptFormerConfig, LoraConfig, normalise
from reinlite.errors import InputError
from reinlite.experiments import sweep_tables

log = logging.getLogger(__name__)

GROUPS = ("methods", "tokens", "rank", "pieces")
REIN_SIZE_KEYS = ("num_tokens", "rank", "query_dim")
BACKBONES = {  # label -> config overrides
    "course_vit": ["model.backbone=course_vit", "model.pretrained=true"],
    "course_vit_mae": ["model.backbone=course_vit_mae", "model.pretrained=true"],
    "random": ["model.backbone=course_vit", "model.pretrained=false"],
}


class SweepError(InputError):
    """A results folder that cannot take these runs, or arguments that make no run."""


_TOP_LEVEL_KEYS = ("name", "seed", "device", "amp", "threads", "out_dir")


def is_override(arg: str) -> bool:
    """``key=value`` with a dotted config key (or a top-level one such as ``seed``)."""
    if arg.startswith("-") or "=" not in arg:
        return False
    k = arg.split("=", 1)[0]
    return ("." in k and "/" not in k) or k in _TOP_LEVEL_KEYS


# ----------------------------------------------------------------------------- the runs
def run_specs(groups, rein_base: dict, vpt_prompts: int) -> list[dict]:
    """(name, group, method, kwargs, overrides) of every run in ``groups``.

    ``kwargs`` are Rein's keywords (method rein) or the baseline's ``method_kwargs``;
    ``overrides`` are further config keys of the run (e.g. the backbone lr multiplier).
    """
    specs: list[dict] = []

    def add(name, group, method, overrides=(), **kw):
        specs.append(dict(name=name, group=group, method=method, kwargs=kw, overrides=list(overrides)))

    if "methods" in groups:
        add("rein", "methods", "rein", **rein_base)
        add("frozen", "methods", "frozen")
        add("full", "methods", "full", overrides=[f"optim.backbone_lr_mult={FULL_BACKBONE_LR_MULT}"])
        add("lora", "methods", "lora", rank=LoraConfig.rank)
        add("vpt", "methods", "vpt", num_prompts=vpt_prompts)
        add("adaptformer", "methods", "adaptformer", bottleneck=AdaptFormerConfig.bottleneck)
        add("full_lr1", "methods", "full", overrides=["optim.backbone_lr_mult=1.0"])
    if "tokens" in groups:
        for m in sorted({2, 10, 25, 50, 100, 200, rein_base["num_tokens"]}):  # and the base m
            add(f"rein_m{m}", "tokens", "rein", **{**rein_base, "num_tokens": m})
    if "rank" in groups:
        for r in (4, 8, 16, 32, None):
            add(f"rein_r{r or 'full'}", "rank", "rein", **{**rein_base, "rank": r})
    if "pieces" in groups:
        add("tokens_only", "pieces", "rein",
            **{**rein_base, "rank": None, "link_to_queries": False, "shared_mlps": False})
        add("tokens+shared_mlps", "pieces", "rein", **{**rein_base, "rank": None, "link_to_queries": False})
        add("+low_rank", "pieces", "rein", **{**rein_base, "link_to_queries": False})
        add("+queries (Rein)", "pieces", "rein", **rein_base)
    return specs


def summarise(records: list[dict], cfg: dict) -> str:
    """results.md: the tables of ``records`` (reinlite.experiments.sweep_tables) in the canonical
    order of :func:`run_specs`."""
    specs = run_specs(GROUPS, dict(num_tokens=32, rank=16, query_dim=128), 50)
    return sweep_tables.summarise(records, cfg, order=[(s["group"], s["name"]) for s in specs])


def backbone_overrides(label: Optional[str]) -> list[str]:
    """Config overrides of a ``--backbones`` entry (None: the config's own backbone)."""
    if label is None:
        return []
    if label in BACKBONES:
        return list(BACKBONES[label])
    if "=" in label:
        _, path = label.split("=", 1)
        return ["model.backbone=course_vit", f"model.pretrained={path}"]
    raise SweepError(f"unknown backbone {label!r}: use one of {', '.join(BACKBONES)} or LABEL=PATH")


def backbone_label(label: Optional[str]) -> Optional[str]:
    return label.split("=", 1)[0] if label and "=" in label else label


def run_overrides(spec: dict, backbone: Optional[str] = None) -> list[str]:
    """The config overrides that make ``spec`` (on ``backbone``) out of the sweep's base config."""
    out = [f"model.method={spec['method']}"]
    if spec["method"] == "rein":
        out += [f"model.rein.{k}={json.dumps(v)}" for k, v in spec["kwargs"].items()]
        out.append("model.method_kwargs={}")
    else:
        out.append(f"model.method_kwargs={json.dumps(spec['kwargs'], sort_keys=True)}")
    return out + list(spec.get("overrides", [])) + backbone_overrides(backbone)


def run_name(spec: dict, seed: int, backbone: Optional[str] = None) -> str:
    name = f"{spec['name']}_s{seed}" + (f"_{backbone_label(backbone)}" if backbone else "")
    return name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "plus_")


def _diagnostics_at(run_dir: Path, step: int, model) -> dict:
    """Rein's diagnostics at ``step``: the scale and query cosine of the model, and the feature
    delta ratio of the training log's last line at or before that step (``reinlite.engine.diagnostics``;
    the same step when ``train.log_every`` divides it), with the step it was measured at."""
    from reinlite.engine.diagnostics import query_cosine, rein_scale

    out = dict(query_cosine=query_cosine(model), rein_scale=rein_scale(model),
               rein_delta_ratio=None, rein_delta_ratio_layers=None, rein_delta_ratio_step=None)
    log_path = run_dir / "log.jsonl"
    if out["rein_scale"] is not None and log_path.is_file():
        for line in log_path.read_text().splitlines():
            entry = json.loads(line)
            if "rein_delta_ratio" in entry and entry.get("step", step + 1) <= step:
                out["rein_delta_ratio"] = entry["rein_delta_ratio"]
                out["rein_delta_ratio_layers"] = entry.get("rein_delta_ratio_layers")
                out["rein_delta_ratio_step"] = entry["step"]
    return out


# ----------------------------------------------------------------------------- one run
def _evaluate_checkpoint(checkpoint, domains, expect_method: str) -> tuple[dict, object, object]:
    """Rebuild the run from its checkpoint alone and evaluate it: (results, model, cfg)."""
    import torch

    from reinlite.engine.evaluate import evaluate
    from reinlite.engine.evaluate import load_run

    model, cfg = load_run(checkpoint)
    if cfg.model.method != expect_method:
        raise SweepError(f"{checkpoint} rebuilt as method {cfg.model.method!r}, expected {expect_method!r}")
    with torch.no_grad():
        res = evaluate(model.eval(), cfg, domains, progress=False)
    return res, model, cfg


def run_one(spec: dict, seed: int, base: dict, out: Path, eval_source: bool,
            backbone: Optional[str] = None, eval_at: Sequence[int] = ()) -> dict:
    """Train and evaluate one (spec, seed, backbone); returns its result record.

    ``base`` is the sweep's config as a dict (``cfg.to_dict()``); with ``eval_at`` the run is
    evaluated at each of those steps on the way to ``optim.iters`` (a learning curve).
    """
    from reinlite.config import load_config
    from reinlite.engine.train import train
    from reinlite.models.backbone import count_parameters

    name = run_name(spec, seed, backbone)
    run_dir = out / "runs" / name
    cfg = load_config(base, run_overrides(spec, backbone) + [
        f"seed={seed}", f"name={json.dumps(name)}", f"out_dir={json.dumps(str(run_dir))}"])
    d = cfg.data
    domains = ([d.source] if eval_source else []) + list(d.targets)
    iters = int(cfg.optim.iters)
    points = sorted({int(k) for k in eval_at if 0 < int(k) < iters} | {iters})
    curve_path = run_dir / "curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.is_file() else []
    train_seconds, result = 0.0, None
    for k in points:
        if any(p["step"] == k for p in curve):
            continue
        t0 = time.perf_counter()
        result = train(cfg, stop_at=k)
        train_seconds += time.perf_counter() - t0
        if result["step"] != k:
            raise SweepError(f"{run_dir}: training stopped at step {result['step']}, expected {k} "
                             f"(a checkpoint beyond this point? remove {run_dir} to redo the curve)")
        if k == iters:
            break
        res, model, _ = _evaluate_checkpoint(result["checkpoint"], domains, cfg.model.method)
        curve.append(dict(step=k, miou={dk: v["miou"] for dk, v in res["domains"].items()},
                          mean_targets=res["mean"], eval_seconds=res["seconds"],
                          **_diagnostics_at(run_dir, k, model)))
        run_dir.mkdir(parents=True, exist_ok=True)
        curve_path.write_text(json.dumps(curve, indent=1) + "\n")
    res, model, stored = _evaluate_checkpoint(result["checkpoint"], domains, cfg.model.method)
    rec = dict(name=spec["name"], group=spec["group"], method=stored.model.method, kwargs=spec["kwargs"],
               overrides=run_overrides(spec, backbone), backbone=backbone_label(backbone), seed=seed,
               trainable_backbone=count_parameters(model.backbone, trainable_only=True),
               trainable_total=count_parameters(model, trainable_only=True),
               miou={k: v["miou"] for k, v in res["domains"].items()}, mean_targets=res["mean"],
               targets=res["targets"], train_seconds=train_seconds, eval_seconds=res["seconds"],
               steps=result["step"], final_loss=(result.get("losses") or [None])[-1],
               checkpoint=str(result["checkpoint"]), **_diagnostics_at(run_dir, result["step"], model))
    if eval_at:
        curve.append(dict(step=iters, miou=rec["miou"], mean_targets=rec["mean_targets"],
                          eval_seconds=res["seconds"], **_diagnostics_at(run_dir, iters, model)))
        rec["curve"] = sorted(curve, key=lambda p: p["step"])
    return rec


def backbone_stamp(cfg: dict, label: Optional[str] = None) -> str:
    """What a backbone's weights are: a shipped course backbone's sha256, else name + pretrained."""
    from reinlite.weights import COURSE_BACKBONES, WEIGHTS_DIR

    m = dict(cfg["model"])
    for item in backbone_overrides(label):
        key, value = item.split("=", 1)
        m[key.split(".")[1]] = {"true": True, "false": False}.get(value, value)
    if m["backbone"] in COURSE_BACKBONES and m["pretrained"] is True:
        meta = json.loads((WEIGHTS_DIR / f"{m['backbone']}.json").read_text())
        return f"{m['backbone']} sha256 {meta['sha256']}"
    return f"{m['backbone']} pretrained={m['pretrained']}"


# ----------------------------------------------------------------------------- the sweep
class _ListAndOverrides(argparse.Action):
    """A list option (nargs="+") that lets ``key=value`` overrides follow it on the line."""

    def __init__(self, *args, convert=str, allowed=None, **kwargs):
        self.convert, self.allowed = convert, allowed
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        extra = [v for v in values if is_override(v)]
        values = [v for v in values if v not in extra]
        if not values:
            parser.error(f"{option_string}: expected at least one value")
        if self.allowed is not None:
            bad = [v for v in values if v not in self.allowed]
            if bad:
                parser.error(f"{option_string}: invalid choice {bad[0]!r} (choose from {', '.join(self.allowed)})")
        try:
            setattr(namespace, self.dest, [self.convert(v) for v in values])
        except ValueError as err:
            parser.error(f"{option_string}: {err}")
        namespace.extra_overrides = list(getattr(namespace, "extra_overrides", None) or []) + extra


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="course", help="train config name or path (default course)")
    p.add_argument("--groups", nargs="+", default=["methods"], action=_ListAndOverrides, allowed=GROUPS,
                   help=f"run groups ({', '.join(GROUPS)})")
    p.add_argument("--seeds", type=str, nargs="+", default=[0, 1, 2], action=_ListAndOverrides, convert=int)
    p.add_argument("--only", nargs="+", default=None, action=_ListAndOverrides, help="run only these run names")
    p.add_argument("--backbones", nargs="+", default=None, action=_ListAndOverrides,
                   help="run every spec on each: course_vit, course_vit_mae, random (same shape, "
                        "model.pretrained=false) or LABEL=PATH (default: the config's backbone)")
    p.add_argument("--eval-at", nargs="+", default=None, action=_ListAndOverrides, convert=int,
                   metavar="STEP", help="learning curves: also evaluate each run at these steps")
    p.add_argument("--vpt-prompts", type=int, default=None,
                   help="VPT prompts per layer (default: the config's model.vpt.num_prompts)")
    p.add_argument("--out", default="docs/sweep")
    p.add_argument("--no-source", action="store_true", help="skip the source's held-out split")
    p.add_argument("--list", action="store_true", help="print the runs and exit")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each in its own process (use --jobs 2 with the course "
                        "config's 1 thread per run on a 2-core machine)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="train config overrides (every run), e.g. optim.iters=300")


def _config_diff(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new))
                for d in _config_diff(old.get(k, "<missing>"), new.get(k, "<missing>"), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _set_threads(threads: int) -> None:
    """A worker process's torch (and OpenMP) thread count."""
    import torch

    torch.set_num_threads(int(threads))


def run(args: argparse.Namespace, command: str) -> dict:
    """Plan, train (what is not done yet), record and summarise; returns the results dict."""
    import torch

    from reinlite.config import load_config

    overrides = list(args.overrides or []) + list(getattr(args, "extra_overrides", None) or [])
    torch.set_num_threads(args.threads)
    base_cfg = load_config(args.config, overrides + ["train.progress=false"])
    rein = base_cfg.model.rein or load_config("gta2cs_dinov2_large").model.rein  # the release's Rein
    rein_base = {k: getattr(rein, k) for k in REIN_SIZE_KEYS}
    vpt_prompts = base_cfg.model.vpt.num_prompts if args.vpt_prompts is None else args.vpt_prompts
    specs = run_specs(args.groups, rein_base, vpt_prompts)
    if args.only:
        specs = [s for s in specs if s["name"] in args.only]
    backbones = list(args.backbones) if args.backbones else [None]
    for b in backbones:
        backbone_overrides(b)  # unknown names fail before anything runs
    base = base_cfg.to_dict()
    out = Path(args.out)
    if args.list:
        for s in specs:
            print(f"{s['group']:<8} {s['name']:<20} {s['method']:<12} {s['kwargs']} {s['overrides'] or ''} "
                  f"seeds {args.seeds} backbones {[backbone_label(b) or 'config' for b in backbones]}")
        return {}
    if not specs:
        raise SweepError("no run matches --groups / --only")
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    data = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": []}
    stamps = {backbone_label(b) or "config": backbone_stamp(base, b) for b in backbones}
    if data["runs"]:
        strip = lambda c: {k: v for k, v in c.items() if k not in ("seed", "name")}  # noqa: E731
        # the stored config as this version reads it (keys added since take their defaults)
        changed = _config_diff(strip(normalise(data.get("config", {}))), strip(json.loads(json.dumps(base))))
        old_stamps = data.get("backbones") or {"config": data.get("backbone")}
        clash = [k for k in stamps if k in old_stamps and old_stamps[k] != stamps[k]]
        if changed or clash:
            raise SweepError(
                f"{results_path} holds runs made with another configuration (differs in: "
                f"{', '.join(changed[:8]) + (' ...' if len(changed) > 8 else '') or 'backbone weights'}"
                f"{'; backbone ' + ', '.join(f'{k}: {old_stamps[k]} vs {stamps[k]}' for k in clash) if clash else ''}"
                f"); its runs would not be comparable: pass another --out, or move that file away")
        stamps = {**old_stamps, **stamps}
    data["backbones"] = stamps
    data["backbone"] = stamps.get("config") or next(iter(stamps.values()))
    eval_at = sorted(set(args.eval_at or []))

    def key(group, name, seed, bb):
        return group, name, seed, backbone_label(bb)

    done = {(r["group"], r["name"], r["seed"], r.get("backbone")) for r in data["runs"]}
    # seed-major: a partial sweep has every method at the first seeds
    todo = [(spec, seed, bb) for seed in args.seeds for bb in backbones for spec in specs
            if key(spec["group"], spec["name"], seed, bb) not in done]

    # the same configuration twice (the base Rein in several groups) is trained once
    def same_key(method, kwargs, extra, seed, bb):
        return method, json.dumps(kwargs, sort_keys=True), json.dumps(extra or []), seed, bb

    def trained():
        return {same_key(r["method"], r["kwargs"], _spec_overrides(r), r["seed"], r.get("backbone")): r
                for r in data["runs"] if "same_as" not in r}

    to_train, to_copy, planned = [], [], set(trained())
    for spec, seed, bb in todo:
        k = same_key(spec["method"], spec["kwargs"], spec["overrides"], seed, backbone_label(bb))
        (to_copy if k in planned else to_train).append((spec, seed, bb))
        planned.add(k)

    def record(rec):
        log.info("== %s / %s / seed %d%s: mIoU %s  mean(targets) %.1f  train %.0f s", rec["group"], rec["name"],
                 rec["seed"], f" / {rec['backbone']}" if rec.get("backbone") else "",
                 {k: round(v, 1) for k, v in rec["miou"].items()}, rec["mean_targets"], rec["train_seconds"])
        rec["command"] = command
        with _locked(out / ".results.lock"):  # another sweep process may share this folder
            if results_path.is_file():
                on_disk = json.loads(results_path.read_text())
                mine = {(r["group"], r["name"], r["seed"], r.get("backbone")) for r in data["runs"]}
                data["runs"] += [r for r in on_disk["runs"]
                                 if (r["group"], r["name"], r["seed"], r.get("backbone")) not in mine]
                data["backbones"] = {**on_disk.get("backbones", {}), **data["backbones"]}
            data["runs"].append(rec)
            data["config"] = base
            data["command"] = command
            tmp = results_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            tmp.replace(results_path)
            (out / "results.md").write_text(summarise(data["runs"], base) + "\n")

    source = not args.no_source
    if args.jobs <= 1:
        for spec, seed, bb in to_train:
            log.info("== %s / %s / seed %d%s ...", spec["group"], spec["name"], seed, f" / {bb}" if bb else "")
            record(run_one(spec, seed, base, out, source, bb, eval_at))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawned workers start with torch's default thread count: give each --threads
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_set_threads, initargs=(args.threads,)) as pool:
            futures = [pool.submit(run_one, spec, seed, base, out, source, bb, eval_at)
                       for spec, seed, bb in to_train]
            for f in as_completed(futures):
                record(f.result())
    for spec, seed, bb in to_copy:
        src = trained()[same_key(spec["method"], spec["kwargs"], spec["overrides"], seed, backbone_label(bb))]
        record(dict(src, group=spec["group"], name=spec["name"], same_as=f"{src['group']}/{src['name']}"))
    return data


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (POSIX flock) for a read-modify-write of results.json."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _spec_overrides(rec: dict) -> list[str]:
    """The spec's own extra overrides of a recorded run (without method, kwargs and backbone)."""
    skip = ("model.method=", "model.rein.", "model.method_kwargs=", "model.backbone=", "model.pretrained=")
    return [o for o in rec.get("overrides", []) if not o.startswith(skip)]


def main(argv: Optional[Sequence[str]] = None, prog: str = "reinlite sweep") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if is_override(a)]
    args = p.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides + list(args.overrides or [])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import shlex

    data = run(args, prog + " " + " ".join(shlex.quote(a) for a in argv))
    if data.get("runs"):
        print(summarise(data["runs"], data.get("config", {})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
