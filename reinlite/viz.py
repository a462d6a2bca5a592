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
    size = 7 if k <= 30 else max(3, int(210 / k))
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=size)
    ax.set_yticks(range(k), class_names, fontsize=size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    return im


def confusion_figure(cms: dict, class_names: Sequence[str], path: Optional[str | Path] = None,
                     mious: Optional[dict] = None):
    """One row-normalised confusion matrix per domain, side by side; saved to ``path``.
    ``class_names``: the K names of the [K, K] matrices (the run's data.classes)."""
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


def overlay(image, train_ids, alpha: float = 0.5, classes=None) -> np.ndarray:
    """Blend the class colours of ``train_ids`` [H, W] over ``image`` (uint8 [H, W, 3], or a
    PIL image) -> uint8 [H, W, 3]; ignored / unknown ids keep the image.

    ``classes``: the class names (or count K) whose palette to use
    (reinlite.data.classes.palette); default the 19 Cityscapes classes."""
    from reinlite.data.classes import CLASSES, colorize, palette

    image = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8)
    ids = np.asarray(train_ids.cpu() if hasattr(train_ids, "cpu") else train_ids)
    if ids.shape != image.shape[:2]:
        raise ValueError(f"overlay: the label map is {ids.shape[1]}x{ids.shape[0]} but the image "
                         f"is {image.shape[1]}x{image.shape[0]} (W x H)")
    colors = palette(CLASSES if classes is None else classes)
    color = colorize(ids, colors=colors).astype(np.float32)
    keep = (ids >= 0) & (ids < len(colors))
    out = image.astype(np.float32)
    out[keep] = (1 - alpha) * out[keep] + alpha * color[keep]
    return out.round().clip(0, 255).astype(np.uint8)
