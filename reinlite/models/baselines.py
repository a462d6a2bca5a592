"""The baselines Rein is compared with, behind Rein's interface: frozen, full, LoRA, VPT, AdaptFormer.

:data:`METHODS` is the registry: a method's name -> a small builder that turns a frozen timm
ViT into its backbone, a :class:`reinlite.models.backbone.ViTBackbone` (``forward(images) ->
(feats, queries)`` with the same 4 maps at strides 4/8/16/32, ``trainable_parameters()``,
``embed_dim``, ``patch_size``, ``vit``). Adding a baseline is one entry in :data:`ADAPTERS`
(and its typed options in reinlite.config). Only Rein makes queries; the others return
``queries=None`` and the head learns its own (``Mask2FormerHead(query_source="learned")``).

    method       what trains in the backbone                  DINOv2-L count (paper, Table 3)
    "rein"       Rein (tokens, shared MLPs, queries)           2,990,081   (m=100, r=16)
    "frozen"     nothing (head only)                           0
    "full"       every ViT parameter (ViT in train mode)       304,198,656 (304.20M at 512/16)
    "lora"       low-rank B A added to every attn.qkv          786,432     (r=8)
    "vpt"        deep prompts, a fresh set before every block  3,686,400   (150 per layer)
    "adaptformer" a bottleneck adapter parallel to every MLP   3,171,840   (bottleneck 64)

The ViT itself is never edited: LoRA, VPT and AdaptFormer are attached with forward hooks
on timm's modules (like Rein), so the ViT's state dict keeps timm's names and the pretrained
weights load exactly as for Rein; the method's own parameters live in ``backbone.peft``.

    LoRA (Hu et al. 2021), on qkv = Linear(c, 3c) of block i:
        qkv(x) = x W^T + b + (alpha / r) * x A_i^T B_i^T,   A_i [r, c], B_i [3c, r]
        A_i: Kaiming-uniform (PyTorch's Linear init), B_i = 0  -> identity at init
        count = L * r * (c + 3c)              DINOv2-L, r=8: 24 * 8 * 4096 = 786,432
    VPT-deep (Jia et al. 2022): before block i, p prompts P_i [p, c] are inserted after the
        prefix tokens (cls, registers); after block i their rows are dropped, so block i+1
        sees fresh prompts P_{i+1} (the same as "replacing" the prompt outputs).
        P_i ~ U(-v, v), v = sqrt(6 / (3 patch^2 + c)) (VPT's Xavier-style bound)
        count = L * p * c                     DINOv2-L, p=150: 24 * 150 * 1024 = 3,686,400
    AdaptFormer (Chen et al. 2022), "parallel" option, for block i with x' = x + attn(norm1 x):
        block(x) = x' + ls2(mlp(norm2 x')) + s * up(relu(down(x')))
        down = Linear(c, d), up = Linear(d, c) (both with bias), s = 0.1 a *fixed* scalar,
        no adapter LayerNorm; down Kaiming-uniform, up = 0 and both biases 0 -> identity at init
        count = L * (c*d + d + d*c + c)       DINOv2-L, d=64: 24 * 132,160 = 3,171,840
        (a learnable s would add 24, an adapter LayerNorm 24 * 2c: the paper's 3.17M has neither)
"""
from __future__ import annotations

import math
import os
from functools import partial
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinlite.config import AdaptFormerConfig, LoraConfig, ReinConfig, VptConfig
from reinlite.models.backbone import STRIDES, ReinBackbone, ViTBackbone, _default_out_indices, create_vit, rein_for
from reinlite.models.rein import token_init_bound

__all__ = [
    "METHODS",
    "ADAPTERS",
    "LoRA",
    "VisualPrompts",
    "AdaptFormerAdapters",
    "PeftBackbone",
    "build_peft_backbone",
    "peft_parameter_count",
]


