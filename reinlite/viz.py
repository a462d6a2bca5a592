"""Figures for training and evaluation: confusion matrices, per-domain mIoU, overlays.

Everything returns / saves matplotlib figures with the Agg backend (no display needed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def _plt():
    import matplotlib

    # In a notebook keep the kernel's backend ("inline" in matplotlib >= 3.9, or
    # "module://matplotlib_inline.backend_inline", or ipympl): switching to Agg there would
    # stop every later figure of the notebook from being shown.
    backend = matplotlib.get_backend().lower()
    if backend != "agg" and "inline" not in backend and "ipykernel" not in sys.modules:
        try:
            matplotlib.use("Agg")
        except Exception:
            pass
    import matplotlib.pyplot as plt

    return plt


def normalize_confusion(cm: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix: row k = how the pixels of true class k were
    predicted (rows with no pixels stay 0)."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], title: str = "", ax=None):
    """Draw a row-normalised confusion matrix (true class down, predicted class across)."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    m = normalize_confusion(cm)
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    k = len(class_names)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    return im


def confusion_figure(cms: dict, class_names: Sequence[str], path: Optional[str | Path] = None,
                     mious: Optional[dict] = None):
    """One row-normalised confusion matrix per domain, side by side; saved to ``path``."""
    plt = _plt()
    n = len(cms)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 5.8 * rows), squeeze=False)
    im = None
    for ax, (domain, cm) in zip(axes.flat, cms.items()):
        title = domain if not mious else f"{domain}  (mIoU {mious[domain]:.1f})"
        im = plot_confusion(cm, class_names, title, ax=ax)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="fraction of the true class")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


def miou_bar_figure(mious: dict, path: Optional[str | Path] = None, title: str = "mIoU per domain"):
    """Bar chart of per-domain mIoU (the mean of the targets as a dashed line)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * len(mious) + 2, 3.2))
    names = list(mious)
    vals = [mious[n] for n in names]
    ax.bar(names, vals, color="#4c72b0")
    for i, v in enumerate(vals):
        ax.text(i, v + 0.5, f"{v:.1f}", ha="center", fontsize=8)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, max(vals + [1]) * 1.2)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


def overlay(image: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the Cityscapes colours of ``train_ids`` [H, W] over ``image`` uint8 [H, W, 3]
    (ignored / unknown ids keep the image)."""
    from .data.classes import colorize

    image = np.asarray(image, dtype=np.uint8)
    ids = np.asarray(train_ids)
    color = colorize(ids).astype(np.float32)
    keep = (ids >= 0) & (ids < 19)
    out = image.astype(np.float32)
    out[keep] = (1 - alpha) * out[keep] + alpha * color[keep]
    return out.round().clip(0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# Figures the notebooks show
# ----------------------------------------------------------------------------------------
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
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * w / max(h, w) * 1.1 + 0.2,
                                                    size * nrows * h / max(h, w) * 1.1 + 0.4),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_to_numpy_image(images[i]))
            if titles is not None and i < len(titles):
                ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


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
            ax.set_title(titles[i], fontsize=9)
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
