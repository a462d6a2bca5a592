"""The z-buffered canvas the renderer paints on, and masked colour updates that paint with it."""
from __future__ import annotations

import numpy as np

__all__ = ["Canvas", "filled", "masked_set", "masked_scale"]


class Canvas:
    """Z-buffered label / colour / depth / instance maps ([H, W] each, colour [H, W, 3])."""

    def __init__(self, H, W, depth, label, color):
        """A canvas covered by one background surface (the sky): ``color`` broadcasts to [H, W, 3]."""
        self.H, self.W = H, W
        self.depth = np.full((H, W), depth, np.float32)
        self.label = np.full((H, W), label, np.uint8)
        self.inst = np.zeros((H, W), np.int32)
        self.color = filled((H, W), color)
        self.emit = None   # [H, W, 3] light sources, added after night darkening
        self.surface = np.zeros((H, W), np.uint8)  # 1 left facade, 2 right facade, 3 ground
        self.px = np.arange(W, dtype=np.float32) + 0.5   # pixel centres: columns [W]
        self.py = np.arange(H, dtype=np.float32) + 0.5   # and rows [H]

    def paint(self, rows, cols, mask, depth, label, color, inst=0, surface=0):
        """Paint ``mask`` ([h, w] bool over the window rows x cols) where it is nearer.

        ``depth`` is one number; ``color`` an RGB triple or an [h, w, 3] array. Returns the
        painted pixels (bool [h, w]).
        """
        zb = self.depth[rows, cols]
        d = np.float32(depth)
        m = mask & (zb > d)
        if not np.count_nonzero(m):   # (cheaper than m.any() on the small windows of objects)
            return m
        zb[m] = d
        self.label[rows, cols][m] = label
        self.inst[rows, cols][m] = inst
        self.surface[rows, cols][m] = surface
        masked_set(self.color[rows, cols], m, color)
        return m

    def add_emit(self, rows, cols, mask, rgb):
        """Add light ``rgb`` where ``mask`` (no depth test): lamps and windows glowing at night."""
        if self.emit is None:
            self.emit = np.zeros((self.H, self.W, 3), np.float32)
        e = self.emit[rows, cols]
        np.add(e, np.asarray(rgb, np.float32), out=e, where=mask[..., None])


# Masked colour updates: ``col[mask] = value`` / ``col[mask] *= factor`` on [..., 3] float32 arrays,
# each pixel getting exactly the float32 result it would get from the indexed form. How they are
# written only decides the speed: on an object's small window a ``where=`` ufunc is cheapest; on
# the large ground / facade / image arrays a ``where=`` mask broadcast over the colour axis makes
# numpy loop three values at a time, so there the mask is repeated to [..., 3] (one long loop),
# or, for a single colour, plain boolean indexing is used.
_LARGE = 3000   # values (h * w * 3) from which an array counts as large


def masked_set(col, mask, value):
    """``col[mask] = value`` (col [..., 3] float32, mask [...] bool, value broadcastable)."""
    value = np.asarray(value, np.float32)
    if col.size < _LARGE or mask.shape != col.shape[:-1]:
        np.copyto(col, value, where=mask[..., None])
    elif value.ndim <= 1:
        col[mask] = value
    else:
        np.copyto(col, value, where=np.repeat(mask[..., None], 3, -1))


def masked_scale(col, mask, factor):
    """``col[mask] *= factor`` (factor a number or an array broadcastable to col)."""
    if col.size < _LARGE or mask.shape != col.shape[:-1]:
        np.multiply(col, factor, out=col, where=mask[..., None])
    else:
        np.multiply(col, factor, out=col, where=np.repeat(mask[..., None], 3, -1))


def filled(shape, rgb):
    """A float32 [*shape, 3] colour array holding ``rgb`` (a triple, or broadcastable to it)."""
    col = np.empty(tuple(shape) + (3,), np.float32)
    rgb = np.asarray(rgb, np.float32)
    if col.size < _LARGE or rgb.ndim == 0:
        col[:] = rgb
    else:   # channel by channel: long loops instead of one of length 3 per pixel
        for c in range(3):
            np.copyto(col[..., c], rgb[..., c])
    return col
