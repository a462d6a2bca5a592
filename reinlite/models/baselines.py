"""The baselines Rein is compared with, behind Rein's interface: frozen, full, LoRA, VPT, AdaptFormer.

Every method returns a :class:`ReinBackbone`-like object: ``forward(images) -> (feats,
queries)`` with the same 4 maps at strides 4/8/16/32, ``trainable_parameters()``,
``embed_dim``, ``patch_size``, ``vit``. Only Rein makes queries; the others return
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
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinlite.models.backbone import STRIDES, ReinBackbone, _default_out_indices, build_backbone, create_vit

__all__ = [
    "METHODS",
    "LoRA",
    "VisualPrompts",
    "AdaptFormerAdapters",
    "PeftBackbone",
    "build_peft_backbone",
    "peft_parameter_count",
]

METHODS = ("rein", "frozen", "full", "lora", "vpt", "adaptformer")


# ----------------------------------------------------------------------------- the modules
class LoRA(nn.Module):
    """Low-rank updates for L linear layers of the same shape (in -> out).

    ``lora_a`` [L, r, in], ``lora_b`` [L, out, r]; delta(x, i) = (alpha / r) x A_i^T B_i^T.
    """

    def __init__(self, num_layers: int, in_features: int, out_features: int, rank: int = 8,
                 alpha: Optional[float] = None) -> None:
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

    def __init__(self, num_layers: int, embed_dim: int, num_prompts: int = 150, patch_size: int = 16) -> None:
        super().__init__()
        self.num_layers, self.num_prompts = num_layers, num_prompts
        self.prompts = nn.Parameter(torch.empty(num_layers, num_prompts, embed_dim))
        bound = math.sqrt(6.0 / (3 * patch_size * patch_size + embed_dim))
        nn.init.uniform_(self.prompts, -bound, bound)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, num_prompts={self.num_prompts}"


class AdaptFormerAdapters(nn.Module):
    """One bottleneck adapter per block: s * up(relu(down(x))), s fixed (0.1)."""

    def __init__(self, num_layers: int, embed_dim: int, bottleneck: int = 64, scale: float = 0.1) -> None:
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


# ----------------------------------------------------------------------------- the backbone
class PeftBackbone(ReinBackbone):
    """A timm ViT adapted by one of the baselines; the interface of :class:`ReinBackbone`.

    forward(images [B, 3, H, W]) -> (feats: 4 maps [B, C, H/s, W/s], queries: None).
    ``peft`` holds the method's parameters (None for "frozen" and "full"). For "full" every
    ViT parameter trains and ``.train()`` puts the ViT in train mode; for the others the ViT
    is frozen and stays in eval mode.
    """

    def __init__(self, vit: nn.Module, out_indices: Sequence[int], method: str,
                 strides: Sequence[int] = STRIDES, *, rank: int = 8, alpha: Optional[float] = None,
                 targets: Sequence[str] = ("qkv",), num_prompts: int = 150, bottleneck: int = 64,
                 adapter_scale: float = 0.1) -> None:
        if method not in METHODS or method == "rein":
            raise ValueError(f"method must be one of {METHODS[1:]} here (use build_backbone for rein), got {method!r}")
        super().__init__(vit, out_indices, rein=None, strides=strides)  # freezes the ViT
        self.method = method
        depth, c = len(vit.blocks), self.embed_dim
        self.peft: Optional[nn.Module] = None
        self._peft_hooks = []
        blocks = list(vit.blocks)
        if method == "full":
            for p in self.vit.parameters():
                p.requires_grad_(True)
        elif method == "lora":
            self.peft = nn.ModuleDict()
            for target in targets:
                first = _attn_linear(blocks[0], target)
                self.peft[target] = LoRA(depth, first.in_features, first.out_features, rank, alpha)
                for i, blk in enumerate(blocks):
                    lin = _attn_linear(blk, target)
                    self._peft_hooks.append(lin.register_forward_hook(partial(self._lora_hook, target, i)))
        elif method == "vpt":
            self.peft = VisualPrompts(depth, c, num_prompts, self.patch_size)
            for i, blk in enumerate(blocks):
                self._peft_hooks.append(blk.register_forward_pre_hook(partial(self._vpt_insert, i)))
                self._peft_hooks.append(blk.register_forward_hook(self._vpt_remove))
        elif method == "adaptformer":
            self.peft = AdaptFormerAdapters(depth, c, bottleneck, adapter_scale)
            self._adapter_inputs: dict[int, Tensor] = {}
            for i, blk in enumerate(blocks):
                if not hasattr(blk, "norm2"):
                    raise ValueError(f"AdaptFormer needs blocks with a 'norm2' (the MLP's input norm); {type(blk).__name__} has none")
                self._peft_hooks.append(blk.norm2.register_forward_pre_hook(partial(self._adapter_keep, i)))
                self._peft_hooks.append(blk.register_forward_hook(partial(self._adapter_add, i)))

    # --- hooks
    def _lora_hook(self, target: str, layer: int, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return output + self.peft[target].delta(inputs[0], layer)

    def _vpt_insert(self, layer: int, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if x.ndim != 3:
            raise ValueError("VPT needs token sequences [B, N, C]; this ViT's blocks work on maps")
        k = self.num_prefix_tokens
        prompts = self.peft.prompts[layer].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return (torch.cat([x[:, :k], prompts, x[:, k:]], dim=1),) + tuple(args[1:])

    def _vpt_remove(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        k, p = self.num_prefix_tokens, self.peft.num_prompts
        return torch.cat([output[:, :k], output[:, k + p:]], dim=1)

    def _adapter_keep(self, layer: int, module: nn.Module, args: tuple) -> None:
        self._adapter_inputs[layer] = args[0]  # x' = x + attn(norm1(x)), the MLP branch's input

    def _adapter_add(self, layer: int, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        x = self._adapter_inputs.pop(layer)
        return output + self.peft(x, layer)

    # --- modes
    def train(self, mode: bool = True) -> "PeftBackbone":
        nn.Module.train(self, mode)
        if getattr(self, "method", None) != "full":
            self.vit.eval()  # frozen: drop-path and dropout stay off
        return self

    def extra_repr(self) -> str:
        return f"method={self.method!r}"


def _attn_linear(block: nn.Module, target: str) -> nn.Linear:
    attn = getattr(block, "attn", None)
    lin = getattr(attn, target, None) if attn is not None else None
    if not isinstance(lin, nn.Linear):
        raise ValueError(f"LoRA target 'attn.{target}' is not an nn.Linear in {type(block).__name__}")
    return lin


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
) -> ReinBackbone:
    """Build a ViT adapted by ``method`` (one of :data:`METHODS`).

    "rein": ``method_kwargs`` are :class:`reinlite.Rein`'s keywords (its defaults) and this is
    :func:`reinlite.build_backbone`. "lora": rank=8, alpha=None (= rank),
    targets=("qkv",); "vpt": num_prompts=150; "adaptformer": bottleneck=64, adapter_scale=0.1.
    ``model_kwargs`` go to the timm constructor (e.g. depth). The result has ``.method``.

    Example::

        bb = build_peft_backbone("lora", "vit_large_patch14_dinov2", img_size=512, patch_size=16, rank=8)
        feats, queries = bb(images)   # queries is None: use Mask2FormerHead(query_source="learned")
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    model_kwargs = dict(model_kwargs or {})
    if method == "rein":
        bb = build_backbone(name, pretrained=pretrained, img_size=img_size, patch_size=patch_size,
                            out_indices=out_indices, rein=dict(method_kwargs), strides=strides,
                            **model_kwargs)
        bb.method = "rein"
        return bb
    vit = create_vit(name, pretrained=pretrained, img_size=img_size, patch_size=patch_size, **model_kwargs)
    indices = tuple(out_indices) if out_indices is not None else _default_out_indices(len(vit.blocks))
    return PeftBackbone(vit, indices, method, strides, **method_kwargs)


def peft_parameter_count(bb: nn.Module) -> int:
    """Trainable parameters of a backbone built here (what the paper's tables count)."""
    return sum(p.numel() for p in bb.trainable_parameters())