# ----------------------------------------------------------------------------- the modules
class LoRA(nn.Module):
    """Low-rank updates for L linear layers of the same shape (in -> out).

    ``lora_a`` [L, r, in], ``lora_b`` [L, out, r]; delta(x, i) = (alpha / r) x A_i^T B_i^T.
    """

    def __init__(self, num_layers: int, in_features: int, out_features: int,
                 rank: int = LoraConfig.rank, alpha: Optional[float] = LoraConfig.alpha) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.num_layers, self.rank = num_layers, rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scaling = self.alpha / rank
        self.lora_a = nn.Parameter(torch.empty(num_layers, rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(num_layers, out_features, rank))
        for i in range(num_layers):  # nn.Linear's init for A (as LoRA's reference code)
            nn.init.kaiming_uniform_(self.lora_a[i], a=math.sqrt(5))

    def delta(self, x: Tensor, layer: int) -> Tensor:
        """x [..., in] -> [..., out]."""
        return (x @ self.lora_a[layer].t()) @ self.lora_b[layer].t() * self.scaling

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, rank={self.rank}, alpha={self.alpha}"


class VisualPrompts(nn.Module):
    """VPT-deep prompts ``prompts`` [L, p, c], one fresh set per block."""

    def __init__(self, num_layers: int, embed_dim: int, num_prompts: int = VptConfig.num_prompts,
                 patch_size: int = ReinConfig.patch_size) -> None:
        super().__init__()
        self.num_layers, self.num_prompts = num_layers, num_prompts
        self.prompts = nn.Parameter(torch.empty(num_layers, num_prompts, embed_dim))
        bound = token_init_bound(patch_size, embed_dim)  # the release's bound for full-rank tokens
        nn.init.uniform_(self.prompts, -bound, bound)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, num_prompts={self.num_prompts}"


class AdaptFormerAdapters(nn.Module):
    """One bottleneck adapter per block: s * up(relu(down(x))), s fixed (0.1)."""

    def __init__(self, num_layers: int, embed_dim: int, bottleneck: int = AdaptFormerConfig.bottleneck,
                 scale: float = AdaptFormerConfig.adapter_scale) -> None:
        super().__init__()
        self.scale = float(scale)
        self.down = nn.ModuleList(nn.Linear(embed_dim, bottleneck) for _ in range(num_layers))
        self.up = nn.ModuleList(nn.Linear(bottleneck, embed_dim) for _ in range(num_layers))
        for down, up in zip(self.down, self.up):  # AdaptFormer's "lora" init: identity at start
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
            nn.init.zeros_(down.bias)
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)

    def forward(self, x: Tensor, layer: int) -> Tensor:
        return self.up[layer](F.relu(self.down[layer](x))) * self.scale


# ----------------------------------------------------------------------------- the adapters
# Each attaches one method to a frozen ViTBackbone (forward hooks on timm's modules) and returns
# the method's parameters as one module (None when it adds none).
def _frozen(bb: ViTBackbone) -> None:
    return None


def _full(bb: ViTBackbone) -> None:
    for p in bb.vit.parameters():
        p.requires_grad_(True)
    bb.vit_trains = True
    return None


def _lora(bb: ViTBackbone, rank: int = LoraConfig.rank, alpha: Optional[float] = LoraConfig.alpha,
          targets: Sequence[str] = tuple(LoraConfig().targets)) -> nn.ModuleDict:
    """qkv(x) + (alpha / r) x A_i^T B_i^T on ``attn.<target>`` of every block i."""
    blocks, lora = list(bb.vit.blocks), nn.ModuleDict()
    for target in targets:
        first = _attn_linear(blocks[0], target)
        lora[target] = LoRA(len(blocks), first.in_features, first.out_features, rank, alpha)
        for i, blk in enumerate(blocks):
            _attn_linear(blk, target).register_forward_hook(partial(_lora_add, lora[target], i))
    return lora


