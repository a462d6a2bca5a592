"""The sweep's results.md: mean +- sd over seeds per group (and backbone), Rein's paired gains,
and the learning curves with Rein's diagnostics (reinlite.experiments.sweep records the runs)."""
from __future__ import annotations

import statistics
from typing import Sequence


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _get(cfg: dict, *keys, default=None):
    for k in keys:
        if not isinstance(cfg, dict) or k not in cfg:
            return default
        cfg = cfg[k]
    return cfg


def summarise(records: list[dict], cfg: dict, order: Sequence[tuple[str, str]] = ()) -> str:
    """Markdown tables (mean +- std over seeds per domain), one per group (and backbone);
    Rein's paired gains per backbone; learning curves where runs have them."""
    head = {k: v for k, v in (_get(cfg, "model", "head") or {}).items() if k != "num_queries"}
    lines = [f"Budget (identical for every run): {_get(cfg, 'optim', 'iters')} iterations, batch "
             f"{_get(cfg, 'optim', 'batch_size')}, crop {_get(cfg, 'data', 'crop_size')}, lr "
             f"{_get(cfg, 'optim', 'lr')}, backbone {_get(cfg, 'model', 'backbone')} (pretrained="
             f"{_get(cfg, 'model', 'pretrained')}) unless a table names another, head {head} with as "
             f"many queries as the base Rein has tokens ({(_get(cfg, 'model', 'rein') or {}).get('num_tokens')}).",
             ""]
    order = {key: i for i, key in enumerate(order)}  # (group, name) in the sweep's canonical order
    records = sorted(records, key=lambda r: (order.get((r["group"], r["name"]), len(order)), r["seed"]))
    backbones = list(dict.fromkeys(r.get("backbone") for r in records))
    tables: dict[tuple, list[str]] = {}
    for r in records:
        names = tables.setdefault((r.get("backbone"), r["group"]), [])
        if r["name"] not in names:
            names.append(r["name"])
    for bb in backbones:
        for (b, group), names in tables.items():
            if b != bb:
                continue
            recs = [r for r in records if r["group"] == group and r.get("backbone") == bb]
            domains = list(recs[0]["miou"])
            targets = recs[0]["targets"]
            lines.append(f"### {group}" + (f" — backbone {bb}" if bb else "") + "\n")
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
    lines += _gains(records, backbones)
    lines += _curves(records, backbones)
    return "\n".join(lines)


def _gains(records: list[dict], backbones: list) -> list[str]:
    """Rein minus each baseline on the targets' mean, paired by seed, per backbone."""
    rows = []
    for bb in backbones:
        by = {(r["name"], r["seed"]): r for r in records if r["group"] == "methods" and r.get("backbone") == bb}
        for base in ("frozen", "full", "full_lr1"):
            diffs = [by[("rein", s)]["mean_targets"] - by[(base, s)]["mean_targets"]
                     for (n, s) in by if n == base and ("rein", s) in by]
            if diffs:
                m, sd = _mean_sd(diffs)
                rows.append(f"| {bb or '(config)'} | Rein − {base} | {len(diffs)} | "
                            + ", ".join(f"{d:+.1f}" for d in diffs) + f" | **{m:+.1f} ± {sd:.1f}** |")
    if not rows:
        return []
    return ["### Rein's gain on the targets' mean (paired by seed)\n",
            "| backbone | difference | seeds | per seed | mean ± sd |", "|---|---|---:|---|---:|", *rows, ""]


_FORMATS = {"query cosine": "{:.2f}", "Rein scale s": "{:.3f}", "‖sΔf‖/‖f‖": "{:.3f}"}


def _curves(records: list[dict], backbones: list) -> list[str]:
    """Targets' mean (and source, and Rein's query cosine) at each evaluated step."""
    out = []
    for bb in backbones:
        recs = [r for r in records if r.get("curve") and r.get("backbone") == bb]
        if not recs:
            continue
        steps = sorted({p["step"] for r in recs for p in r["curve"]})
        source = next((d for d in recs[0]["miou"] if d not in recs[0]["targets"]), None)
        out.append("### learning curves" + (f" — backbone {bb}" if bb else "") + "\n")
        out.append("| run | seeds | quantity | " + " | ".join(str(s) for s in steps) + " |")
        out.append("|---|---:|---|" + "---:|" * len(steps))
        for name in dict.fromkeys(r["name"] for r in recs):
            rs = [r for r in recs if r["name"] == name]
            quantities = [("targets' mean", lambda p: p["mean_targets"])]
            if source:
                quantities.append((f"{source} (source)", lambda p: p["miou"].get(source)))
            for key, label in (("query_cosine", "query cosine"), ("rein_scale", "Rein scale s"),
                               ("rein_delta_ratio", "‖sΔf‖/‖f‖")):
                if any(p.get(key) is not None for r in rs for p in r["curve"]):
                    quantities.append((label, lambda p, key=key: p.get(key)))
            for label, get in quantities:
                cells = []
                for s in steps:
                    vals = [get(p) for r in rs for p in r["curve"] if p["step"] == s]
                    m, sd = _mean_sd(vals)
                    fmt = _FORMATS.get(label, "{:.1f}")
                    cells.append("" if m != m else f"{fmt.format(m)} ± {fmt.format(sd)}")
                out.append(f"| {name} | {len(rs)} | {label} | " + " | ".join(cells) + " |")
        out.append("")
    return out
