"""Hungarian matching and the Mask2Former losses (class CE, mask BCE, dice) on sampled points.

Set prediction (DETR, Mask2Former): the head outputs m (class, mask) pairs; a semantic
label map becomes n <= K targets (one binary mask per class present). Training

1. matches predictions to targets one-to-one with the Hungarian algorithm
   (``scipy.optimize.linear_sum_assignment``) on the cost
       C[i, j] = w_cls * (-p_i(c_j)) + w_mask * BCE(mask_i, mask_j) + w_dice * dice(mask_i, mask_j)
   with the mask terms computed on ``num_points`` uniformly random points (shared by all
   predictions and targets of an image);
2. applies cross-entropy on the classes of *all* m predictions (unmatched ones must say
   "no object", class K, whose weight is 0.1), and BCE + dice on the matched masks, at
   points chosen by importance sampling (mostly where the prediction is uncertain);
3. repeats 1-2 for the prediction after every decoder layer (deep supervision).

Release weights: w_cls = 2, w_mask = 5, w_dice = 5, for both cost and loss; 12,544 points,
oversample ratio 3.0, importance ratio 0.75.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

__all__ = [
    "semantic_to_targets",
    "point_sample",
    "uncertain_point_coords",
    "batch_sigmoid_ce_cost",
    "batch_dice_cost",
    "match_cost",
    "hungarian_match",
    "dice_loss",
    "Mask2FormerLoss",
]


def semantic_to_targets(seg: torch.Tensor, num_classes: int, ignore_index: int = 255) -> list[dict]:
    """Semantic label maps [B, H, W] (train ids, ``ignore_index`` = void) -> per image
    dict(labels [n] long, masks [n, H, W] float), one binary mask per class present.

    Ignored pixels belong to no mask (they are negatives of every mask, as in Mask2Former).
    """
    out = []
    for s in seg:
        classes = torch.unique(s)
        classes = classes[(classes != ignore_index) & (classes >= 0) & (classes < num_classes)]
        masks = (s[None] == classes[:, None, None]).float()
        out.append(dict(labels=classes.long(), masks=masks))
    return out


def point_sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of maps x [N, C, H, W] at points coords [N, P, 2] ((x, y) in [0, 1],
    align_corners=False: 0 and 1 are the outer edges). Returns [N, C, P]."""
    return F.grid_sample(x, (2 * coords - 1).unsqueeze(2).to(x.dtype), mode="bilinear",
                         align_corners=False).squeeze(3)


