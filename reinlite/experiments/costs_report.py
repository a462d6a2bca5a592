"""The report of `reinlite costs`: the ratios against the targets, markdown tables, a figure.

    report = json.load(open("docs/bench/course_fp32.json"))
    print(markdown(report)); bench_figure(report, "costs.png")
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PAPER_COUNTS_L = dict(rein=2_990_081, full=304_198_656, lora=786_432, vpt=3_686_400, adaptformer=3_171_840)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarise(step: dict, backbone: dict) -> dict[str, Any]:
    """The ratios the issue asks for (targets: overhead <= 0.15, time <= 0.80, memory <= 0.65)."""
    s = {}
    if "rein" in step and "frozen+bwd" in step:
        s["rein_layer_overhead_step"] = _ratio(step["rein"]["median_s"], step["frozen+bwd"]["median_s"]) - 1
    if "rein" in backbone and "frozen+bwd" in backbone:
        s["rein_layer_overhead_backbone"] = _ratio(backbone["rein"]["median_s"], backbone["frozen+bwd"]["median_s"]) - 1
    if "rein" in backbone and "full" in backbone:
        s["rein_vs_full_time_backbone"] = _ratio(backbone["rein"]["median_s"], backbone["full"]["median_s"])
        s["rein_vs_full_peak_memory_backbone"] = _ratio(backbone["rein"]["peak_bytes"], backbone["full"]["peak_bytes"])
    if "frozen" in step and "full" in step:
        s["frozen_vs_full_time"] = _ratio(step["frozen"]["median_s"], step["full"]["median_s"])
        s["frozen_vs_full_peak_memory"] = _ratio(step["frozen"]["peak_bytes"], step["full"]["peak_bytes"])
    if "rein" in step and "frozen" in step:
        s["rein_vs_frozen_step"] = _ratio(step["rein"]["median_s"], step["frozen"]["median_s"])
    if "rein" in step and "full" in step:
        s["rein_vs_full_time"] = _ratio(step["rein"]["median_s"], step["full"]["median_s"])
        s["rein_vs_full_peak_memory"] = _ratio(step["rein"]["peak_bytes"], step["full"]["peak_bytes"])
    s["targets"] = dict(rein_layer_overhead_step=0.15, rein_vs_full_time=0.80, rein_vs_full_peak_memory=0.65)
    s["met"] = {k: bool(s[k] <= v) for k, v in s["targets"].items() if k in s}
    return s


def markdown(report: dict) -> str:
    lines = []
    cfg = report["config"]
    clock = report.get("clock", "cpu")
    where = ("the course configuration" if cfg["backbone"]["name"] in ("course_vit", "vit_tiny_patch16_224")
             else f"{cfg['backbone']['name']} with the course head")
    lines.append(f"### Training step on {where} ({report['device']}, {report['threads']} "
                 f"thread(s), amp {report['amp']}, ratios from {clock} time)\n")
    lines.append(f"Backbone: {cfg['backbone']['note']}; crop {cfg['crop_size'][0]}x{cfg['crop_size'][1]}, "
                 f"batch {cfg['batch_size']}; head {cfg['head']}; Rein m={cfg['rein']['num_tokens']}, "
                 f"r={cfg['rein']['rank']}, Q={cfg['rein']['query_dim']}. Medians of {report['repeats']} fresh "
                 f"processes x {report['steps']} steps (after {report['warmup']} warm-up steps), interleaved; "
                 f"load average during the run {', '.join(f'{x:.1f}' for x in report.get('load_avg', ()))}.\n")
    step, bb = report["step"], report["backbone"]
    full = step.get("full")
    lines.append(f"| method | trainable (backbone) | step {clock} ms (min-max) | step wall ms | step / full | "
                 "peak memory MiB | peak / full | backbone only: fwd+bwd ms | backbone only: peak MiB |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m, r in step.items():
        rt = f"{r['median_s'] / full['median_s']:.2f}" if full else ""
        rm = f"{r['peak_bytes'] / full['peak_bytes']:.2f}" if full else ""
        b = f"{bb[m]['median_s'] * 1000:.1f} | {bb[m]['peak_bytes'] / 2**20:.1f}" if m in bb else " | "
        lines.append(f"| {m} | {r['trainable']:,} | {r['median_s'] * 1000:.1f} "
                     f"({r['spread_s'][0] * 1000:.0f}-{r['spread_s'][1] * 1000:.0f}) | {r['wall_s'] * 1000:.0f} | "
                     f"{rt} | {r['peak_bytes'] / 2**20:.1f} | {rm} | {b} |")
    s = report["summary"]
    lines.append("")
    lines.append("| ratio | measured | target | met |")
    lines.append("|---|---:|---:|---|")
    names = dict(rein_layer_overhead_step="Rein layer overhead vs frozen+bwd, training step",
                 rein_layer_overhead_backbone="Rein layer overhead vs frozen+bwd, backbone fwd+bwd only",
                 rein_vs_frozen_step="Rein step / frozen (head-only) step",
                 rein_vs_full_time="Rein step / full fine-tuning step",
                 rein_vs_full_peak_memory="Rein peak memory / full fine-tuning peak memory",
                 frozen_vs_full_time="frozen (head-only) step / full step: the floor of any method",
                 frozen_vs_full_peak_memory="frozen (head-only) peak / full peak: the floor of any method",
                 rein_vs_full_time_backbone="Rein / full, backbone fwd+bwd+update only (no head): time",
                 rein_vs_full_peak_memory_backbone="Rein / full, backbone fwd+bwd+update only (no head): peak memory")
    for k, label in names.items():
        if k in s:
            t = s["targets"].get(k)
            lines.append(f"| {label} | {s[k]:+.1%} |" if "overhead" in k else f"| {label} | {s[k]:.2f} |")
            lines[-1] += (f" {'<= +' + format(t, '.0%') if 'overhead' in k else '<= ' + str(t)} | "
                          f"{'yes' if s['met'][k] else 'no'} |" if t is not None else " | |")
    lines.append("")
    counts = report.get("counts")
    if counts:
        lines.append("### Trainable backbone parameters at 512 x 512, patch 16 (meta device)\n")
        methods = list(next(iter(counts.values())))
        lines.append("| backbone | " + " | ".join(methods) + " |")
        lines.append("|---|" + "---:|" * len(methods))
        for label, row in counts.items():
            lines.append(f"| {label} | " + " | ".join(f"{row[m]:,}" for m in methods) + " |")
        if "DINOv2-L" in counts:
            ok = all(counts["DINOv2-L"][m] == n for m, n in PAPER_COUNTS_L.items())
            lines.append(f"\nDINOv2-L matches the paper (Rein 2,990,081; LoRA 786,432; VPT 3,686,400; "
                         f"AdaptFormer 3,171,840; full 304.20M): {'yes' if ok else 'NO'}\n")
    gpu = report.get("gpu")
    if gpu:
        lines.append(f"### DINOv2-L/16 at 512 x 512, release head, batch 4, bf16 ({gpu['device']})\n")
        res = gpu["results"]
        full = res.get("full")
        lines.append("| method | step (ms) | step / full | peak (GiB) | peak / full |")
        lines.append("|---|---:|---:|---:|---:|")
        for m, r in res.items():
            lines.append(f"| {m} | {r['median_s'] * 1000:.0f} | "
                         f"{r['median_s'] / full['median_s']:.2f} | {r['peak_bytes'] / 2**30:.2f} | "
                         f"{r['peak_bytes'] / full['peak_bytes']:.2f} |" if full else
                         f"| {m} | {r['median_s'] * 1000:.0f} | | {r['peak_bytes'] / 2**30:.2f} | |")
        lines.append("\nPaper (Table 8, DINOv2-L): Rein / full = 9.5 h / 11.2 h = 0.85 in time, 10.0 / 14.7 GB = 0.68 in memory.\n")
    elif "gpu_skipped" in report:
        lines.append(f"GPU comparison: {report['gpu_skipped']}\n")
    return "\n".join(lines)


def bench_figure(report: dict, path: str | os.PathLike) -> None:
    """Bars of step time and peak memory per method, relative to full fine-tuning, with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = report["step"]
    methods = [m for m in step if m != "frozen+bwd"]
    full = step.get("full")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label, target in ((axes[0], "median_s", f"training step ({report.get('clock', 'cpu')} time)", 0.80),
                                   (axes[1], "peak_bytes", "peak memory", 0.65)):
        vals = [step[m][key] / full[key] if full else step[m][key] for m in methods]
        colors = ["tab:red" if m == "rein" else "tab:gray" if m in ("frozen", "full") else "tab:blue" for m in methods]
        ax.bar(methods, vals, color=colors)
        for i, v in enumerate(vals):
            ax.text(i, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        if full:
            ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target for Rein: {target}")
            if "frozen+bwd" in step:
                ax.axhline(step["frozen+bwd"][key] / full[key], color="black", ls=":", lw=1,
                           label="frozen+bwd: backprop through the frozen ViT, nothing trained in it")
            ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
        ax.set_ylabel(f"{label} / full fine-tuning" if full else label)
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=30)
    cfg = report["config"]
    fig.suptitle(f"{cfg['backbone']['note']}, crop {cfg['crop_size'][0]}x{cfg['crop_size'][1]}, batch "
                 f"{cfg['batch_size']}, amp {report['amp']}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
