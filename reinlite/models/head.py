"""A Mask2Former-style decode head fed by Rein queries, in plain PyTorch (no mmcv).

Mask classification (Cheng et al., "Masked-attention Mask Transformer", CVPR 2022): the head
predicts m (mask, class) pairs instead of one class per pixel.

    feats (4 maps, strides 4/8/16/32)
      -> pixel decoder -> mask_features  [B, D_mask, H/4, W/4]
                       -> multi-scale    3 maps [B, D, Hi, Wi] at strides 32, 16, 8
    queries (m of them)
      -> transformer decoder: L layers of (masked cross-attention -> self-attention -> FFN),
         layer i attends to multi-scale level i % 3 (round robin, coarsest first)
      -> after the initial queries and after every layer:
         class logits [B, m, K+1]  (K classes + "no object")
         mask logits  [B, m, H/4, W/4] = mask_embed(query) . mask_features

Rein's change (rein-method.md): the Rein queries q in R^{m x Q} (image independent) are the
query *positional* embedding of every decoder layer, and Linear(Q, D)(q) is the initial
query *content*. Without Rein (frozen / other PEFT baselines) the head learns both as
embeddings, as Mask2Former does.

Two pixel decoders:
- "msdeform": Mask2Former's: a 6-layer transformer encoder of multi-scale deformable
  attention (Zhu et al., Deformable DETR) over strides 8/16/32, then an FPN step to stride 4.
  The deformable sampling is written with ``F.grid_sample`` (no custom CUDA kernel).
- "fpn": a light feature pyramid (lateral 1x1 + top-down sum + 3x3), much cheaper on a CPU.

Shapes in docstrings: B batch, m queries, K classes, D hidden size, Hi x Wi level sizes.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from reinlite.config import HeadConfig, ReinConfig
from reinlite.models.pixel_decoder import (PIXEL_DECODERS, FPNPixelDecoder, MSDeformAttn, MSDeformAttnPixelDecoder,
                                         ms_deform_attn_sample, sine_positional_encoding)

__all__ = [
    "sine_positional_encoding",
    "ms_deform_attn_sample",
    "MSDeformAttn",
    "MSDeformAttnPixelDecoder",
    "FPNPixelDecoder",
    "MaskedAttentionDecoderLayer",
    "PIXEL_DECODERS",
    "Mask2FormerHead",
    "semantic_inference",
]


# ---------------------------------------------------------------------------- transformer decoder with masked attention
class MaskedAttentionDecoderLayer(nn.Module):
    """One Mask2Former decoder layer (post-norm), queries x [B, m, D]:

        x = LN(x + CrossAttn(q = x + q_pos, k = mem + mem_pos, v = mem, mask))
        x = LN(x + SelfAttn(q = k = x + q_pos, v = x))
        x = LN(x + FFN(x))

    ``mask`` [B*heads, m, HW] is True where a query may *not* look: outside its own
    predicted mask from the previous layer (masked attention).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, q_pos, mem, mem_pos, attn_mask=None):
        a = self.cross_attn(x + q_pos, mem + mem_pos, mem, attn_mask=attn_mask,
                            need_weights=False)[0]
        x = self.norm1(x + a)
        q = x + q_pos
        x = self.norm2(x + self.self_attn(q, q, x, need_weights=False)[0])
        return self.norm3(x + self.ffn(x))