@torch.no_grad()
def uncertain_point_coords(mask_logits: torch.Tensor, num_points: int,
                           oversample_ratio: float = 3.0, importance_ratio: float = 0.75,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Importance sampling of points (PointRend): draw ``oversample_ratio * num_points``
    random points, keep the ``importance_ratio * num_points`` most uncertain ones
    (uncertainty = -|logit|, highest at logit 0) and add uniformly random points for the rest.

    mask_logits [N, 1, h, w] -> coords [N, num_points, 2] in [0, 1].
    """
    n = mask_logits.shape[0]
    dev = mask_logits.device
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=dev, generator=generator)
    unc = -point_sample(mask_logits.float(), coords)[:, 0].abs()  # [N, kP]
    num_uncertain = int(importance_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = unc.topk(num_uncertain, dim=1).indices  # [N, P_u]
    picked = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        picked = torch.cat([picked, torch.rand(n, num_random, 2, device=dev, generator=generator)], 1)
    return picked


def batch_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy between every prediction and every target.
    inputs [Nq, P] logits, targets [Nt, P] in {0, 1} -> [Nq, Nt]."""
    p = inputs.shape[1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / p


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice cost 1 - (2 |s t| + 1) / (|s| + |t| + 1), s = sigmoid(inputs), for every pair.
    inputs [Nq, P] logits, targets [Nt, P] -> [Nq, Nt]."""
    s = inputs.sigmoid()
    num = 2 * s @ targets.T
    den = s.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


@torch.no_grad()
def match_cost(pred_logits: torch.Tensor, pred_masks: torch.Tensor, labels: torch.Tensor,
               masks: torch.Tensor, coords: torch.Tensor, cost_class: float = 2.0,
               cost_mask: float = 5.0, cost_dice: float = 5.0) -> torch.Tensor:
    """The matching cost of one image, [m, n].

    pred_logits [m, K+1], pred_masks [m, h, w] (logits), labels [n], masks [n, H, W],
    coords [P, 2]: the points (shared by predictions and targets) for the mask costs.
    """
    prob = pred_logits.float().softmax(-1)[:, labels]  # [m, n]
    c = coords[None]
    pm = point_sample(pred_masks[:, None].float(), c.expand(pred_masks.shape[0], -1, -1))[:, 0]
    tm = point_sample(masks[:, None].float(), c.expand(masks.shape[0], -1, -1))[:, 0]
    return (cost_class * -prob + cost_mask * batch_sigmoid_ce_cost(pm, tm)
            + cost_dice * batch_dice_cost(pm, tm))


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of a cost [m, n] (m >= n): (pred idx, target idx)."""
    c = cost.detach().cpu().float().numpy()
    c = np.nan_to_num(c, nan=1e8, posinf=1e8, neginf=-1e8)
    rows, cols = linear_sum_assignment(c)
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask dice loss, inputs [N, P] logits, targets [N, P] -> [N]."""
    s = inputs.sigmoid()
    return 1 - (2 * (s * targets).sum(-1) + 1) / (s.sum(-1) + targets.sum(-1) + 1)


class Mask2FormerLoss(nn.Module):
    """Matching + class / mask / dice losses with deep supervision.

    forward(outputs, targets) with outputs the head's dict (pred_logits [B, m, K+1],
    pred_masks [B, m, h, w], aux_outputs) and targets either a label map [B, H, W] (train
    ids, 255 void) or a list of dict(labels [n], masks [n, H, W]).
    Returns a dict: ``loss`` (the weighted total to back-propagate), and the unweighted
    ``loss_cls``, ``loss_mask``, ``loss_dice`` of the final prediction, plus
    ``d{i}.loss_cls`` etc. for the auxiliary predictions (i = 0 is the initial queries).
    """

    def __init__(self, num_classes: int = 19, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, no_object_weight: float = 0.1,
                 num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_ratio: float = 0.75, ignore_index: int = 255,
                 deep_supervision: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.num_points, self.oversample_ratio, self.importance_ratio = (
            num_points, oversample_ratio, importance_ratio)
        self.ignore_index = ignore_index
        self.deep_supervision = deep_supervision
        w = torch.ones(num_classes + 1)
        w[-1] = no_object_weight
        self.register_buffer("empty_weight", w, persistent=False)

    @torch.no_grad()
    def match(self, pred_logits, pred_masks, targets) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One (pred idx, target idx) pair of index tensors per image."""
        out = []
        for b, t in enumerate(targets):
            if len(t["labels"]) == 0:
                e = torch.empty(0, dtype=torch.long)
                out.append((e, e))
                continue
            coords = torch.rand(self.num_points, 2, device=pred_masks.device)
            cost = match_cost(pred_logits[b], pred_masks[b], t["labels"], t["masks"], coords,
                              self.class_weight, self.mask_weight, self.dice_weight)
            out.append(hungarian_match(cost))
        return out

    def _single(self, pred_logits, pred_masks, targets, num_masks) -> dict:
        pred_logits, pred_masks = pred_logits.float(), pred_masks.float()
        indices = self.match(pred_logits, pred_masks, targets)
        b, m, _ = pred_logits.shape
        dev = pred_logits.device
        target_classes = torch.full((b, m), self.num_classes, dtype=torch.long, device=dev)
        for i, ((src, tgt), t) in enumerate(zip(indices, targets)):
            target_classes[i, src.to(dev)] = t["labels"][tgt.to(t["labels"].device)].to(dev)
        loss_cls = F.cross_entropy(pred_logits.transpose(1, 2), target_classes,
                                   weight=self.empty_weight.to(dev))
        src_masks = torch.cat([pred_masks[i, src.to(dev)] for i, (src, _) in enumerate(indices)])
        if src_masks.shape[0] == 0:
            zero = pred_masks.sum() * 0.0
            return dict(loss_cls=loss_cls, loss_mask=zero, loss_dice=zero)
        tgt_masks = torch.cat([t["masks"][tgt.to(t["masks"].device)].to(dev)
                               for (_, tgt), t in zip(indices, targets)])
        src_masks, tgt_masks = src_masks[:, None], tgt_masks[:, None].float()
        coords = uncertain_point_coords(src_masks, self.num_points, self.oversample_ratio,
                                        self.importance_ratio)
        with torch.no_grad():
            point_labels = point_sample(tgt_masks, coords)[:, 0]
        point_logits = point_sample(src_masks, coords)[:, 0]
        loss_mask = F.binary_cross_entropy_with_logits(point_logits, point_labels,
                                                       reduction="none").mean(1).sum() / num_masks
        loss_dice = dice_loss(point_logits, point_labels).sum() / num_masks
        return dict(loss_cls=loss_cls, loss_mask=loss_mask, loss_dice=loss_dice)

    def forward(self, outputs: dict, targets) -> dict:
        if torch.is_tensor(targets):
            targets = semantic_to_targets(targets, self.num_classes, self.ignore_index)
        num_masks = torch.tensor(float(sum(len(t["labels"]) for t in targets)),
                                 device=outputs["pred_logits"].device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        num_masks = num_masks.clamp(min=1.0)
        losses = self._single(outputs["pred_logits"], outputs["pred_masks"], targets, num_masks)
        if self.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                for k, v in self._single(aux["pred_logits"], aux["pred_masks"], targets,
                                         num_masks).items():
                    losses[f"d{i}.{k}"] = v
        weights = dict(loss_cls=self.class_weight, loss_mask=self.mask_weight,
                       loss_dice=self.dice_weight)
        losses["loss"] = sum(weights[k.split(".")[-1]] * v for k, v in losses.items())
        return losses
