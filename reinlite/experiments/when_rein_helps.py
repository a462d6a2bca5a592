"""The report of the pre-registered experiment "When does Rein help?" (docs/when_rein_helps.md).

Reads what ``tools/when_rein_helps.sh`` commits (``results.json``: one record per run, as
``reinlite.experiments.sweep.run_one`` writes it, with a learning ``curve``; ``logs/NAME.jsonl``:
each run's training log, with Rein's diagnostics every 50 steps) and writes, beside them:

    report.md         runs per cell, target / source mIoU per method, paired differences per seed
                      (Rein - frozen, Rein - full) at every budget next to the paper's Table 2 gains
                      and the independent reproduction's, and each hypothesis's pre-registered
                      criterion evaluated mechanically, with the numbers it used
    curves.png        targets' mean and source (gta) mIoU against steps, one column per backbone,
                      mean over seeds with their range; the paired differences below
    diagnostics.png   Rein's scale s, the mean and per-block ||s Delta f|| / ||f||, and the queries'
                      mean pairwise cosine against steps (from the training logs)

It works on a partial experiment (whatever runs exist; every cell says its n).

    python -m reinlite.experiments.when_rein_helps --results docs/when_rein_helps --out docs/when_rein_helps
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Optional, Sequence

from reinlite.course import paper
from reinlite.experiments.sweep import run_name

METHODS = ("rein", "frozen", "full")
METHOD_LABELS = {"rein": "Rein", "frozen": "frozen", "full": "full (backbone lr x0.1)"}
COLORS = {"rein": "tab:green", "frozen": "tab:gray", "full": "tab:red"}
BACKBONES = ("course_vit", "course_vit_mae", "random")   # frozen features fit the task: most -> least
PRETRAINED = ("course_vit", "course_vit_mae")
PLANNED_SEEDS = {"course_vit": (0, 1, 2), "course_vit_mae": (0, 1), "random": (0,)}
COMPARISONS = (("rein", "frozen"), ("rein", "full"))
FINAL_STEP = 2000
H1_SUPPORTED_BELOW, H1_REFUTED_ABOVE = 0.05, 0.2   # the plan's thresholds on the mean delta ratio
#: release issue #48 (github.com/w1oves/Rein/issues/48), an independent run of the release on
#: DINOv2-L, GTA5 -> C/B/M average mIoU: frozen "around 63 (with a maximum of 63.44)", Rein
#: "similar to the paper (64.3)", full fine-tuning 61.5 (below frozen)
REPRODUCTION_48 = {"url": "https://github.com/w1oves/Rein/issues/48",
                   "frozen": (63.0, 63.44), "rein": 64.3, "full": 61.5}


class ReportError(ValueError):
    """A results folder this report cannot read."""


# ----------------------------------------------------------------------------- reading
def read_log(path: Path) -> list[dict]:
    """A run's ``log.jsonl`` as entries sorted by step; a step logged twice (a resumed run)
    keeps its last entry."""
    by_step = {}
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise ReportError(f"{path}: line {i} is not JSON ({err})") from None
        if "step" in entry:
            by_step[int(entry["step"])] = entry
    return [by_step[s] for s in sorted(by_step)]


def load(results_dir) -> dict:
    """``{"records": [...], "logs": {run name: [entries]}, "config": {...}}`` of a results folder
    (``results.json`` + ``logs/NAME.jsonl``); only the runs of the plan's three methods."""
    results_dir = Path(results_dir)
    path = results_dir / "results.json"
    if not path.is_file():
        raise ReportError(f"{path}: not found (expected the sweep's results.json of the experiment)")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ReportError(f"{path}: expected an object with a 'runs' list, got {type(data).__name__}")
    records = [r for r in data["runs"] if r.get("name") in METHODS]
    for r in records:
        missing = [k for k in ("seed", "backbone", "miou", "mean_targets", "targets") if k not in r]
        if missing:
            raise ReportError(f"{path}: run {r.get('name')!r} lacks {', '.join(missing)}")
    logs = {}
    for r in records:
        log = results_dir / "logs" / f"{log_name(r)}.jsonl"
        if log.is_file():
            logs[log_name(r)] = read_log(log)
    return {"records": records, "logs": logs, "config": data.get("config", {})}


def log_name(rec: dict) -> str:
    """The run's folder / log name, e.g. ``rein_s0_course_vit``."""
    return run_name({"name": rec["name"]}, rec["seed"], rec.get("backbone"))


