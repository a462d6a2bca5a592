"""The report's comparison: Rein / full fine-tuning ratios per precision next to the
paper's Table 8 (:func:`summarise`, which also sets the run's status) and the markdown of
``gpu_check.md`` (:func:`format_markdown`: Table 8's comparison, then one row per phase)."""
from __future__ import annotations

from reinlite.experiments.gpu_check.settings import PAPER, PHASES

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

