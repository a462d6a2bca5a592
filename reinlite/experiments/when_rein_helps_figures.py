"""The two figures of the "When does Rein help?" report (numbers: ``when_rein_helps``).

    plot_curves(records, path)       targets' mean and source mIoU against steps, one column per
                                     backbone (mean over seeds, shaded range); paired differences below
    plot_diagnostics(data, path)     Rein's scale, mean and per-block ||s Delta f|| / ||f||, query
                                     cosine against steps, from the training logs

Axes are honest about size: mIoU panels share one y-range per row that starts at 0, and the
difference panel spans at least +-3 mIoU around 0, so a 0.5-point gap is drawn as small as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from reinlite.experiments.when_rein_helps import (
    COLORS, COMPARISONS, FINAL_STEP, H1_REFUTED_ABOVE, H1_SUPPORTED_BELOW, METHOD_LABELS, METHODS, backbones_of, curve,
    log_name, paired_differences, series)
from reinlite.viz import _plt

DIFF_STYLE = {"frozen": dict(color="tab:gray", marker="D"), "full": dict(color="tab:red", marker="s")}


def _band(ax, by_step: dict, color, style, label):
    """Mean over seeds with the range (min..max) shaded; markers at the evaluated steps."""
    steps = sorted(by_step)
    vals = [[v for v in by_step[s].values() if v is not None] for s in steps]
    mean = [np.mean(v) for v in vals]
    n = max(len(v) for v in vals)
    ax.plot(steps, mean, style, color=color, marker="o", ms=3, lw=1.5, label=f"{label} (n={n})")
    if n > 1:
        ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], color=color, alpha=0.18, lw=0)


def plot_curves(records, path: Optional[Path] = None):
    """Rows: targets' mean, source (gta), Rein - frozen / Rein - full on the targets (paired)."""
    plt = _plt()
    bbs = backbones_of(records)
    fig, axes = plt.subplots(3, max(len(bbs), 1), figsize=(max(4.3 * len(bbs), 9.0), 8.6), squeeze=False,
                             sharex=True, gridspec_kw=dict(height_ratios=[1, 1, 0.8]))
    tops = {}
    for q in ("targets", "source"):
        vals = [v for bb in bbs for m in METHODS for d in series(records, bb, m, q).values()
                for v in d.values() if v is not None]
        tops[q] = 5 * np.ceil(max(vals + [5]) * 1.08 / 5)
    diffs = paired_differences(records, "targets")
    lim = max([3.0] + [abs(v) * 1.15 for r in diffs for v in r["diffs"]])
    for j, bb in enumerate(bbs):
        for i, q in enumerate(("targets", "source")):
            ax = axes[i, j]
            for m in METHODS:
                s = series(records, bb, m, q)
                if s:
                    _band(ax, s, COLORS[m], "-" if q == "targets" else "--", METHOD_LABELS[m])
            ax.set_ylim(0, tops[q])
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("targets' mean mIoU (%)" if q == "targets" else "source (gta) mIoU (%)")
        axes[0, j].set_title(bb, fontsize=10)
        ax = axes[2, j]
        ax.axhline(0, color="k", lw=0.8)
        for a, b in COMPARISONS:
            rows = [r for r in diffs if (r["backbone"], r["a"], r["b"]) == (bb, a, b)]
            if rows:
                x = [r["step"] for r in rows]
                ax.plot(x, [r["mean"] for r in rows], lw=1.5, ms=3, label=f"Rein − {b} (targets)", **DIFF_STYLE[b])
                for r in rows:   # every seed's paired difference as a dot
                    ax.scatter([r["step"]] * len(r["diffs"]), r["diffs"], s=8, color=DIFF_STYLE[b]["color"], alpha=0.5)
        if not any(r["backbone"] == bb for r in diffs):
            ax.text(0.5, 0.75, "no paired runs yet", transform=ax.transAxes, ha="center", fontsize=8, color="0.4")
        ax.set_ylim(-lim, lim)
        ax.grid(alpha=0.3)
        ax.set_xlabel("training step")
        if j == 0:
            ax.set_ylabel("paired difference (mIoU points)")
    for ax in axes.flat:
        ax.set_xlim(0, FINAL_STEP * 1.03)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab.split(" (n=")[0] if "(n=" in lab else lab, h)
    from matplotlib.lines import Line2D

    handles["solid: unseen targets' mean"] = Line2D([], [], color="k", ls="-")
    handles["dashed: held-out source (gta)"] = Line2D([], [], color="k", ls="--")
    fig.suptitle("Rein vs frozen vs full fine-tuning (mIoU in points)\nsolid = unseen targets' mean, dashed = "
                 "held-out source; line = mean over seeds, band = range over seeds, dots = each seed", fontsize=10)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def _diag_series(data, backbone) -> dict:
    """{run name: {key: (steps, values)}} for the Rein runs of one backbone, from their logs
    (else from the evaluated points of their curve)."""
    out = {}
    for rec in data["records"]:
        if rec["name"] != "rein" or rec["backbone"] != backbone:
            continue
        entries = data["logs"].get(log_name(rec)) or curve(rec)
        d = {}
        for key in ("rein_scale", "rein_delta_ratio", "query_cosine", "rein_delta_ratio_layers"):
            pts = [(e["step"], e[key]) for e in entries if e.get(key) is not None]
            if pts:
                d[key] = ([p[0] for p in pts], [p[1] for p in pts])
        out[f"seed {rec['seed']}"] = d
    return dict(sorted(out.items()))


