"""The procedural pretraining corpus shared by the two course backbones.

Both course backbones see street scenes drawn from the renderer's *broad* layout distribution
(``domain=None``) in *random* styles (``random_style``: far more palettes, textures, lightings
and weathers than any benchmark domain). Inputs are 64 x 128 (patch 8 -> 8 x 16 tokens):
either a whole scene rendered at 64 x 128 (half the benchmark's scale) or a 64 x 128 window
of a 128 x 256 render (the benchmark's native scale).

Seeds: every sample draws from ``np.random.default_rng([PRETRAIN_SEED_TAG, *words])`` with a
run seed and the global sample index among the words (a seed sequence whose first word no
benchmark generator uses, see reinlite.data.synthetic), so the corpus is disjoint from the
benchmark's images, and a resumed run sees exactly the samples an uninterrupted one would.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

PRETRAIN_SEED_TAG = 0x5EED_C0DE  # first word of every pretraining seed sequence

VIT_KWARGS = dict(img_size=(64, 128), patch_size=8, embed_dim=192, depth=6, num_heads=3,
                  mlp_ratio=4.0, num_classes=0, global_pool="", class_token=True)
IN_SIZE = (64, 128)
DEFAULT_EXPORT_DIR = Path("weights")  # `--export` without a folder: ./weights under the current directory
FULL_SIZE = (128, 256)


def corpus_rng(*words: int) -> np.random.Generator:
    """The generator of one pretraining sample: ``default_rng([PRETRAIN_SEED_TAG, *words])``."""
    return np.random.default_rng([PRETRAIN_SEED_TAG, *[int(w) for w in words]])


def to_tensor_image(img: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [3, H, W], ImageNet-normalised (reinlite.data.transforms.normalize)."""
    from reinlite.data.transforms import normalize

    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    return np.ascontiguousarray(normalize(x).numpy())


def render_scene(rng: np.random.Generator, layout=None, size: Sequence[int] = IN_SIZE) -> dict:
    """One broad layout (drawn from ``rng`` unless given) in one random style, rendered at ``size``.

    Returns the renderer's dict (``image`` uint8 [H, W, 3], ``label``, ``instance``, ``depth``).
    """
    from reinlite.data import synthetic as syn

    if layout is None:
        layout = syn.sample_layout(rng, domain=None)
    return syn.render(layout, syn.random_style(rng), size=tuple(size), rng=rng)


def sample_layout(rng: np.random.Generator) -> dict:
    from reinlite.data import synthetic as syn

    return syn.sample_layout(rng, domain=None)


def random_window(rng: np.random.Generator, full: Sequence[int] = FULL_SIZE,
                  size: Sequence[int] = IN_SIZE) -> tuple[int, int, bool]:
    """(y0, x0, flip) of a ``size`` window inside a ``full`` render, flipped with p = 1/2."""
    return (int(rng.integers(0, full[0] - size[0] + 1)), int(rng.integers(0, full[1] - size[1] + 1)),
            bool(rng.random() < 0.5))


def build_vit(**overrides):
    """The course ViT shape (``VIT_KWARGS``) as a plain timm VisionTransformer."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(**{**VIT_KWARGS, **overrides})


class ImageCorpus(torch.utils.data.Dataset):
    """Item i -> ``views`` images float32 [views, 3, 64, 128] of one scene (ImageNet-normalised).

    No labels of any kind. Item i of run seed s and stream t draws from ``corpus_rng(t, s, i)``
    one broad layout in one random style, rendered once at 128 x 256 (the benchmark's scale);
    view 0 is the whole scene at half scale (2 x 2 area average, 64 x 128), the other views are
    random 64 x 128 windows at native scale. Each view is flipped horizontally with p = 1/2.
    One render thus feeds several samples (rendering costs more than a masked step).
    """

    def __init__(self, seed: int, n: int, stream: int, views: int = 4,
                 size: Sequence[int] = IN_SIZE, full: Sequence[int] = FULL_SIZE):
        if full[0] % size[0] or full[1] % size[1] or full[0] // size[0] != full[1] // size[1]:
            raise ValueError(f"full size {tuple(full)} must be an integer multiple of size {tuple(size)}")
        self.seed, self.n, self.stream, self.views = seed, n, stream, views
        self.size, self.full = tuple(size), tuple(full)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = corpus_rng(self.stream, self.seed, i)
        img = render_scene(rng, size=self.full)["image"]
        h, w = self.size
        f = self.full[0] // h
        whole = img.reshape(h, f, w, f, 3).astype(np.float32).mean(axis=(1, 3))
        views = [np.rint(whole).astype(np.uint8)]
        for _ in range(self.views - 1):
            y0, x0, _flip = random_window(rng, self.full, self.size)
            views.append(img[y0:y0 + h, x0:x0 + w])
        out = [to_tensor_image(v[:, ::-1] if rng.random() < 0.5 else v) for v in views]
        return torch.from_numpy(np.stack(out))