def _lora_add(lora: LoRA, layer: int, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
    return output + lora.delta(inputs[0], layer)


def _vpt(bb: ViTBackbone, num_prompts: int = VptConfig.num_prompts) -> VisualPrompts:
    """Fresh prompts inserted after the prefix tokens before every block, dropped after it."""
    prompts = VisualPrompts(len(bb.vit.blocks), bb.embed_dim, num_prompts, bb.patch_size)
    k = bb.num_prefix_tokens
    for i, blk in enumerate(bb.vit.blocks):
        blk.register_forward_pre_hook(partial(_vpt_insert, prompts, i, k))
        blk.register_forward_hook(partial(_vpt_remove, prompts, k))
    return prompts


def _vpt_insert(prompts: VisualPrompts, layer: int, k: int, module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    if x.ndim != 3:
        raise ValueError("VPT needs token sequences [B, N, C]; this ViT's blocks work on maps")
    p = prompts.prompts[layer].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
    return (torch.cat([x[:, :k], p, x[:, k:]], dim=1),) + tuple(args[1:])


def _vpt_remove(prompts: VisualPrompts, k: int, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
    return torch.cat([output[:, :k], output[:, k + prompts.num_prompts:]], dim=1)


def _adaptformer(bb: ViTBackbone, bottleneck: int = AdaptFormerConfig.bottleneck,
                 adapter_scale: float = AdaptFormerConfig.adapter_scale) -> AdaptFormerAdapters:
    """block(x) = x' + ls2(mlp(norm2 x')) + s * up(relu(down(x'))), x' the MLP branch's input."""
    adapters = AdaptFormerAdapters(len(bb.vit.blocks), bb.embed_dim, bottleneck, adapter_scale)
    kept: dict[int, Tensor] = {}  # block -> x' (= x + attn(norm1 x), what norm2 receives)
    for i, blk in enumerate(bb.vit.blocks):
        if not hasattr(blk, "norm2"):
            raise ValueError(f"AdaptFormer needs blocks with a 'norm2' (the MLP's input norm); {type(blk).__name__} has none")
        blk.norm2.register_forward_pre_hook(partial(_adapter_keep, kept, i))
        blk.register_forward_hook(partial(_adapter_add, adapters, kept, i))
    return adapters


def _adapter_keep(kept: dict, layer: int, module: nn.Module, args: tuple) -> None:
    kept[layer] = args[0]


def _adapter_add(adapters: AdaptFormerAdapters, kept: dict, layer: int, module: nn.Module, inputs: Any,
                 output: Tensor) -> Tensor:
    return output + adapters(kept.pop(layer), layer)


def _attn_linear(block: nn.Module, target: str) -> nn.Linear:
    attn = getattr(block, "attn", None)
    lin = getattr(attn, target, None) if attn is not None else None
    if not isinstance(lin, nn.Linear):
        raise ValueError(f"LoRA target 'attn.{target}' is not an nn.Linear in {type(block).__name__}")
    return lin


# The baselines by name: (frozen backbone, **the method's options) -> its parameters or None.
ADAPTERS: dict[str, Callable[..., Optional[nn.Module]]] = {
    "frozen": _frozen, "full": _full, "lora": _lora, "vpt": _vpt, "adaptformer": _adaptformer,
}


# ----------------------------------------------------------------------------- the backbones
class PeftBackbone(ViTBackbone):
    """A frozen timm ViT adapted by one of the baselines (:data:`ADAPTERS`).

    forward(images [B, 3, H, W]) -> (feats: 4 maps [B, C, H/s, W/s], queries: None).
    ``peft`` holds the method's parameters (None for "frozen" and "full"). For "full" every
    ViT parameter trains and ``.train()`` puts the ViT in train mode; for the others the ViT
    is frozen and stays in eval mode. ``options`` are the method's (reinlite.config's
    ``model.lora`` / ``model.vpt`` / ``model.adaptformer``).
    """

    def __init__(self, vit: nn.Module, out_indices: Sequence[int], method: str,
                 strides: Sequence[int] = STRIDES, **options: Any) -> None:
        if method not in ADAPTERS:
            raise ValueError(f"method must be one of {', '.join(ADAPTERS)} here (rein: build_backbone), got {method!r}")
        super().__init__(vit, out_indices, strides)  # freezes the ViT
        self.method = method
        self.peft: Optional[nn.Module] = ADAPTERS[method](self, **options)

    def extra_repr(self) -> str:
        return f"method={self.method!r}"


def _rein(vit: nn.Module, out_indices: Sequence[int], strides: Sequence[int] = STRIDES,
          **options: Any) -> ReinBackbone:
    return ReinBackbone(vit, out_indices, rein_for(vit, options), strides)


# Every method by name: (vit, out_indices, strides, **options) -> its backbone.
METHODS: dict[str, Callable[..., ViTBackbone]] = {
    "rein": _rein, **{name: partial(PeftBackbone, method=name) for name in ADAPTERS}}


def build_peft_backbone(
    method: str,
    name: str,
    pretrained: bool | str | os.PathLike = False,
    img_size: Optional[int | Sequence[int]] = None,
    patch_size: Optional[int] = None,
    out_indices: Optional[Sequence[int]] = None,
    strides: Sequence[int] = STRIDES,
    model_kwargs: Optional[dict[str, Any]] = None,
    **method_kwargs: Any,
) -> ViTBackbone:
    """Build the timm ViT ``name`` adapted by ``method`` (a name in :data:`METHODS`).

    ``method_kwargs`` are the method's options: :class:`reinlite.Rein`'s keywords for "rein"
    (as :func:`reinlite.build_backbone`), else those of reinlite.config's ``LoraConfig``,
    ``VptConfig``, ``AdaptFormerConfig`` (their defaults). ``model_kwargs`` go to the timm
    constructor (e.g. depth). The result has ``.method``.

    Example::

        bb = build_peft_backbone("lora", "vit_large_patch14_dinov2", img_size=512, patch_size=16, rank=8)
        feats, queries = bb(images)   # queries is None: use Mask2FormerHead(query_source="learned")
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    vit = create_vit(name, pretrained=pretrained, img_size=img_size, patch_size=patch_size,
                     **dict(model_kwargs or {}))
    indices = tuple(out_indices) if out_indices is not None else _default_out_indices(len(vit.blocks))
    return METHODS[method](vit, indices, strides=strides, **method_kwargs)


def peft_parameter_count(bb: nn.Module) -> int:
    """Trainable parameters of a backbone built here (what the paper's tables count)."""
    return sum(p.numel() for p in bb.trainable_parameters())