def plot_diagnostics(data: dict, path: Optional[Path] = None):
    """Rows: scale s (signed), mean delta ratio (with the plan's H1 thresholds), per-block delta
    ratio (mean over seeds), query cosine; one column per backbone with Rein runs."""
    plt = _plt()
    bbs = [bb for bb in backbones_of(data["records"]) if _diag_series(data, bb)] or ["(no Rein run yet)"]
    fig, axes = plt.subplots(4, len(bbs), figsize=(max(4.3 * len(bbs), 9.0), 10), squeeze=False, sharex=True)
    seed_styles = ["-", "--", ":"]
    for j, bb in enumerate(bbs):
        runs = _diag_series(data, bb)
        axes[0, j].set_title(bb, fontsize=10)
        for k, (label, d) in enumerate(runs.items()):
            ls = seed_styles[k % 3]
            for i, key in ((0, "rein_scale"), (1, "rein_delta_ratio"), (3, "query_cosine")):
                if key in d:
                    axes[i, j].plot(*d[key], ls, color="tab:green", lw=1.3, label=label)
        layers = [d["rein_delta_ratio_layers"] for d in runs.values() if "rein_delta_ratio_layers" in d]
        if layers:   # mean over seeds, on the steps every seed logged
            common = sorted(set.intersection(*[set(s) for s, _ in layers]))
            arr = np.mean([[v[s.index(t)] for t in common] for s, v in layers], axis=0)   # [steps, blocks]
            cmap = plt.get_cmap("viridis")
            for b in range(arr.shape[1]):
                axes[2, j].plot(common, arr[:, b], color=cmap(b / max(arr.shape[1] - 1, 1)), lw=1.2,
                                label=f"block {b + 1}")
        axes[0, j].axhline(0, color="k", lw=0.8)
        for t, lab in ((H1_SUPPORTED_BELOW, "H1 supported below"), (H1_REFUTED_ABOVE, "H1 refuted above")):
            axes[1, j].axhline(t, color="k", lw=0.8, ls=":")
            axes[1, j].text(0.98, t, f"{lab} {t}", transform=axes[1, j].get_yaxis_transform(), fontsize=7,
                            va="bottom", ha="right", bbox=dict(facecolor="white", alpha=0.7, lw=0, pad=1))
        axes[3, j].set_ylim(-0.1, 1.0)
        axes[3, j].set_xlabel("training step")
        for i in range(4):
            axes[i, j].grid(alpha=0.3)
            axes[i, j].set_xlim(0, FINAL_STEP * 1.03)
    top = max([H1_REFUTED_ABOVE * 1.25] + [v * 1.1 for bb in bbs for d in _diag_series(data, bb).values()
                                            for v in d.get("rein_delta_ratio", ([], []))[1]])
    for j in range(len(bbs)):
        axes[1, j].set_ylim(0, top)
        axes[2, j].set_ylim(0, top)
    for i, lab in enumerate(("Rein's scale s", "mean ‖sΔf‖/‖f‖ over blocks",
                             "‖sΔf‖/‖f‖ per block\n(mean over seeds)", "queries' mean pairwise cosine")):
        axes[i, 0].set_ylabel(lab, fontsize=9)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 9),
                   fontsize=8, frameon=False)
    else:
        axes[0, 0].text(0.5, 0.5, "no Rein run yet", transform=axes[0, 0].transAxes, ha="center", color="0.4")
    fig.suptitle("Rein's diagnostics on the training batch, every 50 steps\n(line style: seed; colour in row 3: block)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig

