"""A frozen timm ViT with a Rein after every block, returning multi-scale maps and queries.

    images [B, 3, H, W]
      -> patch embed (+ cls / register tokens, position embedding)
      -> block_0 -> Rein(layer 0) -> block_1 -> Rein(layer 1) -> ... (frozen blocks, trainable Rein)
      -> patch tokens after blocks ``out_indices`` reshaped to [B, C, H/p, W/p]
      -> resized by p/4, p/8, p/16, p/32 to strides 4, 8, 16, 32 (no final norm)

The Rein is attached with forward hooks on ``vit.blocks[i]``, so every timm ViT with a
``blocks`` list and ``forward_intermediates`` works unchanged: DINOv2 (with or without
registers), EVA02, CLIP ViT, DeiT / plain ViT and SAM's ViT (whose blocks work on
[B, H, W, C] maps; the hook flattens them for the Rein).

Weights: ``pretrained=False`` (random), ``True`` (timm's own loader; needs internet, or
the shipped offline weights for ``"course_vit"``) or a path to a local file in timm's or
the DINOv2 authors' key names. Changing the patch size resizes the patch kernel bicubically
(as the release does for DINOv2 14 -> 16) and the position embedding to the new grid.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinlite.models.rein import Rein
from reinlite import weights
from reinlite.weights import (COURSE_BACKBONES, COURSE_VIT, COURSE_VIT_MAE,
                              adapt_state_dict, check_keys, course_vit_config, course_vit_weights_path,
                              load_state_dict_file)

__all__ = [
    "COURSE_VIT",
    "COURSE_VIT_MAE",
    "COURSE_BACKBONES",
    "ViTBackbone",
    "ReinBackbone",
    "rein_for",
    "build_backbone",
    "create_vit",
    "adapt_state_dict",
    "parameter_table",
    "count_parameters",
]

STRIDES = (4, 8, 16, 32)


def _timm():
    # timm imports torchvision; import lazily so `import reinlite` stays light.
    import timm

    return timm


def _model_kwargs(img_size, patch_size) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if img_size is not None:
        kwargs["img_size"] = tuple(img_size) if isinstance(img_size, (list, tuple)) else img_size
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    return kwargs


def create_vit(
    name: str,
    pretrained: bool | str | os.PathLike = False,
    img_size: Optional[int | Sequence[int]] = None,
    patch_size: Optional[int] = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Create the timm ViT ``name`` at (img_size, patch_size) with weights adapted to it.

    ``name`` is any timm ViT name or a course backbone (``"course_vit"``, ``"course_vit_mae"``).
    ``pretrained`` is False, True (timm's hub loader; for a course backbone the weights shipped
    in ``reinlite/weights``) or a local file (safetensors or .pth, timm or DINOv2-release key
    names). All course backbones share one shape, so a random one (``pretrained=False``) is
    built even where only ``course_vit``'s record ships.
    """
    timm = _timm()
    old_grid = None
    if name in COURSE_BACKBONES:
        from timm.models.vision_transformer import VisionTransformer

        shape_of = name if pretrained is True or weights.shipped(name) else COURSE_VIT
        config = course_vit_config(shape_of)
        base = dict(config["timm_kwargs"])
        src_img = base.get("img_size", 224)
        src_img = tuple(src_img) if isinstance(src_img, (list, tuple)) else (src_img, src_img)
        old_grid = (src_img[0] // base["patch_size"], src_img[1] // base["patch_size"])
        base.update(_model_kwargs(img_size, patch_size))
        base.update(model_kwargs)
        base.setdefault("dynamic_img_size", True)
        model = VisionTransformer(**base)
        if pretrained is True:
            pretrained = course_vit_weights_path(name=name)
    else:
        kwargs = dict(num_classes=0, **_model_kwargs(img_size, patch_size), **model_kwargs)
        kwargs.setdefault("dynamic_img_size", True)
        try:
            model = timm.create_model(name, pretrained=False, **kwargs)
        except TypeError:  # families without dynamic image size (e.g. SAM's ViT)
            kwargs.pop("dynamic_img_size")
            model = timm.create_model(name, pretrained=False, **kwargs)
        if pretrained is True:
            try:
                source = timm.create_model(name, pretrained=True, num_classes=0)
            except Exception as err:  # offline, hub errors, missing weights
                raise RuntimeError(
                    f"could not download pretrained weights for '{name}' ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}). Offline? Download the weights "
                    f"elsewhere and pass pretrained='/path/to/weights.safetensors' (or .pth)."
                ) from err
            state = source.state_dict()
            grid = getattr(source.patch_embed, "grid_size", None)
            old_grid = tuple(grid) if grid is not None else None
            state = adapt_state_dict(state, model, old_grid)
            check_keys(model, state, f"timm weights of {name}")
            model.load_state_dict(state)
            return model
    if pretrained not in (False, None):
        path = Path(pretrained)
        state = adapt_state_dict(load_state_dict_file(path), model, old_grid)
        check_keys(model, state, str(path))
        model.load_state_dict(state)
    return model


# ----------------------------------------------------------------------------- the backbones
class ViTBackbone(nn.Module):
    """A frozen timm ViT read out as multi-scale maps; the base of every method's backbone.

    forward(images [B, 3, H, W]) -> (feats, queries):
        feats: list of len(out_indices) maps [B, C, H/s, W/s] for s in ``strides`` (4, 8, 16, 32);
        queries: :meth:`queries` (None here: the head learns its own).
    Every ViT parameter is frozen and the ViT stays in eval mode after ``.train()``, unless a
    method sets ``vit_trains`` (full fine-tuning). A method adds its parameters and forward
    hooks on ``vit.blocks`` (the ViT itself is never edited, so its state dict keeps timm's names).
    """

    vit_trains = False  # full fine-tuning: the ViT trains and follows .train() / .eval()

    def __init__(self, vit: nn.Module, out_indices: Sequence[int], strides: Sequence[int] = STRIDES) -> None:
        super().__init__()
        depth = len(vit.blocks)
        if len(out_indices) != len(strides):
            raise ValueError(f"out_indices {tuple(out_indices)} and strides {tuple(strides)} differ in length")
        for index in out_indices:
            if not 0 <= index < depth:
                raise ValueError(f"out index {index} is out of range for a ViT with {depth} blocks")
        self.vit = vit
        self.out_indices = tuple(int(i) for i in out_indices)
        self.strides = tuple(int(s) for s in strides)
        self.embed_dim = int(getattr(vit, "embed_dim", getattr(vit, "num_features", 0)))
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.num_prefix_tokens = int(getattr(vit, "num_prefix_tokens", 0))
        for param in self.vit.parameters():
            param.requires_grad_(False)
        self.vit.eval()

    def train(self, mode: bool = True) -> "ViTBackbone":
        super().train(mode)
        if not self.vit_trains:
            self.vit.eval()  # frozen: drop-path and dropout stay off
        return self

    def check_input(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {p}: resize or pad to a "
                f"multiple of {p} (e.g. {h // p * p or p}x{w // p * p or p} or {-(-h // p) * p}x{-(-w // p) * p})"
            )

    def forward_patch_maps(self, images: Tensor) -> list[Tensor]:
        """Patch tokens after blocks ``out_indices`` as maps [B, C, H/p, W/p] (after the hooks)."""
        self.check_input(images)
        unique = sorted(set(self.out_indices))  # a block may feed several strides (shallow ViTs)
        maps = self.vit.forward_intermediates(
            images, indices=unique, norm=False, stop_early=True,
            output_fmt="NCHW", intermediates_only=True)
        by_block = dict(zip(unique, maps))
        return [by_block[i] for i in self.out_indices]

    def forward(self, images: Tensor) -> tuple[list[Tensor], Optional[Tensor]]:
        feats = []
        for fmap, stride in zip(self.forward_patch_maps(images), self.strides):
            factor = self.patch_size / stride
            if factor != 1:
                fmap = F.interpolate(fmap, scale_factor=factor, mode="bilinear", align_corners=False)
            feats.append(fmap)
        return feats, self.queries()

    def queries(self) -> Optional[Tensor]:
        """The decoder's queries [m, Q], or None (the head learns its own)."""
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class ReinBackbone(ViTBackbone):
    """A frozen ViT refined by a Rein after every block (:class:`ViTBackbone` + Rein's hooks).

    forward(images [B, 3, H, W]) -> (feats, queries): the maps after the Rein-refined blocks,
    and ``Rein.queries()`` [m, Q] (None without Rein or without the query link).
    Only the Rein's parameters require grad.
    """

    method = "rein"

    def __init__(
        self,
        vit: nn.Module,
        out_indices: Sequence[int],
        rein: Optional[Rein] = None,
        strides: Sequence[int] = STRIDES,
    ) -> None:
        super().__init__(vit, out_indices, strides)
        depth = len(vit.blocks)
        if rein is not None and rein.num_layers != depth:
            raise ValueError(f"Rein has {rein.num_layers} layers but the ViT has {depth} blocks")
        self.rein = rein
        self._hooks = [blk.register_forward_hook(partial(self._rein_hook, i)) for i, blk in enumerate(vit.blocks)]

    def _rein_hook(self, layer: int, module: nn.Module, inputs: Any, output: Tensor) -> Optional[Tensor]:
        """Forward hook on block ``layer``: returns Rein(output); [B, N, C] or [B, H, W, C] maps."""
        if self.rein is None:
            return None
        if output.ndim == 4:  # SAM's ViT: [B, H, W, C], no prefix tokens
            b, h, w, c = output.shape
            return self.rein(output.reshape(b, h * w, c), layer, num_prefix_tokens=0).reshape(b, h, w, c)
        return self.rein(output, layer, num_prefix_tokens=self.num_prefix_tokens)

    def queries(self) -> Optional[Tensor]:
        return self.rein.queries() if self.rein is not None else None


def rein_for(vit: nn.Module, options: dict[str, Any]) -> Rein:
    """A :class:`Rein` sized for ``vit`` (its depth, width and patch size) with ``options``,
    :class:`reinlite.Rein`'s keywords (missing ones: Rein's defaults)."""
    options = dict(options)
    options.setdefault("patch_size", int(vit.patch_embed.patch_size[0]))
    return Rein(len(vit.blocks), int(vit.embed_dim), **options)


def _default_out_indices(depth: int) -> tuple[int, ...]:
    """The release's (7, 11, 15, 23) for 24 blocks; else four evenly spaced blocks ending at the last."""
    if depth == 24:
        return (7, 11, 15, 23)
    return tuple(max(0, round(depth * k / 4) - 1) for k in (1, 2, 3, 4))


def build_backbone(
    name: str,
    pretrained: bool | str | os.PathLike = False,
    img_size: Optional[int | Sequence[int]] = None,
    patch_size: Optional[int] = None,
    out_indices: Optional[Sequence[int]] = None,
    rein: Optional[dict[str, Any]] = None,
    strides: Sequence[int] = STRIDES,
    **model_kwargs: Any,
) -> ReinBackbone:
    """Build a frozen timm ViT with a Rein after every block.

    Example (the release's configuration)::

        bb = build_backbone("vit_large_patch14_dinov2", pretrained=False, img_size=512,
                            patch_size=16, out_indices=(7, 11, 15, 23),
                            rein=dict(num_tokens=100, rank=16, query_dim=256))
        feats, queries = bb(images)   # 4 maps at strides 4, 8, 16, 32; queries [100, 256]

    Args:
        name: a timm ViT name, ``"course_vit"`` or ``"course_vit_mae"`` (the shipped offline
            course backbones: proxy-supervised, and self-supervised MAE-style).
        pretrained: False, True, or a path to a local weights file.
        img_size, patch_size: the size the ViT runs at (None: the model's own). Other input
            sizes divisible by the patch size also work (the position embedding is resampled).
        out_indices: blocks whose output becomes the four feature maps.
        rein: keyword arguments of :class:`reinlite.Rein` (num_layers, embed_dim and
            patch_size are filled in), or None for a frozen backbone without Rein.
    """
    vit = create_vit(name, pretrained=pretrained, img_size=img_size, patch_size=patch_size, **model_kwargs)
    layer = rein_for(vit, rein) if rein is not None else None
    indices = tuple(out_indices) if out_indices is not None else _default_out_indices(len(vit.blocks))
    return ReinBackbone(vit, indices, layer, strides)


# ----------------------------------------------------------------------------- parameter tables
def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_table(model: nn.Module) -> str:
    """A markdown table of trainable versus total parameters per top-level child."""
    rows = ["| part | trainable | total | trainable % |", "|---|---:|---:|---:|"]
    for name, child in model.named_children():
        total = count_parameters(child)
        if total == 0:
            continue
        trainable = count_parameters(child, trainable_only=True)
        rows.append(f"| {name} | {trainable:,} | {total:,} | {100 * trainable / total:.2f} |")
    total = count_parameters(model)
    trainable = count_parameters(model, trainable_only=True)
    rows.append(f"| **all** | {trainable:,} | {total:,} | {100 * trainable / max(total, 1):.2f} |")
    return "\n".join(rows)