def source_domain(rec: dict) -> Optional[str]:
    return next((d for d in rec["miou"] if d not in rec["targets"]), None)


def curve(rec: dict) -> list[dict]:
    """The run's evaluated points (its final evaluation alone when it has no curve)."""
    if rec.get("curve"):
        return sorted(rec["curve"], key=lambda p: p["step"])
    return [dict(step=rec.get("steps", FINAL_STEP), miou=rec["miou"], mean_targets=rec["mean_targets"])]


def value(point: dict, rec: dict, quantity: str) -> Optional[float]:
    """``targets`` (the targets' mean) or ``source`` mIoU of one evaluated point."""
    if quantity == "targets":
        return point["mean_targets"]
    return point["miou"].get(source_domain(rec))


def backbones_of(records) -> list[str]:
    present = {r["backbone"] for r in records}
    return [b for b in BACKBONES if b in present] + sorted(present - set(BACKBONES))


def _by(records, backbone) -> dict:
    return {(r["name"], r["seed"]): r for r in records if r["backbone"] == backbone}


def mean_sd(values) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# ----------------------------------------------------------------------------- numbers
def series(records, backbone: str, method: str, quantity: str = "targets") -> dict:
    """``{step: {seed: mIoU}}`` of one backbone and method."""
    out: dict = {}
    for (name, seed), rec in _by(records, backbone).items():
        if name == method:
            for p in curve(rec):
                out.setdefault(p["step"], {})[seed] = value(p, rec, quantity)
    return dict(sorted(out.items()))


def paired_differences(records, quantity: str = "targets") -> list[dict]:
    """Every (backbone, a - b, step) with at least one seed that has both runs at that step:
    ``dict(backbone, a, b, step, seeds, diffs, mean, sd)`` (mIoU, paired by seed)."""
    rows = []
    for bb in backbones_of(records):
        for a, b in COMPARISONS:
            sa, sb = series(records, bb, a, quantity), series(records, bb, b, quantity)
            for step in sorted(set(sa) & set(sb)):
                seeds = sorted(set(sa[step]) & set(sb[step]))
                diffs = [sa[step][s] - sb[step][s] for s in seeds]
                if diffs:
                    m, sd = mean_sd(diffs)
                    rows.append(dict(backbone=bb, a=a, b=b, step=step, seeds=seeds, diffs=diffs, mean=m, sd=sd))
    return rows


def _diff(rows, backbone, a, b, step) -> Optional[dict]:
    return next((r for r in rows if (r["backbone"], r["a"], r["b"], r["step"]) == (backbone, a, b, step)), None)


def paper_gains() -> list[dict]:
    """The paper's Table 2 gains (avg of C/B/M): Rein - frozen and Rein - full per backbone,
    None where :mod:`reinlite.course.paper` does not transcribe a row."""
    out = []
    for bb, rows in paper.GTA5_TO_CBM.items():
        rein = rows.get("rein", {}).get("avg")
        out.append(dict(backbone=bb, frozen=rows.get("frozen", {}).get("avg"), full=rows.get("full", {}).get("avg"),
                        rein=rein, **{f"rein-{b}": (None if rein is None or rows.get(b) is None
                                                    else round(rein - rows[b]["avg"], 1)) for b in ("frozen", "full")}))
    return out


# ----------------------------------------------------------------------------- tables
def _fmt(x, sign=False, nd=1) -> str:
    if x is None or x != x:
        return "–"
    return f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}"