class _MLP(nn.Sequential):
    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int, num_layers: int = 3):
        layers = []
        dims = [dim_in] + [dim_hidden] * (num_layers - 1) + [dim_out]
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Mask2FormerHead(nn.Module):
    """Mask2Former decode head, optionally fed by Rein queries.

    Args (defaults: :class:`reinlite.config.HeadConfig`'s, the release's; or :meth:`from_config`):
        in_channels: channels of the 4 input maps (an int: the same for all, a ViT's C).
        num_classes: K (required: load_config derives it from data.classes).  num_queries: m;
            with Rein queries, the Rein token count.
        query_source: "rein" (forward needs Rein queries [m, Q]) or "learned" (baselines:
            learned query content and positional embeddings, forward(feats, None)).
        query_dim: Q, the Rein query size.
        hidden_dim, num_layers, num_heads, ffn_dim: the transformer decoder's D, L, heads, FFN.
        mask_dim: channels of mask_features and of the mask embedding.
        pixel_decoder: a name in :data:`PIXEL_DECODERS` ("msdeform", the release's, with
            ``pixel_decoder_layers`` encoder layers of FFN ``pixel_decoder_ffn``; or "fpn").
    """

    def __init__(self, in_channels: int | Sequence[int], num_classes: int = HeadConfig.num_classes,
                 num_queries: int = ReinConfig.num_tokens, query_source: str = "rein",
                 query_dim: int = ReinConfig.query_dim, hidden_dim: int = HeadConfig.hidden_dim,
                 num_layers: int = HeadConfig.num_layers, num_heads: int = HeadConfig.num_heads,
                 ffn_dim: int = HeadConfig.ffn_dim, mask_dim: int = HeadConfig.mask_dim,
                 pixel_decoder: str = HeadConfig.pixel_decoder,
                 pixel_decoder_layers: int = HeadConfig.pixel_decoder_layers,
                 pixel_decoder_ffn: int = HeadConfig.pixel_decoder_ffn,
                 pixel_decoder_points: int = HeadConfig.pixel_decoder_points):
        super().__init__()
        if isinstance(in_channels, int):
            in_channels = [in_channels] * 4
        if len(in_channels) != 4:
            raise ValueError(f"expected 4 input channel counts, got {list(in_channels)}")
        if query_source not in ("rein", "learned"):
            raise ValueError(f"query_source must be 'rein' or 'learned', got {query_source!r}")
        self.num_classes, self.num_queries, self.query_source = num_classes, num_queries, query_source
        self.num_heads, self.num_layers = num_heads, num_layers
        if pixel_decoder not in PIXEL_DECODERS:
            raise ValueError(f"pixel_decoder must be one of {', '.join(PIXEL_DECODERS)}, got {pixel_decoder!r}")
        if not num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be the dataset's class count (>= 1), got {num_classes!r}")
        self.pixel_decoder = PIXEL_DECODERS[pixel_decoder](
            in_channels, hidden_dim, mask_dim, pixel_decoder_layers, num_heads, pixel_decoder_points,
            pixel_decoder_ffn)
        self.num_levels = 3
        self.level_embed = nn.Embedding(self.num_levels, hidden_dim)
        if query_source == "rein":
            # initial content = Linear(Q, D)(queries); positional = queries (projected only
            # when Q != D, which the release never does)
            self.query_feat = nn.Linear(query_dim, hidden_dim)
            self.query_pos = nn.Identity() if query_dim == hidden_dim else nn.Linear(query_dim, hidden_dim)
        else:
            self.query_feat = nn.Embedding(num_queries, hidden_dim)
            self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.layers = nn.ModuleList(
            MaskedAttentionDecoderLayer(hidden_dim, num_heads, ffn_dim) for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = _MLP(hidden_dim, hidden_dim, mask_dim, 3)
        for layer in self.layers:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        self._pos_cache: dict = {}  # (shape, dtype, device) -> sine position encoding

    @classmethod
    def from_config(cls, cfg: HeadConfig, in_channels: int | Sequence[int], num_queries: int,
                    query_source: str = "rein", query_dim: int = ReinConfig.query_dim) -> "Mask2FormerHead":
        """The head of ``cfg`` (``model.head``; its num_queries is derived by the caller)."""
        options = {**dataclasses.asdict(cfg), "num_queries": num_queries}
        return cls(in_channels, query_source=query_source, query_dim=query_dim, **options)

    def _predict(self, x, mask_features, attn_size):
        """x [B, m, D] -> class logits [B, m, K+1], mask logits [B, m, H/4, W/4] and the
        attention mask for the next layer at ``attn_size`` (h, w): [B*heads, m, h*w], True
        (blocked) where the query's predicted mask is empty (sigmoid < 0.5), except for a
        query whose mask is empty everywhere (it may look everywhere: no NaNs)."""
        y = self.decoder_norm(x)
        logits = self.class_embed(y)
        b, m = y.shape[:2]
        masks = torch.matmul(self.mask_embed(y), mask_features.flatten(2)).view(
            b, m, *mask_features.shape[-2:])  # einsum("bqc,bchw->bqhw")
        with torch.no_grad():
            a = F.interpolate(masks.float(), size=attn_size, mode="bilinear", align_corners=False)
            blocked = a.sigmoid().flatten(2) < 0.5  # [B, m, hw], True = blocked
            blocked &= ~blocked.all(-1, keepdim=True)
            attn = blocked.unsqueeze(1).expand(-1, self.num_heads, -1, -1).reshape(
                b * self.num_heads, m, -1)
        return logits, masks, attn

    def _memory_pos(self, x: torch.Tensor) -> torch.Tensor:
        """The sine position encoding of a level [B, C, h, w] as [1, h*w, C], computed once
        per (shape, dtype, device) and kept (it depends on nothing else)."""
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        pos = self._pos_cache.get(key)
        if pos is None:
            with torch.inference_mode(False), torch.no_grad():  # usable in and out of inference mode
                pos = sine_positional_encoding(x[:1]).flatten(2).transpose(1, 2)
            self._pos_cache[key] = pos
        return pos

    def forward(self, feats: Sequence[torch.Tensor], queries: Optional[torch.Tensor] = None) -> dict:
        """feats: 4 maps [B, C, H/4, W/4], [B, C, H/8, W/8], [B, C, H/16, W/16], [B, C, H/32, W/32].
        queries: Rein queries [m, Q] (query_source="rein") or None ("learned").

        Returns dict(pred_logits [B, m, K+1], pred_masks [B, m, H/4, W/4],
        aux_outputs = [dict(pred_logits, pred_masks)] * num_layers: the predictions of the
        initial queries and of every layer but the last, for deep supervision).
        """
        if self.query_source == "rein":
            if queries is None:
                raise ValueError("this head was built with query_source='rein' and needs the "
                                 "Rein queries [m, Q]; build it with query_source='learned' "
                                 "for a backbone without Rein")
            if queries.shape[0] != self.num_queries:
                raise ValueError(f"got {queries.shape[0]} Rein queries, the head expects "
                                 f"num_queries={self.num_queries}")
        elif queries is not None:
            raise ValueError("this head was built with query_source='learned'; pass queries=None")
        if len(feats) != 4:
            raise ValueError(f"the head needs 4 feature maps (strides 4, 8, 16, 32), got {len(feats)}")
        mask_features, ms = self.pixel_decoder(feats)
        b = mask_features.shape[0]
        mems, mem_pos, sizes = [], [], []
        for lvl, x in enumerate(ms):  # coarse -> fine
            sizes.append(tuple(x.shape[-2:]))
            mem_pos.append(self._memory_pos(x))
            mems.append(x.flatten(2).transpose(1, 2) + self.level_embed.weight[lvl].to(x.dtype))
        if self.query_source == "rein":
            q = queries.to(mask_features.dtype)
            content = self.query_feat(q).unsqueeze(0).expand(b, -1, -1)
            q_pos = self.query_pos(q).unsqueeze(0).expand(b, -1, -1)
        else:
            content = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)
            q_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        preds = []
        logits, masks, attn = self._predict(content, mask_features, sizes[0])
        preds.append((logits, masks))
        x = content
        for i, layer in enumerate(self.layers):
            lvl = i % self.num_levels
            x = layer(x, q_pos, mems[lvl], mem_pos[lvl], attn_mask=attn)
            logits, masks, attn = self._predict(x, mask_features, sizes[(i + 1) % self.num_levels])
            preds.append((logits, masks))
        return dict(pred_logits=preds[-1][0], pred_masks=preds[-1][1],
                    aux_outputs=[dict(pred_logits=l, pred_masks=m) for l, m in preds[:-1]])

    @torch.no_grad()
    def predict(self, feats, queries=None, size=None) -> torch.Tensor:
        """Semantic scores [B, K, H, W] (``size`` = (H, W), default H/4 x W/4)."""
        out = self.forward(feats, queries)
        return semantic_inference(out["pred_logits"], out["pred_masks"], size)


def semantic_inference(pred_logits: torch.Tensor, pred_masks: torch.Tensor,
                       size: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """Per-pixel class scores from mask classification.

    pred_logits [B, m, K+1], pred_masks [B, m, h, w] (logits), size: resize masks to (H, W)
    first (bilinear) if given. Returns [B, K, H, W]:
        score[b, k, y, x] = sum_q softmax(pred_logits[b, q])[k] * sigmoid(pred_masks[b, q, y, x])
    (the "no object" probability, the last column, is dropped after the softmax).
    """
    if size is not None and tuple(pred_masks.shape[-2:]) != tuple(size):
        pred_masks = F.interpolate(pred_masks, size=size, mode="bilinear", align_corners=False)
    cls = pred_logits.float().softmax(-1)[..., :-1]
    return torch.einsum("bqk,bqhw->bkhw", cls, pred_masks.float().sigmoid())
