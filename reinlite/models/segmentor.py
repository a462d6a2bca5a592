"""The segmentation model: a (frozen) ViT adapted by a method + a Mask2Former head.

    model = build_model(cfg.model)                 # the one builder, every method
    out = model(images)                            # the head's dict (logits, masks, aux)
    scores = model.predict(images)                 # [B, K, H, W]

A trained run is rebuilt from its checkpoint by ``reinlite.engine.evaluate.load_run`` (and
``reinlite.load_model``, ready for scripts).

Rein (``cfg.model.method == "rein"``) makes the decoder's queries from its tokens (Eqs. 8-10),
so the head has ``model.rein.num_tokens`` queries; the baselines (reinlite.models.baselines) have none and
the head learns as many query embeddings (:func:`reinlite.config.num_queries`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reinlite.config import ConfigError, LossConfig, ModelConfig, method_options, num_queries
from reinlite.models.head import Mask2FormerHead, semantic_inference
from reinlite.models.losses import Mask2FormerLoss


class Segmentor(nn.Module):
    """A ViT backbone (``backbone``: Rein or a baseline) + a Mask2Former head (``head``).

    forward(images [B, 3, H, W], ImageNet-normalised) -> the head's dict (pred_logits
    [B, m, K+1], pred_masks [B, m, H/4, W/4], aux_outputs).
    predict(images) -> semantic scores [B, K, H, W].
    """

    def __init__(self, backbone: nn.Module, head: Mask2FormerHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images):
        feats, queries = self.backbone(images)
        return self.head(feats, queries)

    @torch.no_grad()
    def predict(self, images):
        out = self.forward(images)
        return semantic_inference(out["pred_logits"], out["pred_masks"], images.shape[-2:])

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters that train (Rein / the baseline's, and the head): what a run saves."""
        return {k: p.detach() for k, p in self.named_parameters() if p.requires_grad}


def _pretrained(value):
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def build_model(m: ModelConfig) -> Segmentor:
    """Backbone + head from the model part of a config (``cfg.model``): the method's backbone
    from the registry (reinlite.models.baselines.METHODS) with its typed options, and the head
    from ``m.head`` with as many queries as :func:`reinlite.config.num_queries` says."""
    from reinlite.models.baselines import build_peft_backbone

    if m.head.num_classes is None:
        raise ConfigError("model.head.num_classes is not resolved: build configs with "
                          "reinlite.config.load_config, which derives it from data.classes")
    img_size = tuple(m.img_size) if isinstance(m.img_size, (list, tuple)) else m.img_size
    bb = build_peft_backbone(m.method, m.backbone, pretrained=_pretrained(m.pretrained), img_size=img_size,
                             patch_size=m.patch_size, out_indices=m.out_indices,
                             model_kwargs=dict(m.backbone_kwargs), **method_options(m))
    rein = getattr(bb, "rein", None)
    with_queries = rein is not None and rein.link_to_queries
    if with_queries and m.head.num_queries not in (None, rein.num_tokens):
        raise ConfigError(f"model.head.num_queries={m.head.num_queries} conflicts with "
                          f"model.rein.num_tokens={rein.num_tokens} (Rein's tokens are the queries)")
    head = Mask2FormerHead.from_config(
        m.head, bb.embed_dim, num_queries=rein.num_tokens if with_queries else num_queries(m),
        query_source="rein" if with_queries else "learned",
        query_dim=rein.query_dim if with_queries else m.head.hidden_dim)
    return Segmentor(bb, head)


def build_criterion(loss: LossConfig, num_classes: int) -> Mask2FormerLoss:
    """The Mask2Former loss from ``cfg.loss`` (and the head's class count)."""
    return Mask2FormerLoss.from_config(loss, num_classes)
