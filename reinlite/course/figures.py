"""Figures the notebooks show: image grids, similarity maps, heatmaps, PCA colours, the
Rein data-flow diagram."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from reinlite.viz import _plt


def _to_numpy_image(image) -> np.ndarray:
    """uint8/float image [H, W, 3] or [3, H, W] (numpy or torch) -> array [H, W, 3] for imshow."""
    a = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 1) if a.max() <= 1.0 else np.clip(a, 0, 255).astype(np.uint8)
    return a


def show_images(images, titles: Optional[Sequence[str]] = None, ncols: Optional[int] = None,
                size: float = 3.0, suptitle: Optional[str] = None):
    """Show images (each [H, W, 3] or [3, H, W]) in a grid with optional titles."""
    plt = _plt()
    images = list(images)
    n = len(images)
    ncols = ncols or min(n, 4)
    nrows = (n + ncols - 1) // ncols
    h, w = _to_numpy_image(images[0]).shape[:2]
    title_room = 0.3 if titles is not None else 0.0     # inches per row for a title line
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * w / max(h, w) * 1.1 + 0.2,
                                                    nrows * (size * h / max(h, w) * 1.1 + title_room) + 0.4),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_to_numpy_image(images[i]))
            if titles is not None and i < len(titles):
                ax.set_title(_wrap(titles[i], size * w / max(h, w) * 1.1), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def _wrap(title: str, width_inches: float, fontsize: float = 9) -> str:
    """``title`` broken into lines that fit a panel ``width_inches`` wide (about 0.55 em a character)."""
    import textwrap

    chars = max(8, int(width_inches * 72 / (0.55 * fontsize)))
    return textwrap.fill(str(title), chars)


def similarity_maps(image, maps, grid: Sequence[int], titles: Optional[Sequence[str]] = None,
                    vmin: Optional[float] = None, vmax: Optional[float] = None,
                    markers: Optional[Sequence[int]] = None, ncols: int = 4, size: float = 3.0,
                    suptitle: Optional[str] = None, cmap: str = "magma", alpha: float = 0.65):
    """Overlay per-patch maps on an image: ``maps`` [k, n] (n = grid[0] * grid[1] patches,
    row-major), one panel per map, each drawn over ``image`` at patch resolution.
    ``markers[i]``: a patch index outlined in cyan on panel i."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    m = maps.detach().float().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps, np.float32)
    m = m.reshape(m.shape[0], -1)
    gh, gw = int(grid[0]), int(grid[1])
    img = _to_numpy_image(image)
    h, w = img.shape[:2]
    k = m.shape[0]
    ncols = max(1, min(ncols, k))
    nrows = (k + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * w / max(h, w) * 1.15 + 0.6,
                                                    size * nrows * h / max(h, w) * 1.15 + 0.5),
                             squeeze=False)
    lo = float(m.min()) if vmin is None else vmin
    hi = float(m.max()) if vmax is None else vmax
    shown = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        ax.imshow(img)
        shown = ax.imshow(m[i].reshape(gh, gw), cmap=cmap, vmin=lo, vmax=hi, alpha=alpha,
                          extent=(0, w, h, 0), interpolation="nearest")
        if markers is not None and i < len(markers) and markers[i] is not None:
            r, c = divmod(int(markers[i]), gw)
            ph, pw = h / gh, w / gw
            ax.add_patch(Rectangle((c * pw, r * ph), pw, ph, fill=False, edgecolor="cyan", lw=2))
        if titles is not None and i < len(titles):
            ax.set_title(_wrap(titles[i], size * w / max(h, w) * 1.15), fontsize=9)
    if shown is not None:
        fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def heatmap_grid(matrices: Sequence, titles: Sequence[str], xlabel: str = "", ylabel: str = "",
                 cmap: str = "coolwarm", width: float = 8.0, symmetric: bool = True):
    """Small matrices stacked vertically with one shared (symmetric) colour scale.

    Used by notebook 06 to show one token's values over layers and channels ([L, Q]) next
    to the max / mean / last rows pooled from them.
    """
    plt = _plt()
    mats = [np.atleast_2d(m.detach().float().cpu().numpy() if hasattr(m, "detach") else np.asarray(m))
            for m in matrices]
    limit = max(float(np.abs(m).max()) for m in mats) or 1.0
    heights = [m.shape[0] for m in mats]
    fig, axes = plt.subplots(len(mats), 1, figsize=(width, 0.28 * sum(heights) + 0.75 * len(mats)),
                             gridspec_kw=dict(height_ratios=heights), squeeze=False,
                             constrained_layout=True)
    shown = None
    for ax, m, title in zip(axes[:, 0], mats, titles):
        shown = ax.imshow(m, cmap=cmap, aspect="auto", interpolation="nearest",
                          vmin=-limit if symmetric else None, vmax=limit if symmetric else None)
        ax.set_title(title, fontsize=9)
        ax.set_yticks(range(m.shape[0]))
        ax.tick_params(labelsize=7)
        ax.set_ylabel(ylabel, fontsize=8)
    axes[-1, 0].set_xlabel(xlabel, fontsize=8)
    fig.colorbar(shown, ax=list(axes[:, 0]), shrink=0.8)
    return fig


