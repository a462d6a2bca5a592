#!/usr/bin/env python
"""The paper's claims in small: Rein vs the baselines, and its ablations, with one budget.

Every run is the course training (reinlite/configs/course.json through reinlite.train) with
the *same* budget (iterations, batch, crop, head, learning rate, data) and only the backbone
method changed; each is evaluated on the source's held-out split and every unseen target
domain; the table gives mean +- standard deviation over seeds per domain (and min-max in
the JSON).

    python data_scripts/sweep.py --groups methods --seeds 0 1 2 optim.iters=300
    python data_scripts/sweep.py --groups tokens rank pieces --seeds 0 optim.iters=300
    python data_scripts/sweep.py --list                     # the runs, without running them

Groups:
  methods  rein | frozen | full | lora (r=8) | vpt (prompts=--vpt-prompts) | adaptformer (64)
  tokens   Rein with m in 2, 10, 25, 50, 100, 200 and the base m (the paper sweeps 25..200; m=1
           is impossible: token 0 is the "do nothing" sink, so m >= 2). The decoder has m
           queries, so m also sets how many masks the head can predict.
  rank     Rein with r in 4, 8, 16, 32 and full rank
  pieces   tokens only (full rank, no MLPs, no queries: Delta f = S T + f) -> + shared MLPs
           -> + low rank -> + queries (= Rein). The paper's first step, "Rein-core", has
           per-layer MLPs (52.84M on DINOv2-L); "tokens only" has none, so it is a smaller
           first step than the paper's.

A run whose method and arguments equal an already finished run at the same seed (rank 16 in
the rank group, "+ queries" in the pieces group: both are the base Rein) is not trained
again: its record is copied, with ``same_as`` naming the run it reuses.

Results go to ``--out`` (default docs/sweep): ``results.json`` (every run: config, trainable
parameters, per-domain mIoU, seconds) and ``results.md``. Finished runs are skipped, so an
interrupted sweep resumes where it stopped (an interrupted training resumes from its
checkpoint). The train config's ``key=value`` overrides apply to every run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


GROUPS = ("methods", "tokens", "rank", "pieces")


def run_specs(groups, rein_base: dict, vpt_prompts: int) -> list[dict]:
    """(name, group, method, kwargs) of every run in ``groups``."""
    specs: list[dict] = []

    def add(name, group, method, **kw):
        specs.append(dict(name=name, group=group, method=method, kwargs=kw))

    if "methods" in groups:
        add("rein", "methods", "rein", **rein_base)
        add("frozen", "methods", "frozen")
        add("full", "methods", "full")
        add("lora", "methods", "lora", rank=8)
        add("vpt", "methods", "vpt", num_prompts=vpt_prompts)
        add("adaptformer", "methods", "adaptformer", bottleneck=64)
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


def _build_model_for(method: str, kwargs: dict, num_queries: int):
    """A replacement for reinlite.train.build_model that builds ``method``'s backbone; heads
    without Rein queries learn ``num_queries`` queries (as many as Rein has tokens)."""
    from reinlite.head import Mask2FormerHead
    from reinlite.peft import build_peft_backbone
    from reinlite.train import Segmentor, _pretrained_value

    def build_model(cfg: dict):
        m = cfg["model"]
        img_size = tuple(m["img_size"]) if isinstance(m["img_size"], list) else m["img_size"]
        bb = build_peft_backbone(method, m["backbone"], pretrained=_pretrained_value(m["pretrained"]),
                                 img_size=img_size, patch_size=m["patch_size"], out_indices=m["out_indices"],
                                 model_kwargs=dict(m["backbone_kwargs"]), **kwargs)
        h = dict(m["head"], num_queries=num_queries)
        rein = getattr(bb, "rein", None)
        with_queries = rein is not None and rein.link_to_queries
        if with_queries:
            h["num_queries"] = rein.num_tokens
        head = Mask2FormerHead(bb.embed_dim, query_source="rein" if with_queries else "learned",
                               query_dim=rein.query_dim if with_queries else h["hidden_dim"], **h)
        return Segmentor(bb, head)

    return build_model


def run_one(spec: dict, seed: int, base_cfg: dict, out: Path, eval_source: bool) -> dict:
    """Train and evaluate one (spec, seed); returns its result record."""
    import torch

    import reinlite.train as T
    from reinlite.evaluate import evaluate

    cfg = json.loads(json.dumps(base_cfg))
    cfg["seed"] = seed
    cfg["name"] = f"{spec['name']}_s{seed}".replace(" ", "_").replace("(", "").replace(")", "").replace("+", "plus_")
    cfg["out_dir"] = str(out / "runs" / cfg["name"])
    if spec["method"] == "rein":
        cfg["model"]["rein"] = dict(spec["kwargs"])
    num_queries = base_cfg["model"]["rein"]["num_tokens"] if base_cfg["model"]["rein"] else base_cfg["model"]["head"]["num_queries"]
    T.build_model = _build_model_for(spec["method"], spec["kwargs"], num_queries)  # train() and load_model() use it
    t0 = time.perf_counter()
    result = T.train(cfg)
    t1 = time.perf_counter()
    model, _ = T.load_model(result["checkpoint"], cfg)
    trainable_backbone = sum(p.numel() for p in model.backbone.trainable_parameters())
    trainable_all = sum(p.numel() for p in model.parameters() if p.requires_grad)
    d = cfg["data"]
    domains = ([d["source"]] if eval_source else []) + list(d["targets"])
    with torch.no_grad():
        res = evaluate(model.eval(), cfg, domains, progress=False)
    return dict(name=spec["name"], group=spec["group"], method=spec["method"], kwargs=spec["kwargs"], seed=seed,
                trainable_backbone=trainable_backbone, trainable_total=trainable_all,
                miou={k: v["miou"] for k, v in res["domains"].items()}, mean_targets=res["mean"],
                targets=res["targets"], train_seconds=t1 - t0, eval_seconds=res["seconds"],
                steps=result["step"], final_loss=(result.get("losses") or [None])[-1])


def backbone_stamp(cfg: dict) -> str:
    """What the backbone's weights are: the shipped course_vit's sha256, else the name."""
    m = cfg["model"]
    if m["backbone"] == "course_vit" and m["pretrained"] is True:
        meta = json.loads((ROOT / "reinlite" / "weights" / "course_vit.json").read_text())
        return f"course_vit sha256 {meta['sha256']}"
    return f"{m['backbone']} pretrained={m['pretrained']}"


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(records: list[dict], cfg: dict) -> str:
    """Markdown tables (mean +- std over seeds per domain), one per group."""
    lines = [f"Budget (identical for every run): {cfg['optim']['iters']} iterations, batch "
             f"{cfg['optim']['batch_size']}, crop {cfg['data']['crop_size']}, lr {cfg['optim']['lr']}, "
             f"backbone {cfg['model']['backbone']} (pretrained={cfg['model']['pretrained']}), head "
             f"{ {k: v for k, v in cfg['model']['head'].items() if k != 'num_queries'} } with as many queries as the "
             f"base Rein has tokens ({(cfg['model']['rein'] or {}).get('num_tokens')}).", ""]
    order = {(s["group"], s["name"]): i for i, s in enumerate(
        run_specs(GROUPS, dict(num_tokens=32, rank=16, query_dim=128), 50))}
    records = sorted(records, key=lambda r: (order.get((r["group"], r["name"]), len(order)), r["seed"]))
    groups: dict[str, list[str]] = {}
    for r in records:
        groups.setdefault(r["group"], [])
        if r["name"] not in groups[r["group"]]:
            groups[r["group"]].append(r["name"])
    for group, names in groups.items():
        recs = [r for r in records if r["group"] == group]
        domains = list(recs[0]["miou"])
        targets = recs[0]["targets"]
        lines.append(f"### {group}\n")
        lines.append("| run | trainable (backbone) | seeds | " + " | ".join(domains) + " | mean (targets) |")
        lines.append("|---|---:|---:|" + "---:|" * (len(domains) + 1))
        for name in names:
            rs = [r for r in recs if r["name"] == name]
            cells = []
            for dom in domains:
                m, sd = _mean_sd([r["miou"].get(dom) for r in rs])
                cells.append(f"{m:.1f} ± {sd:.1f}")
            m, sd = _mean_sd([r["mean_targets"] for r in rs])
            lines.append(f"| {name} | {rs[0]['trainable_backbone']:,} | {len(rs)} | " + " | ".join(cells)
                         + f" | **{m:.1f} ± {sd:.1f}** |")
        lines.append(f"\n(targets: {', '.join(targets)}; ± is the standard deviation over seeds)\n")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="course", help="train config name or path (default course)")
    p.add_argument("--groups", nargs="+", default=["methods"], choices=GROUPS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", default=None, help="run only these run names")
    p.add_argument("--vpt-prompts", type=int, default=50, help="VPT prompts per layer (default 50)")
    p.add_argument("--out", default=str(ROOT / "docs" / "sweep"))
    p.add_argument("--no-source", action="store_true", help="skip the source's held-out split")
    p.add_argument("--list", action="store_true", help="print the runs and exit")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each in its own process (use --jobs 2 with the course "
                        "config's 1 thread per run on a 2-core machine)")
    p.add_argument("overrides", nargs="*", help="train config key=value overrides (every run), anywhere on the line")
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = p.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides

    import torch

    from reinlite.train import load_config

    torch.set_num_threads(args.threads)
    base_cfg = load_config(args.config, args.overrides)
    base_cfg["train"]["progress"] = False
    rein_base = dict(base_cfg["model"]["rein"] or dict(num_tokens=100, rank=16, query_dim=256))
    specs = run_specs(args.groups, rein_base, args.vpt_prompts)
    if args.only:
        specs = [s for s in specs if s["name"] in args.only]
    out = Path(args.out)
    if args.list:
        for s in specs:
            print(f"{s['group']:<8} {s['name']:<20} {s['method']:<12} {s['kwargs']}  seeds {args.seeds}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    data = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": []}
    stamp = backbone_stamp(base_cfg)
    if data["runs"]:
        old_cfg = {k: v for k, v in data.get("config", {}).items() if k not in ("seed", "name")}
        new_cfg = {k: v for k, v in json.loads(json.dumps(base_cfg)).items() if k not in ("seed", "name")}
        if old_cfg != new_cfg or data.get("backbone") != stamp:
            changed = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
            raise SystemExit(
                f"{results_path} holds runs made with another configuration (differs in: "
                f"{', '.join(changed) or 'backbone weights'}; backbone {data.get('backbone')} vs {stamp}); "
                f"its runs would not be comparable: pass another --out, or move that file away")
    data["backbone"] = stamp
    done = {(r["group"], r["name"], r["seed"]) for r in data["runs"]}
    command = "python data_scripts/sweep.py " + " ".join(argv)
    # seed-major: a partial sweep has every method at the first seeds
    todo = [(spec, seed) for seed in args.seeds for spec in specs
            if (spec["group"], spec["name"], seed) not in done]
    # the same configuration twice (the base Rein in several groups) is trained once
    def same_key(method, kwargs, seed):
        return method, json.dumps(kwargs, sort_keys=True), seed

    def trained():
        return {same_key(r["method"], r["kwargs"], r["seed"]): r for r in data["runs"] if "same_as" not in r}

    to_train, to_copy, planned = [], [], set(trained())
    for spec, seed in todo:
        k = same_key(spec["method"], spec["kwargs"], seed)
        (to_copy if k in planned else to_train).append((spec, seed))
        planned.add(k)

    def record(rec):
        print(f"== {rec['group']} / {rec['name']} / seed {rec['seed']}: mIoU "
              f"{ {k: round(v, 1) for k, v in rec['miou'].items()} }  mean(targets) "
              f"{rec['mean_targets']:.1f}  train {rec['train_seconds']:.0f} s", flush=True)
        rec["command"] = command
        data["runs"].append(rec)
        data["config"] = base_cfg
        data["command"] = command
        results_path.write_text(json.dumps(data, indent=1) + "\n")
        (out / "results.md").write_text(summarise(data["runs"], base_cfg) + "\n")

    if args.jobs <= 1:
        for spec, seed in to_train:
            print(f"== {spec['group']} / {spec['name']} / seed {seed} ...", flush=True)
            record(run_one(spec, seed, base_cfg, out, not args.no_source))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_one, spec, seed, base_cfg, out, not args.no_source)
                       for spec, seed in to_train]
            for f in as_completed(futures):
                record(f.result())
    for spec, seed in to_copy:
        src = trained()[same_key(spec["method"], spec["kwargs"], seed)]
        record(dict(src, group=spec["group"], name=spec["name"], same_as=f"{src['group']}/{src['name']}"))
    if data["runs"]:
        print(summarise(data["runs"], data.get("config", base_cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
