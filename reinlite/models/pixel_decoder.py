"""The pixel decoders of the Mask2Former head, by name (``model.head.pixel_decoder``).

- "msdeform": Mask2Former's: a transformer encoder of multi-scale deformable attention (Zhu et
  al., Deformable DETR) over strides 8/16/32, then an FPN step to stride 4. The deformable
  sampling is written with ``F.grid_sample`` (no custom CUDA kernel).
- "fpn": a light feature pyramid (lateral 1x1 + top-down sum + 3x3), much cheaper on a CPU.

Each returns (mask_features [B, D_mask, H/4, W/4], [3 maps [B, D, Hi, Wi] at strides 32, 16, 8]).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["sine_positional_encoding", "ms_deform_attn_sample", "MSDeformAttn", "MSDeformAttnPixelDecoder",
           "FPNPixelDecoder", "PIXEL_DECODERS"]


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm as in Mask2Former (32 groups of 8 channels at 256): at most 32 groups, at
    least 8 channels per group (so narrow heads still normalise over several channels)."""
    groups = max(g for g in range(1, 33) if channels % g == 0 and channels // g >= min(8, channels))
    return nn.GroupNorm(groups, channels)


def _xavier_convs(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Conv2d of ``module`` (Mask2Former's init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def sine_positional_encoding(x: torch.Tensor, num_feats: Optional[int] = None,
                             temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised 2-D sine/cosine position encoding of a feature map.

    x: [B, C, H, W] (only its shape, device and dtype are used).
    Returns [B, 2 * num_feats, H, W] (num_feats = C // 2 by default): channels [0, num_feats)
    encode y, [num_feats, 2 num_feats) encode x. Position y in 1..H is normalised to
    (0, 2 pi]; channel 2k gets sin(y / T^(2k/F)), channel 2k+1 gets cos(y / T^(2k/F)).
    """
    b, c, h, w = x.shape
    num_feats = num_feats or c // 2
    dev = x.device
    scale = 2 * math.pi
    eps = 1e-6
    y = torch.arange(1, h + 1, device=dev, dtype=torch.float32)
    xx = torch.arange(1, w + 1, device=dev, dtype=torch.float32)
    y = y / (h + eps) * scale
    xx = xx / (w + eps) * scale
    k = torch.arange(num_feats, device=dev, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / num_feats)
    py = y[:, None] / dim_t  # [H, F]
    px = xx[:, None] / dim_t  # [W, F]
    py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)
    px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat((py[:, None, :].expand(h, w, num_feats),
                     px[None, :, :].expand(h, w, num_feats)), dim=2)  # [H, W, 2F]
    return pos.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1).to(x.dtype)


# ---------------------------------------------------------------------------- multi-scale deformable attention (plain pytorch)
def ms_deform_attn_sample(value: torch.Tensor, shapes: Sequence[tuple[int, int]],
                          locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The core of multi-scale deformable attention: a weighted sum of bilinear samples.

    value:     [B, sum_l H_l W_l, h, d]   values of every level, flattened and concatenated
    shapes:    [(H_l, W_l)] for the L levels
    locations: [B, Nq, h, L, P, 2]   sampling points (x, y) in [0, 1] (0 = left/top edge of
               the map, 1 = right/bottom edge; pixel j's centre is (j + 0.5) / W)
    weights:   [B, Nq, h, L, P]      attention weights (softmax over L*P per head)
    Returns    [B, Nq, h * d]:  out[b, q, head] = sum_{l, p} w[l, p] * bilinear(V_l, loc[l, p])
    with zero padding outside the map (F.grid_sample, align_corners=False).
    """
    b, _, nh, d = value.shape
    _, nq, _, nl, npnt, _ = locations.shape
    sizes = [h * w for h, w in shapes]
    values = value.split(sizes, dim=1)
    grids = 2 * locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = values[lvl].permute(0, 2, 3, 1).reshape(b * nh, d, h, w)  # [B h, d, H, W]
        g = grids[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(b * nh, nq, npnt, 2)
        sampled.append(F.grid_sample(v, g.to(v.dtype), mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # [B h, d, Nq, P]
    s = torch.stack(sampled, dim=3).flatten(3)  # [B h, d, Nq, L P]
    w_ = weights.permute(0, 2, 1, 3, 4).reshape(b * nh, 1, nq, nl * npnt).to(s.dtype)
    out = (s * w_).sum(-1)  # [B h, d, Nq]
    return out.view(b, nh * d, nq).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR, eq. 3).

    Every query attends to only P points per level and head, placed at learned offsets
    around its reference point: offsets and weights are linear functions of the query.
    """

    def __init__(self, dim: int, num_heads: int, num_levels: int, num_points: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.num_levels, self.num_points = (
            dim, num_heads, num_levels, num_points)
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Offsets start at zero weight with a bias that spreads the P points of each head
        # along the head's own direction (k + 1 pixels away), as in Deformable DETR.
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor,
                value: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """query [B, Nq, D]; reference_points [B, Nq, L, 2] (x, y in [0, 1]);
        value [B, sum H_l W_l, D]; shapes [(H_l, W_l)]. Returns [B, Nq, D]."""
        b, nq, _ = query.shape
        h, nl, npnt = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).view(b, value.shape[1], h, self.dim // h)
        off = self.sampling_offsets(query).view(b, nq, h, nl, npnt, 2)
        w = self.attention_weights(query).view(b, nq, h, nl * npnt).softmax(-1)
        w = w.view(b, nq, h, nl, npnt)
        # offsets are in pixels of each level: divide by (W_l, H_l) to normalise
        norm = torch.tensor([[ww, hh] for hh, ww in shapes], device=query.device,
                            dtype=off.dtype)
        loc = reference_points[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_sample(v, shapes, loc, w))


class _DeformEncoderLayer(nn.Module):
    """Post-norm encoder layer: x = LN(x + MSDeformAttn(x + pos)); x = LN(x + FFN(x))."""

    def __init__(self, dim: int, num_heads: int, num_levels: int, num_points: int, ffn_dim: int):
        super().__init__()
        self.attn = MSDeformAttn(dim, num_heads, num_levels, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True),
                                 nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x, pos, ref, shapes):
        x = self.norm1(x + self.attn(x + pos, ref, x, shapes))
        return self.norm2(x + self.ffn(x))


def _encoder_reference_points(shapes, batch: int, device) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1]: [B, sum H_l W_l, L, 2] (x, y)."""
    refs = []
    for h, w in shapes:
        ys, xs = torch.meshgrid((torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h,
                                (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w,
                                indexing="ij")
        refs.append(torch.stack((xs.flatten(), ys.flatten()), -1))
    ref = torch.cat(refs, 0)  # [N, 2]; the same normalised point on every level
    return ref[None, :, None, :].expand(batch, -1, len(shapes), -1)


class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder.

    feats: 4 maps [B, C_i, H_i, W_i] at strides 4, 8, 16, 32.
    1. 1x1 conv + GroupNorm projects strides 8/16/32 to D; a level embedding and a sine
       position encoding are added, and ``num_layers`` deformable-attention encoder layers
       mix all three scales (every pixel is a query).
    2. FPN step: stride 4 = lateral(feats[0]) + upsample(stride-8 output), then 3x3 conv.
    Returns (mask_features [B, D_mask, H/4, W/4],
             multi_scale [stride 32, stride 16, stride 8] each [B, D, H_i, W_i]).
    """

    def __init__(self, in_channels: Sequence[int], dim: int, mask_dim: int, num_layers: int,
                 num_heads: int, num_points: int, ffn_dim: int):
        super().__init__()
        self.dim = dim
        # levels ordered coarse -> fine: strides 32, 16, 8
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), _norm(dim)) for c in list(in_channels)[1:][::-1])
        self.level_embed = nn.Parameter(torch.empty(3, dim))
        nn.init.normal_(self.level_embed)
        self.layers = nn.ModuleList(
            _DeformEncoderLayer(dim, num_heads, 3, num_points, ffn_dim) for _ in range(num_layers))
        self.lateral = nn.Sequential(nn.Conv2d(in_channels[0], dim, 1, bias=False), _norm(dim))
        self.output_conv = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False),
                                         _norm(dim), nn.ReLU(inplace=True))
        self.mask_feature = nn.Conv2d(dim, mask_dim, 1)
        _xavier_convs(self)

    def forward(self, feats: Sequence[torch.Tensor]):
        coarse_first = list(feats[1:])[::-1]
        srcs, poss, shapes = [], [], []
        for lvl, (x, proj) in enumerate(zip(coarse_first, self.input_proj)):
            y = proj(x)
            shapes.append(tuple(y.shape[-2:]))
            srcs.append(y.flatten(2).transpose(1, 2))
            pos = sine_positional_encoding(y) + self.level_embed[lvl].view(1, -1, 1, 1).to(y.dtype)
            poss.append(pos.flatten(2).transpose(1, 2))
        src, pos = torch.cat(srcs, 1), torch.cat(poss, 1)
        ref = _encoder_reference_points(shapes, src.shape[0], src.device)
        for layer in self.layers:
            src = layer(src, pos, ref, shapes)
        b = src.shape[0]
        outs = [s.transpose(1, 2).reshape(b, self.dim, h, w)
                for s, (h, w) in zip(src.split([h * w for h, w in shapes], 1), shapes)]
        y = self.lateral(feats[0])
        y = y + F.interpolate(outs[-1], size=y.shape[-2:], mode="bilinear", align_corners=False)
        y = self.output_conv(y)
        return self.mask_feature(y), outs


class FPNPixelDecoder(nn.Module):
    """A light pixel decoder: a feature pyramid network (Lin et al., 2017).

    p_32 = conv3x3(lateral(x_32)); p_s = conv3x3(lateral(x_s) + upsample(p_2s)) for s = 16, 8, 4.
    Returns (mask_features = conv1x1(p_4) [B, D_mask, H/4, W/4], [p_32, p_16, p_8]).
    """

    def __init__(self, in_channels: Sequence[int], dim: int, mask_dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1, bias=False), _norm(dim)) for c in in_channels)
        self.output = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), _norm(dim),
                          nn.ReLU(inplace=True)) for _ in in_channels)
        self.mask_feature = nn.Conv2d(dim, mask_dim, 1)
        _xavier_convs(self)

    def forward(self, feats: Sequence[torch.Tensor]):
        outs = [None] * len(feats)
        prev = None
        for i in reversed(range(len(feats))):
            y = self.lateral[i](feats[i])
            if prev is not None:
                y = y + F.interpolate(prev, size=y.shape[-2:], mode="bilinear",
                                      align_corners=False)
            prev = outs[i] = self.output[i](y)
        return self.mask_feature(outs[0]), [outs[3], outs[2], outs[1]]


# The pixel decoders by name (``model.head.pixel_decoder``), each called as
# (in_channels, dim, mask_dim, encoder layers, heads, points, encoder FFN size).
PIXEL_DECODERS = {
    "msdeform": MSDeformAttnPixelDecoder,
    "fpn": lambda in_channels, dim, mask_dim, *encoder: FPNPixelDecoder(in_channels, dim, mask_dim),
}