def pca(features, q: int = 3):
    """Principal components of feature vectors, fitted jointly on all of them.

    features: [..., C] (e.g. patch tokens [N, h, w, C] of several images). Centres the rows,
    takes the SVD X = U S V^T and keeps the top ``q`` right singular vectors. Each
    component's sign is fixed so that its largest-magnitude loading is positive
    (deterministic output). Returns (projections [..., q], components [q, C],
    explained variance ratio [q]) as torch tensors.
    """
    import torch

    x = torch.as_tensor(features).float()
    lead, c = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, c)
    flat = flat - flat.mean(0)
    _, s, vh = torch.linalg.svd(flat, full_matrices=False)
    comps = vh[:q]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * signs
    ratio = (s[:q] ** 2) / (s ** 2).sum()
    return (flat @ comps.T).reshape(*lead, q), comps, ratio


def pca_rgb(features, quantiles: Sequence[float] = (0.02, 0.98)) -> np.ndarray:
    """Features [..., C] -> RGB [..., 3] in [0, 1]: the first three principal components
    (:func:`pca`, fitted jointly), each scaled between its ``quantiles``."""
    import torch

    proj = pca(features, 3)[0]
    flat = proj.reshape(-1, 3)
    lo = torch.quantile(flat, quantiles[0], dim=0)
    hi = torch.quantile(flat, quantiles[1], dim=0)
    return ((proj - lo) / (hi - lo + 1e-6)).clamp(0, 1).numpy()


