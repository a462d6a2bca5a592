"""The segmentation model: a (frozen) ViT adapted by a method + a Mask2Former head.

    model = build_model(cfg.model)                 # the one builder, every method
    out = model(images)                            # the head's dict (logits, masks, aux)
    scores = model.predict(images)                 # [B, K, H, W]
    model, cfg = load_run("runs/course")           # rebuild a run from its checkpoint alone
    predictor = load_model("runs/course")          # the same, ready for scripts:
    labels = predictor.predict(image)              # PIL / numpy / tensor -> class ids [H, W]

Rein (``cfg.model.method == "rein"``) makes the decoder's queries from its tokens (Eqs. 6-7),
so the head has ``model.rein.num_tokens`` queries; the baselines (reinlite.models.baselines) have none and
the head learns as many query embeddings (:func:`reinlite.config.num_queries`).
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import torch
import torch.nn as nn

from reinlite.engine.checkpoint import load_trainable, read_run_checkpoint, trainable_state_dict
from reinlite.weights import CheckpointError
from reinlite.config import (Config, ConfigError, LossConfig, ModelConfig, load_config, method_options,
                             num_queries)
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
        return trainable_state_dict(self)


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


def load_run(checkpoint: str | os.PathLike, cfg: Optional[Config] = None,
             overrides: Sequence[str] = ()) -> tuple[Segmentor, Config]:
    """Rebuild the model of a run's checkpoint (file or run folder) from the config stored in
    it (or ``cfg``), load the trained weights strictly, and return (model in eval mode, cfg).

    The checkpoint's classes (its stored ``data.classes``) must be the config's: evaluating a
    model on other classes is refused, naming both lists."""
    weights, meta = read_run_checkpoint(checkpoint)
    stored = load_config(json.loads(meta["config"])) if "config" in meta else None
    if cfg is None:
        if stored is None:
            raise CheckpointError(f"{checkpoint}: no config in the checkpoint's metadata; pass a config")
        cfg = load_config(stored, overrides)
    elif overrides:
        cfg = load_config(cfg, overrides)
    if stored is not None and list(stored.data.classes) != list(cfg.data.classes):
        raise ConfigError(f"{checkpoint} was trained on the classes [{', '.join(stored.data.classes)}] "
                          f"but the config names [{', '.join(cfg.data.classes)}]; a model trained on "
                          "some classes cannot be evaluated on others")
    torch.manual_seed(cfg.seed)  # a backbone built with pretrained=False is reproducible
    model = build_model(cfg.model)
    load_trainable(model, weights, str(checkpoint))
    return model.eval(), cfg


class Predictor:
    """A trained run ready for scripts (:func:`load_model`).

    predict(image) -> class ids at the image's size: a PIL image or numpy [H, W, 3] gives a
    numpy int64 [H, W]; a tensor [3, H, W] / [B, 3, H, W] gives a long tensor [H, W] /
    [B, H, W]. Inference follows the run's stored eval config (slide or whole, resize);
    sizes the patch size does not divide are padded.
    overlay(image, labels=None, alpha=0.5) -> uint8 [H, W, 3] in the run's class colours.
    ``classes``: the class names (label id i is ``classes[i]``); ``model`` the Segmentor;
    ``cfg`` the run's config. ``model, cfg = predictor`` unpacks as the older API did.
    """

    def __init__(self, model: Segmentor, cfg: Config):
        self.model, self.cfg = model.eval(), cfg
        self.classes: tuple = tuple(cfg.data.classes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "Predictor":
        self.model.to(device)
        return self

    def predict(self, image):
        from reinlite.engine.evaluate import predict_image

        labels = predict_image(self.model, self.cfg, image)
        return labels if isinstance(image, torch.Tensor) else labels.numpy()

    def overlay(self, image, labels=None, alpha: float = 0.5):
        from reinlite.engine.evaluate import to_uint8_image
        from reinlite.viz import overlay

        labels = self.predict(image) if labels is None else labels
        rgb = to_uint8_image(image).permute(1, 2, 0).numpy()
        return overlay(rgb, labels, alpha, classes=self.classes)

    def __iter__(self):  # model, cfg = load_model(run): the (Segmentor, Config) of earlier versions
        return iter((self.model, self.cfg))

    def __repr__(self):
        return (f"Predictor({self.cfg.model.backbone} + {self.cfg.model.method}, "
                f"{len(self.classes)} classes: {', '.join(self.classes[:5])}"
                f"{', ...' if len(self.classes) > 5 else ''})")


def load_model(run: str | os.PathLike, device: Optional[str] = None) -> Predictor:
    """A trained run (its folder or checkpoint file) as a :class:`Predictor`:
    ``reinlite.load_model("runs/mine").predict(image)``. The checkpoint alone rebuilds it
    (its config, with the class names, is stored in it). ``device``: default cuda if
    available and the run allows it, else cpu."""
    from pathlib import Path

    if not Path(run).exists():
        raise FileNotFoundError(f"checkpoint not found: {run}")
    model, cfg = load_run(run)
    if device is None:
        device = "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu"
    return Predictor(model.to(device), cfg)