def cells_table(records) -> str:
    """Runs finished per backbone and method, against the plan's seeds."""
    lines = ["| backbone | " + " | ".join(METHOD_LABELS[m] for m in METHODS) + " |", "|---|" + "---:|" * len(METHODS)]
    for bb in backbones_of(records) or list(BACKBONES):
        by = _by(records, bb)
        planned = PLANNED_SEEDS.get(bb, ())
        cells = []
        for m in METHODS:
            seeds = sorted(s for (n, s) in by if n == m)
            cells.append(f"{len(seeds)} of {len(planned) or '?'} (seeds {', '.join(map(str, seeds)) or '–'})")
        lines.append(f"| {bb} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def final_table(records) -> str:
    """Targets' mean and source mIoU at each backbone's last evaluated step: mean ± sd (n)."""
    lines = ["| backbone | method | step | n | source (gta) | targets' mean | per target |",
             "|---|---|---:|---:|---:|---:|---|"]
    for bb in backbones_of(records):
        for m in METHODS:
            recs = [r for (n, s), r in sorted(_by(records, bb).items()) if n == m]
            if not recs:
                continue
            last = [curve(r)[-1] for r in recs]
            src = mean_sd([value(p, r, "source") for p, r in zip(last, recs)])
            tgt = mean_sd([p["mean_targets"] for p in last])
            per = ", ".join(f"{d} {mean_sd([p['miou'][d] for p in last])[0]:.1f}" for d in recs[0]["targets"])
            steps = sorted({p["step"] for p in last})
            lines.append(f"| {bb} | {METHOD_LABELS[m]} | {'/'.join(map(str, steps))} | {len(recs)} | "
                         f"{src[0]:.1f} ± {src[1]:.1f} | **{tgt[0]:.1f} ± {tgt[1]:.1f}** | {per} |")
    return "\n".join(lines)


def paired_table(records, quantity: str = "targets") -> str:
    """Paired differences per seed at every evaluated budget (mIoU, positive = Rein ahead)."""
    rows = paired_differences(records, quantity)
    steps = sorted({r["step"] for r in rows})
    lines = ["| backbone | difference | " + " | ".join(f"{s:,} steps" for s in steps) + " |",
             "|---|---|" + "---:|" * len(steps)]
    for bb in backbones_of(records):
        for a, b in COMPARISONS:
            cells = []
            for s in steps:
                r = _diff(rows, bb, a, b, s)
                per_seed = ", ".join(f"{d:+.1f}" for d in r["diffs"]) if r else ""
                cells.append("" if r is None else f"**{r['mean']:+.1f}** ({per_seed}; n={len(r['diffs'])})")
            if any(cells):
                lines.append(f"| {bb} | {METHOD_LABELS[a]} − {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_table() -> str:
    """The paper's Table 2 gains and the independent reproduction's, for the same differences."""
    lines = ["| source | backbone | frozen | full | Rein | Rein − frozen | Rein − full |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for g in paper_gains():
        if g["rein"] is None:
            lines.append(f"| paper, Table 2 | {g['backbone']} | {_fmt(g['frozen'])} | not transcribed | "
                         "not transcribed | – | – |")
            continue
        lines.append(f"| paper, Table 2 | {g['backbone']} | {_fmt(g['frozen'])} | {_fmt(g['full'])} | "
                     f"{_fmt(g['rein'])} | {_fmt(g['rein-frozen'], True)} | {_fmt(g['rein-full'], True)} |")
    r = REPRODUCTION_48
    lo, hi = r["frozen"]
    lines.append(f"| [release issue #48]({r['url']}) | DINOv2-L | {lo:.1f}-{hi:.2f} | {r['full']:.1f} | "
                 f"~{r['rein']:.1f} | {r['rein'] - hi:+.1f} to {r['rein'] - lo:+.1f} | {r['rein'] - r['full']:+.1f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- verdicts
def verdicts(data: dict, step: int = FINAL_STEP) -> list[dict]:
    """Each hypothesis's pre-registered criterion (docs/when_rein_helps.md) applied to the data:
    ``dict(hypothesis, verdict, numbers, rule)``; verdict is "supported", "refuted" or "not decided".
    Where the plan leaves a tolerance open ("flat", "matches", "the seed spread"), the rule says
    how it is read here: within one standard deviation over seeds of the paired difference."""
    records, logs = data["records"], data["logs"]
    rows = paired_differences(records)
    out = []

    # H1: the mean delta ratio of Rein runs on the pretrained backbones, through `step`
    peaks, finals, reach = {}, {}, True
    for rec in records:
        if rec["name"] != "rein" or rec["backbone"] not in PRETRAINED:
            continue
        entries = logs.get(log_name(rec)) or curve(rec)   # the log, else the evaluated points
        pts = [(e["step"], e["rein_delta_ratio"]) for e in entries if e.get("rein_delta_ratio") is not None]
        if pts:
            peaks[log_name(rec)] = max(v for _, v in pts)
            finals[log_name(rec)] = pts[-1][1]
            reach &= pts[-1][0] >= step - 50
    nums = ("; ".join(f"{k}: max {peaks[k]:.3f}, last {finals[k]:.3f}" for k in peaks)
            or "no Rein run on a pretrained backbone")
    behind = [r["mean"] <= r["sd"] for bb in PRETRAINED if (r := _diff(rows, bb, "rein", "frozen", step))]
    if peaks and max(peaks.values()) > H1_REFUTED_ABOVE and behind and all(behind):
        v = "refuted"
    elif not peaks or not reach:
        v = "not decided"
        nums += " (the logs do not reach 2,000 steps yet)" if peaks else ""
    elif max(peaks.values()) < H1_SUPPORTED_BELOW:
        v = "supported"
    else:
        v = "not decided"
    out.append(dict(hypothesis="H1", verdict=v, numbers=nums,
                    rule=f"supported: max ratio < {H1_SUPPORTED_BELOW} through {step:,} steps on the pretrained "
                         "backbones; "
                         f"refuted: > {H1_REFUTED_ABOVE} while Rein - frozen <= its sd over seeds (Rein does not beat frozen) "
                         f"at {step:,} on them"))

    # H2: Rein - frozen at `step`, ordered random > course_vit_mae > course_vit
    g = {bb: _diff(rows, bb, "rein", "frozen", step) for bb in BACKBONES}
    nums = "; ".join(f"{bb}: {r['mean']:+.2f} ± {r['sd']:.2f} (n={len(r['diffs'])})" if r else f"{bb}: –"
                     for bb, r in g.items())
    cv, mae, rnd = g["course_vit"], g["course_vit_mae"], g["random"]
    if cv and mae and min(len(cv["diffs"]), len(mae["diffs"])) >= 2:
        spread = max(cv["sd"], mae["sd"])
        gap = mae["mean"] - cv["mean"]
        nums += f"; mae - course_vit = {gap:+.2f}, spread = {spread:.2f}"
        if gap <= spread:
            v = "refuted"
        elif rnd and rnd["mean"] > mae["mean"]:
            v = "supported"
        else:
            v = "not decided"
    else:
        v = "not decided"
        nums += " (needs >= 2 paired seeds on both pretrained backbones)"
    out.append(dict(hypothesis="H2", verdict=v, numbers=nums,
                    rule="supported: random > course_vit_mae > course_vit, mae - course_vit > spread (the larger sd "
                         "over seeds of the two gains); refuted: mae - course_vit <= spread (reversed or equal)"))

    # H3: Rein - frozen from the first to the last evaluated point, per seed
    trend, parts = {}, []
    for bb in PRETRAINED:
        pts = sorted(r["step"] for r in rows if (r["backbone"], r["a"], r["b"]) == (bb, "rein", "frozen"))
        if len(pts) < 2 or pts[-1] < step:
            parts.append(f"{bb}: –")
            continue
        first, last = _diff(rows, bb, "rein", "frozen", pts[0]), _diff(rows, bb, "rein", "frozen", pts[-1])
        seeds = sorted(set(first["seeds"]) & set(last["seeds"]))
        change = [last["diffs"][last["seeds"].index(s)] - first["diffs"][first["seeds"].index(s)] for s in seeds]
        m, sd = mean_sd(change)
        trend[bb] = "rises" if m > sd else "flat or falls"
        parts.append(f"{bb}: {first['mean']:+.2f} at {pts[0]:,} -> {last['mean']:+.2f} at {pts[-1]:,}, "
                     f"change {m:+.2f} ± {sd:.2f} (n={len(seeds)})")
    v = ("supported" if len(trend) == 2 and set(trend.values()) == {"rises"} else
         "refuted" if len(trend) == 2 and set(trend.values()) == {"flat or falls"} else "not decided")
    out.append(dict(hypothesis="H3", verdict=v, numbers="; ".join(parts),
                    rule="rises: the mean paired change (last - first point) exceeds its sd over seeds; supported: "
                         "rises on both pretrained backbones; refuted: flat or falls on both; mixed: not decided"))

    # H4: full has the best source and fewer target mIoU than Rein, at `step`, pretrained backbones
    verdict4, parts = {}, []
    for bb in PRETRAINED:
        d = _diff(rows, bb, "rein", "full", step)
        src = {m: mean_sd(series(records, bb, m, "source").get(step, {}).values())[0] for m in METHODS}
        if d is None or any(x != x for x in src.values()):
            parts.append(f"{bb}: –")
            continue
        best_source = src["full"] > max(src["rein"], src["frozen"])
        rein_ahead = d["mean"] > d["sd"]
        verdict4[bb] = ("supported" if best_source and rein_ahead else "refuted" if not rein_ahead else "not decided")
        parts.append(f"{bb}: source full {src['full']:.1f} / Rein {src['rein']:.1f} / frozen {src['frozen']:.1f}; "
                     f"Rein - full on the targets {d['mean']:+.2f} ± {d['sd']:.2f} (n={len(d['diffs'])})")
    agreed = set(verdict4.values())
    v = agreed.pop() if len(verdict4) == 2 and len(agreed) == 1 else "not decided"
    out.append(dict(hypothesis="H4", verdict=v, numbers="; ".join(parts),
                    rule="supported: full has the highest source mIoU and Rein - full > its sd over seeds, on both "
                         "pretrained backbones; refuted: Rein - full <= its sd (full matches or beats Rein) on both"))
    return out


def verdicts_markdown(data: dict) -> str:
    lines = ["| hypothesis | criterion, evaluated mechanically | numbers used | rule as read here |",
             "|---|---|---|---|"]
    for v in verdicts(data):
        lines.append(f"| {v['hypothesis']} | **{v['verdict']}** | {v['numbers']} | {v['rule']} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- report
def report_markdown(data: dict, figures: Sequence[str] = ("curves.png", "diagnostics.png")) -> str:
    records = data["records"]
    planned = sum(len(s) for s in PLANNED_SEEDS.values()) * len(METHODS)
    it = (data.get("config") or {}).get("optim", {}).get("iters", FINAL_STEP)
    parts = [
        "# When does Rein help? Results (generated)",
        f"*Written by `python -m reinlite.experiments.when_rein_helps` from results.json and logs/ "
        f"({len(records)} of the plan's {planned} runs; every cell gives its n). Budget {it} steps, evaluated at "
        "every point of each run's curve on 100 images per domain; mIoU in percent (points). "
        "Do not edit: regenerate.*",
        "## Runs finished", cells_table(records),
        "## Last evaluated point (mean ± sd over seeds)", final_table(records),
        "## Paired differences on the targets' mean, per seed and budget",
        "Rein minus the other method at the same seed (same data order, augmentation and head "
        "initialisation); the bold number is the mean, the brackets each seed's difference.",
        paired_table(records, "targets"),
        "## Paired differences on the held-out source (gta)", paired_table(records, "source"),
        "## The same differences at full scale (the paper and an independent reproduction)",
        "Average of Cityscapes / BDD100K / Mapillary mIoU, DINOv2-L and other VFMs, 40k iterations "
        "(`reinlite.course.paper`; MAE-L's full and Rein rows are not transcribed there). The course's "
        "targets' mean also includes acdc, so the numbers compare as differences, not as levels.",
        reference_table(),
        "## The pre-registered criteria, evaluated mechanically",
        "Not the conclusion: the plan's rule applied to whatever data exist. The lead writes the "
        "statement per hypothesis in docs/when_rein_helps.md from the final numbers.",
        verdicts_markdown(data),
        "## Figures", *[f"![{Path(f).stem}]({f})" for f in figures],
    ]
    return "\n\n".join(parts) + "\n"


def write_report(results_dir, out=None) -> dict:
    """Read ``results_dir`` and write report.md, curves.png and diagnostics.png into ``out``."""
    from reinlite.experiments.when_rein_helps_figures import plot_curves, plot_diagnostics

    data = load(results_dir)
    out = Path(out or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(data["records"], out / "curves.png")
    plot_diagnostics(data, out / "diagnostics.png")
    (out / "report.md").write_text(report_markdown(data))
    return {k: out / k for k in ("report.md", "curves.png", "diagnostics.png")}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reinlite.experiments.when_rein_helps",
                                description=__doc__.splitlines()[0])
    p.add_argument("--results", default="docs/when_rein_helps", help="folder with results.json and logs/")
    p.add_argument("--out", default=None, help="where report.md and the figures go (default: --results)")
    args = p.parse_args(argv)
    try:
        written = write_report(args.results, args.out)
    except ReportError as err:
        p.error(str(err))
    data = load(args.results)
    for v in verdicts(data):
        print(f"{v['hypothesis']}: {v['verdict']} | {v['numbers']}")
    print("wrote", ", ".join(sorted(p.name for p in written.values())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