def rein_dataflow_figure(num_blocks: int = 4, taps: Sequence[str] = ("7", "11", "15", "23"),
                         path: Optional[str | Path] = None):
    """Where Rein sits in a ViT and how data flows, drawn as boxes and arrows (no image file).

    A frozen ViT (patch embedding, blocks 1..L) with a Rein after *every* block: each Rein
    reads the block's patch features f_i and its own tokens T_i, and passes on
    f_i + s * Delta f_i (the cls / register tokens pass untouched). All Reins share the two
    MLPs (W_T, W_f) and the scale s. The outputs of the Reins of blocks ``taps`` (DINOv2-L:
    7, 11, 15, 23) become a multi-scale pyramid (strides 4, 8, 16, 32) for the pixel decoder.
    Separately, the tokens of all L layers become the decoder's object queries (transform
    -> max / mean / last over layers -> merge): one per token, image-independent. Frozen
    parts are grey, Rein's trained parts orange, the trained head green. ``num_blocks``
    blocks are drawn (the last two as "..." and "L"). Returns the figure (saved to ``path``
    if given).
    """
    plt = _plt()
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    frozen, trained, data, head = "#d9d9d9", "#f4a259", "#cfe3f5", "#b8d8a8"
    query_colour = "#b35c00"
    n = max(2, int(num_blocks))
    labels = [str(i + 1) for i in range(n - 2)] + ["…", "L"]
    step, x0 = 2.3, 2.9
    end = x0 + n * step                       # right end of the backbone row
    width = end + 4.6
    fig, ax = plt.subplots(figsize=(width * 0.8, 7.2))
    ax.set_xlim(-0.2, width)
    ax.set_ylim(-0.2, 9.0)
    ax.axis("off")

    def box(x, y, w, h, text, color, size=8.5, bold=False):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04,rounding_size=0.12",
                                    facecolor=color, edgecolor="#444444", lw=1.0))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size,
                fontweight="bold" if bold else "normal")

    def arrow(xy0, xy1, color="#333333", lw=1.2, rad=0.0, ls="-"):
        ax.add_patch(FancyArrowPatch(xy0, xy1, arrowstyle="-|>", mutation_scale=11, color=color,
                                     lw=lw, linestyle=ls, connectionstyle=f"arc3,rad={rad}",
                                     shrinkA=1, shrinkB=1))

    # the backbone row: image -> patch embed -> (block i -> Rein i) x L
    yb, hb = 4.4, 1.0
    mid = yb + hb / 2
    box(0.0, yb, 1.1, hb, "image\n[3, H, W]", data)
    box(1.45, yb, 1.1, hb, "patch\nembed", frozen)
    arrow((1.1, mid), (1.45, mid))
    previous, reins = 2.55, []
    for i, label in enumerate(labels):
        x = x0 + i * step
        if label == "…":
            ax.text(x + 0.9, mid, "· · ·", ha="center", va="center", fontsize=16)
            arrow((previous, mid), (x + 0.45, mid))
            previous = x + 1.35
            continue
        box(x, yb, 0.95, hb, f"block {label}\n(frozen)", frozen, size=8)
        box(x + 1.15, yb, 0.95, hb, f"Rein {label}", trained, size=8.5, bold=True)
        arrow((previous, mid), (x, mid))
        arrow((x + 0.95, mid), (x + 1.15, mid))
        previous = x + 2.1
        centre = x + 1.625
        reins.append(centre)
        box(x + 1.2, 2.2, 0.85, 0.7, f"$T_{{{label}}}$\n[m, c]", trained, size=8)
        arrow((centre, 2.9), (centre, yb))
    ax.text(previous + 0.1, mid, "$f_L'$", fontsize=9, va="center")
    # the MLPs and the scale that every Rein shares, between the tokens and the Reins
    box(reins[0] - 0.5, 3.3, reins[-1] - reins[0] + 1.0, 0.55,
        r"shared by every Rein: $W_T, b_T$ (tokens $\rightarrow$ features), $W_f, b_f$ ($\Delta f$), "
        r"scale $s$;   Rein $i$:  $f_i \rightarrow f_i + s\,\Delta f_i$ (patch rows only)",
        trained, size=7.8)

    # multi-scale features -> pixel decoder -> mask decoder -> masks
    yf = 6.15
    box(reins[0] - 0.5, yf, reins[-1] - reins[0] + 1.0, 0.65,
        "multi-scale features: the outputs of the Reins of blocks " + ", ".join(taps)
        + " (DINOv2-L), resized to strides 4, 8, 16, 32", data, size=8)
    # only some blocks are tapped (DINOv2-L: 4 of 24, the last one among them): dashed arrows
    # from the middle of the stack and from Rein L
    dots = x0 + labels.index("…") * step + 0.9
    for dx in (-0.35, 0.0, 0.35):
        arrow((dots + dx, mid + 0.25), (dots + dx, yf), lw=0.9, ls="--")
    arrow((reins[-1], yb + hb), (reins[-1], yf), lw=0.9, ls="--")
    ax.text(dots + 0.55, (yb + hb + yf) / 2, f"{len(taps)} of the L Rein outputs", fontsize=7.5, va="center")
    yt = 7.75
    xp = (reins[0] + reins[-1]) / 2 - 1.0
    box(xp, yt, 2.0, 0.8, "pixel decoder\n(multi-scale)", head, size=8.5)
    arrow((xp + 1.0, yf + 0.65), (xp + 1.0, yt))
    xd = end + 0.5
    box(xd, yt - 0.1, 2.0, 1.0, "Mask2Former\ndecoder", head, size=9, bold=True)
    arrow((xp + 2.0, yt + 0.4), (xd, yt + 0.4))
    box(xd + 2.3, yt, 1.75, 0.8, "m masks + classes\n[m, H, W], [m, K+1]", data, size=7.5)
    arrow((xd + 2.0, yt + 0.4), (xd + 2.3, yt + 0.4))

    # tokens of all layers -> queries (no image involved)
    yq, hq = 0.2, 0.95
    xq = x0 + 0.3
    box(xq, yq, 2.6, hq, "transform  Linear(c, Q)\nof every layer's tokens\n[L, m, Q]", trained, size=8)
    for k, centre in enumerate(reins):
        arrow((centre, 2.2), (xq + 0.8 + 0.5 * k, yq + hq), lw=0.8)
    xm = xq + 3.0
    box(xm, yq, 2.5, hq, "pool over the L layers:\nmax | mean | last\n[m, 3Q]", trained, size=8)
    arrow((xq + 2.6, yq + hq / 2), (xm, yq + hq / 2))
    xg = xm + 2.9
    box(xg, yq, 1.9, hq, "merge\nLinear(3Q, Q)", trained, size=8)
    arrow((xm + 2.5, yq + hq / 2), (xg, yq + hq / 2))
    xo = xd
    box(xo, yq, 2.0, hq, "queries [m, Q]\n(no image input)", trained, size=8, bold=True)
    arrow((xg + 1.9, yq + hq / 2), (xo, yq + hq / 2))
    arrow((xo + 1.0, yq + hq), (xd + 1.0, yt - 0.1), lw=1.8, color=query_colour)
    ax.text(xo + 1.15, 4.2, "object queries:\nthe positional\nembedding of every\ndecoder layer, and\n"
            "(via a Linear)\nthe initial content", fontsize=7.5, color=query_colour, va="center")

    # legend
    for k, (color, text) in enumerate([(frozen, "frozen (no gradient)"), (trained, "Rein: trained"),
                                       (head, "decode head: trained"), (data, "tensors")]):
        ax.add_patch(FancyBboxPatch((0.05, 2.7 - 0.5 * k), 0.35, 0.3, boxstyle="round,pad=0.02",
                                    facecolor=color, edgecolor="#444444", lw=0.8))
        ax.text(0.5, 2.85 - 0.5 * k, text, fontsize=7.5, va="center")
    ax.set_title("Rein in a ViT: a Rein after every frozen block refines the patch features; "
                 "its tokens also become the decoder's queries", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def read_training_log(path) -> list[dict]:
    """The lines of a run's ``log.jsonl`` (one dict per logged step, in order)."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (a run writes log.jsonl into its folder)")
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not a JSON object ({error.msg}); "
                             "expected one JSON dict per logged step") from None
    return lines


def training_log_figure(log, title: str = "", path=None, scale_init: Optional[float] = None):
    """Loss, learning rate, gradient norm and (for Rein runs) the scale s and ||s Delta f|| / ||f||
    against steps, as a 2 x 2 grid.

    Args:
        log: a list of log lines (:func:`read_training_log`) or a path to ``log.jsonl``. Each line
            holds ``step``, ``loss`` (the weighted total over all decoder layers), ``loss_cls`` /
            ``loss_mask`` / ``loss_dice`` (the last layer's unweighted terms), ``lr`` and
            ``grad_norm``; a Rein run adds ``rein_scale`` and ``rein_delta_ratio``.
        scale_init: s before the first step (``cfg.model.rein.scale_init``), drawn at step 0:
            the log records s *after* each step's update, and AdamW's first update moves every
            parameter by about lr, so with lr = s's start s can be near 0 at step 1.
    Returns the figure: the fourth panel says "no Rein diagnostics" for other methods' logs.
    """
    plt = _plt()
    lines = read_training_log(log) if not isinstance(log, list) else log
    if not lines:
        raise ValueError(f"{log if not isinstance(log, list) else 'the log'}: no logged steps to plot")
    steps = [e["step"] for e in lines]
    fig, axes = plt.subplots(2, 2, figsize=(10, 5.6), constrained_layout=True)
    ax = axes[0, 0]
    ax.plot(steps, [e["loss"] for e in lines], color="#333333", label="total (weighted, all layers)")
    for key, colour in (("loss_cls", "#1f77b4"), ("loss_mask", "#2ca02c"), ("loss_dice", "#d62728")):
        if key in lines[0]:
            ax.plot(steps, [e[key] for e in lines], color=colour, lw=1, label=key.replace("loss_", "") + " (last layer)")
    ax.set_yscale("log")
    ax.set_title("training loss", fontsize=9)
    ax.legend(fontsize=7, loc="center right", frameon=False)    # between the total and the terms
    ax = axes[0, 1]
    ax.plot(steps, [e["lr"] for e in lines], color="#9467bd")
    ax.set_title("learning rate (poly schedule)", fontsize=9)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.1e}"))
    ax = axes[1, 0]
    ax.plot(steps, [e["grad_norm"] for e in lines], color="#8c564b")
    ax.set_yscale("log")
    ax.set_title("gradient norm (before clipping)", fontsize=9)
    ax = axes[1, 1]
    if all(e.get("rein_scale") is not None for e in lines):
        scale_steps, scales = list(steps), [abs(e["rein_scale"]) for e in lines]
        if scale_init is not None:
            scale_steps, scales = [0] + scale_steps, [abs(scale_init)] + scales
        ax.plot(scale_steps, scales, color="#ff7f0e", label="|s| (Rein's scale)")
        if scale_init is not None:
            ax.plot([0], [abs(scale_init)], "o", color="#ff7f0e", ms=4, label=f"s at the start ({scale_init:g})")
        if all("rein_delta_ratio" in e for e in lines):
            ax.plot(steps, [e["rein_delta_ratio"] for e in lines], color="#17becf",
                    label="‖sΔf‖ / ‖f‖ (mean over blocks)")
        ax.set_title("how much Rein moves the features", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    else:
        ax.text(0.5, 0.5, "no Rein diagnostics in this log", ha="center", va="center", fontsize=9,
                transform=ax.transAxes)
        ax.set_xticks([]), ax.set_yticks([])
    for ax in axes.flat:
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
