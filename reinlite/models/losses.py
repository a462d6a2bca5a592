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

The weights (the same for cost and loss), point counts and ratios default to the release's,
held once in :class:`reinlite.config.LossConfig`; ``Mask2FormerLoss.from_config`` builds one.

The computation is batched: the costs of every image and every decoder layer are one set of
tensor operations, copied to the CPU once; only the Hungarian algorithm runs per image (in
numpy); the point sampling and the mask losses of all layers are again one batch. The random
points are drawn in the order of the per-image, per-layer definition above (layer by layer:
the matching points of every image with targets, then the oversampled and the random points
of the importance sampling), so the losses equal that definition's to the last bit.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from reinlite.config import HeadConfig, LossConfig

# The release's weights (their home: LossConfig), the cost functions' defaults.
W_CLASS, W_MASK, W_DICE = LossConfig.class_weight, LossConfig.mask_weight, LossConfig.dice_weight

__all__ = [
    "semantic_to_targets",
    "point_sample",
    "uncertain_point_coords",
    "batch_sigmoid_ce_cost",
    "batch_dice_cost",
    "select_uncertain_points",
    "point_match_cost",
    "batch_match_cost",
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


def select_uncertain_points(mask_logits: torch.Tensor, coords: torch.Tensor,
                            num_uncertain: int, random_coords: Optional[torch.Tensor] = None
                            ) -> torch.Tensor:
    """The deterministic part of importance sampling: of the candidate points coords [N, kP, 2]
    keep the ``num_uncertain`` most uncertain ones of mask_logits [N, 1, h, w] (uncertainty
    = -|logit|, sorted, most uncertain first) and append random_coords [N, P_r, 2] if given.
    Returns [N, num_uncertain + P_r, 2]."""
    unc = -point_sample(mask_logits.float(), coords)[:, 0].abs()  # [N, kP]
    idx = unc.topk(num_uncertain, dim=1).indices  # [N, P_u]
    picked = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    if random_coords is not None and random_coords.shape[1] > 0:
        picked = torch.cat([picked, random_coords], 1)
    return picked


@torch.no_grad()
def uncertain_point_coords(mask_logits: torch.Tensor, num_points: int,
                           oversample_ratio: float = LossConfig.oversample_ratio,
                           importance_ratio: float = LossConfig.importance_ratio,
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
    num_uncertain = int(importance_ratio * num_points)
    num_random = num_points - num_uncertain
    random_coords = (torch.rand(n, num_random, 2, device=dev, generator=generator)
                     if num_random > 0 else None)
    return select_uncertain_points(mask_logits, coords, num_uncertain, random_coords)


def batch_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy between every prediction and every target.
    inputs [Nq, P] logits, targets [Nt, P] in {0, 1} -> [Nq, Nt]."""
    pos, neg = _bce_parts(inputs)
    return _ce_cost(pos, neg, targets)


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice cost 1 - (2 |s t| + 1) / (|s| + |t| + 1), s = sigmoid(inputs), for every pair.
    inputs [Nq, P] logits, targets [Nt, P] -> [Nq, Nt]."""
    s = inputs.sigmoid()
    num = 2 * s @ targets.T
    den = s.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def _bce_parts(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE(x, 1) = -log sigmoid(x) and BCE(x, 0) = x - log sigmoid(x), elementwise, bit for bit
    what ``F.binary_cross_entropy_with_logits(x, ones / zeros, reduction="none")`` gives
    ((1 - t) x - log sigmoid(x)), with one log-sigmoid for both."""
    log_sig = F.logsigmoid(inputs)
    return -log_sig, inputs - log_sig


def _ce_cost(pos: torch.Tensor, neg: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(pos @ t^T + neg @ (1 - t)^T) / P for one image: pos, neg [Nq, P], targets [Nt, P]."""
    return (pos @ targets.T + neg @ (1 - targets).T) / pos.shape[1]


@torch.no_grad()
def point_match_cost(pred_logits: torch.Tensor, pred_points: torch.Tensor, labels: torch.Tensor,
                     target_points: torch.Tensor, sizes: Sequence[int], cost_class: float = W_CLASS,
                     cost_mask: float = W_MASK, cost_dice: float = W_DICE) -> torch.Tensor:
    """The matching costs of N images from their masks' values at the sampled points, [N, m, n_max].

    pred_logits [N, m, K+1]; pred_points [N, m, P] (mask logits at the points); labels
    [N, n_max] and target_points [N, n_max, P]: image i's first sizes[i] are its targets, the
    rest padding. Columns of padded targets hold meaningless costs: cut them off.

    Everything but the matrix products is one batched operation; the products run per image
    with that image's n targets, so every cost is bit for bit :func:`match_cost`'s (a product
    of another width can round differently, and the Hungarian algorithm meets near-ties:
    predictions of near-identical queries).
    """
    n_img, m = pred_points.shape[:2]
    n_max = labels.shape[1]
    prob = torch.gather(pred_logits.float().softmax(-1), 2,
                        labels[:, None, :].expand(-1, m, -1))  # [N, m, n]
    log_sig = F.logsigmoid(pred_points)
    neg = pred_points - log_sig  # BCE(x, 0); BCE(x, 1) = -log_sig, and (-a) @ t = -(a @ t) exactly
    s = pred_points.sigmoid()
    s2, not_tp = 2 * s, 1 - target_points
    ce = pred_points.new_zeros(n_img, m, n_max)
    num = pred_points.new_zeros(n_img, m, n_max)
    for i, n in enumerate(sizes):
        if n:
            t = target_points[i, :n]
            ce[i, :, :n] = -(log_sig[i] @ t.T) + neg[i] @ not_tp[i, :n].T
            num[i, :, :n] = s2[i] @ t.T
    ce = ce / pred_points.shape[-1]
    den = s.sum(-1)[:, :, None] + target_points.sum(-1)[:, None, :]
    dice = 1 - (num + 1) / (den + 1)
    return cost_class * -prob + cost_mask * ce + cost_dice * dice


@torch.no_grad()
def batch_match_cost(pred_logits: torch.Tensor, pred_masks: torch.Tensor, labels: torch.Tensor,
                     masks: torch.Tensor, coords: torch.Tensor, sizes: Sequence[int],
                     cost_class: float = W_CLASS, cost_mask: float = W_MASK,
                     cost_dice: float = W_DICE) -> torch.Tensor:
    """The matching costs of N images at once, [N, m, n_max]: :func:`match_cost` per image.

    pred_logits [N, m, K+1], pred_masks [N, m, h, w] (logits), labels [N, n_max] and masks
    [N, n_max, H, W] (image i's first sizes[i] are its targets, the rest padding), coords
    [N, P, 2]: each image's points (shared by its predictions and targets).
    """
    return point_match_cost(pred_logits, point_sample(pred_masks.float(), coords), labels,
                            point_sample(masks.float(), coords), sizes, cost_class, cost_mask,
                            cost_dice)


@torch.no_grad()
def match_cost(pred_logits: torch.Tensor, pred_masks: torch.Tensor, labels: torch.Tensor,
               masks: torch.Tensor, coords: torch.Tensor, cost_class: float = W_CLASS,
               cost_mask: float = W_MASK, cost_dice: float = W_DICE) -> torch.Tensor:
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


def _finite_cost(c: np.ndarray) -> np.ndarray:
    """Every non-finite entry (nan, +inf, -inf) of a cost matrix becomes its largest finite
    entry (0 if none is finite): a broken cost is never preferred."""
    finite = np.isfinite(c)
    if finite.all():
        return c
    fill = c[finite].max() if finite.any() else 0.0
    return np.where(finite, c, fill)


def hungarian_match(cost: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of a cost [m, n] (m >= n): (pred idx, target idx),
    pred idx ascending. Non-finite costs count as the largest finite cost."""
    c = cost.detach().cpu().float().numpy() if torch.is_tensor(cost) else np.asarray(cost, np.float32)
    rows, cols = linear_sum_assignment(_finite_cost(c))
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask dice loss, inputs [N, P] logits, targets [N, P] -> [N]."""
    s = inputs.sigmoid()
    return 1 - (2 * (s * targets).sum(-1) + 1) / (s.sum(-1) + targets.sum(-1) + 1)


def _pad_targets(targets: Sequence[dict], device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Per-image targets -> (labels [B, n_max] long (padded with 0), masks [B, n_max, H, W]
    float (padded with empty masks), the sizes n_b)."""
    sizes = [len(t["labels"]) for t in targets]
    n_max = max(sizes + [1])
    h, w = targets[0]["masks"].shape[-2:]
    labels = torch.zeros(len(targets), n_max, dtype=torch.long, device=device)
    masks = torch.zeros(len(targets), n_max, h, w, device=device)
    for b, (t, n) in enumerate(zip(targets, sizes)):
        if n:
            labels[b, :n] = t["labels"].to(device)
            masks[b, :n] = t["masks"].to(device).float()
    return labels, masks, sizes


def _label_map_targets(seg: torch.Tensor, num_classes: int, ignore_index: int = 255
                       ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """:func:`semantic_to_targets` for a whole batch at once, padded as :func:`_pad_targets`:
    label maps [B, H, W] -> (labels [B, n_max] (each image's classes present, ascending,
    then 0), masks [B, n_max, H, W] float, sizes)."""
    b = seg.shape[0]
    valid = (seg >= 0) & (seg < num_classes) & (seg != ignore_index)
    v = torch.where(valid, seg, num_classes).flatten(1).long()  # num_classes = "none"
    counts = torch.zeros(b, num_classes + 1, dtype=torch.long, device=seg.device)
    counts.scatter_add_(1, v, torch.ones_like(v))
    present = counts[:, :num_classes] > 0  # [B, K]
    sizes_t = present.sum(1)
    sizes = sizes_t.tolist()
    n_max = max(sizes + [1])
    # present classes first, in ascending order (a stable sort of "absent")
    labels = torch.sort((~present).to(torch.uint8), dim=1, stable=True).indices[:, :n_max]
    slot = torch.arange(n_max, device=seg.device)[None, :] < sizes_t[:, None]  # [B, n_max]
    labels = torch.where(slot, labels, torch.zeros_like(labels))
    masks = ((seg[:, None] == labels[:, :, None, None]) & slot[:, :, None, None]).float()
    return labels, masks, sizes


class Mask2FormerLoss(nn.Module):
    """Matching + class / mask / dice losses with deep supervision.

    forward(outputs, targets) with outputs the head's dict (pred_logits [B, m, K+1],
    pred_masks [B, m, h, w], aux_outputs) and targets either a label map [B, H, W] (train
    ids, 255 void) or a list of dict(labels [n], masks [n, H, W]).
    Returns a dict: ``loss`` (the weighted total to back-propagate), and the unweighted
    ``loss_cls``, ``loss_mask``, ``loss_dice`` of the final prediction, plus
    ``d{i}.loss_cls`` etc. for the auxiliary predictions (i = 0 is the initial queries).
    """

    def __init__(self, num_classes: int = HeadConfig.num_classes,
                 class_weight: float = LossConfig.class_weight,
                 mask_weight: float = LossConfig.mask_weight,
                 dice_weight: float = LossConfig.dice_weight,
                 no_object_weight: float = LossConfig.no_object_weight,
                 num_points: int = LossConfig.num_points,
                 oversample_ratio: float = LossConfig.oversample_ratio,
                 importance_ratio: float = LossConfig.importance_ratio, ignore_index: int = 255,
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

    @classmethod
    def from_config(cls, cfg: LossConfig, num_classes: int) -> "Mask2FormerLoss":
        """The loss of ``cfg`` (``cfg.loss``) for a head of ``num_classes`` classes."""
        return cls(num_classes=num_classes, **dataclasses.asdict(cfg))

    # -- random points, in the order of the per-image, per-layer definition -----------------
    def _draw_points(self, sizes: list[int], num_layers: int, device) -> list[dict]:
        """For every layer: ``match`` [B_t, P, 2] (one draw per image with targets),
        ``over`` [N, kP, 2] and ``rand`` [N, P_r, 2] (N = sum of sizes) for the importance
        sampling (absent when N = 0)."""
        n = sum(sizes)
        num_sampled = int(self.num_points * self.oversample_ratio)
        num_random = self.num_points - int(self.importance_ratio * self.num_points)
        draws = []
        for _ in range(num_layers):
            d = dict(match=torch.stack([torch.rand(self.num_points, 2, device=device)
                                        for s in sizes if s]) if n else None)
            if n:
                d["over"] = torch.rand(n, num_sampled, 2, device=device)
                d["rand"] = (torch.rand(n, num_random, 2, device=device) if num_random > 0
                             else None)
            draws.append(d)
        return draws

    @torch.no_grad()
    def _match_all(self, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
                   tmasks: torch.Tensor, sizes: list[int], coords: torch.Tensor
                   ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Hungarian matches of every layer and image: [layer][image] -> (rows, cols).

        logits [L, B, m, K+1], masks [L, B, m, h, w], labels [B, n_max], tmasks
        [B, n_max, H, W], coords [L, B_t, P, 2] for the B_t images with targets.
        """
        num_layers = logits.shape[0]
        sel = [b for b, s in enumerate(sizes) if s]
        empty = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
        out = [[empty] * len(sizes) for _ in range(num_layers)]
        if not sel:
            return out
        idx = torch.tensor(sel, device=logits.device)
        lg, mk = logits[:, idx], masks[:, idx]  # [L, B_t, ...]
        # the targets' points of all layers in one call: [B_t, n, L * P] -> [L, B_t, n, P]
        tm = point_sample(tmasks[idx], coords.transpose(0, 1).flatten(1, 2))
        tm = tm.unflatten(2, (num_layers, -1)).permute(2, 0, 1, 3)
        pm = point_sample(mk.flatten(0, 1).float(), coords.flatten(0, 1))  # [L B_t, m, P]
        cost = point_match_cost(lg.flatten(0, 1), pm, labels[idx].repeat(num_layers, 1),
                                tm.flatten(0, 1), [sizes[b] for b in sel] * num_layers,
                                self.class_weight, self.mask_weight, self.dice_weight)
        cost = cost.view(num_layers, len(sel), *cost.shape[1:]).cpu().numpy()
        for layer in range(num_layers):
            for j, b in enumerate(sel):
                rows, cols = linear_sum_assignment(_finite_cost(cost[layer, j, :, :sizes[b]]))
                out[layer][b] = (rows.astype(np.int64), cols.astype(np.int64))
        return out

    @torch.no_grad()
    def match(self, pred_logits, pred_masks, targets) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One (pred idx, target idx) pair of index tensors per image (one layer's prediction:
        pred_logits [B, m, K+1], pred_masks [B, m, h, w])."""
        labels, tmasks, sizes = _pad_targets(targets, pred_masks.device)
        if not sum(sizes):
            e = torch.empty(0, dtype=torch.long)
            return [(e, e) for _ in targets]
        # only the matching's points are drawn (as the loss draws them first), so a replay
        # that matches, then samples the loss's points, sees the loss's random numbers
        coords = torch.stack([torch.rand(self.num_points, 2, device=pred_masks.device)
                              for s in sizes if s])
        found = self._match_all(pred_logits[None], pred_masks[None], labels, tmasks, sizes,
                                coords[None])[0]
        return [(torch.as_tensor(r), torch.as_tensor(c)) for r, c in found]

    def _layer_losses(self, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
                      tmasks: torch.Tensor, sizes: list[int], num_masks) -> list[dict]:
        """The losses of every layer's prediction, logits [L, B, m, K+1], masks [L, B, m, h, w],
        for the padded targets labels [B, n_max], tmasks [B, n_max, H, W] (sizes: how many of
        each image's are real): a list (one per layer) of dict(loss_cls, loss_mask, loss_dice)."""
        num_layers, b, m = logits.shape[:3]
        dev = logits.device
        # with more targets than queries only m of an image's targets are matched
        matched = [min(s, m) for s in sizes]
        draws = self._draw_points(matched, num_layers, dev)
        n = sum(matched)
        matches = (self._match_all(logits, masks, labels, tmasks, sizes,
                                   torch.stack([d["match"] for d in draws]))
                   if n else None)
        # class targets: "no object" except where a prediction is matched
        target_classes = torch.full((num_layers, b, m), self.num_classes, dtype=torch.long)
        labels_cpu = labels.cpu()
        src_flat, tgt_flat = [], []
        if n:
            for layer in range(num_layers):
                for i, (rows, cols) in enumerate(matches[layer]):
                    if len(rows):
                        target_classes[layer, i, rows] = labels_cpu[i, cols]
                        src_flat.append((layer * b + i) * m + rows)
                        tgt_flat.append(i * labels.shape[1] + cols)
        target_classes = target_classes.to(dev)
        weight = self.empty_weight.to(dev)
        out = [dict(loss_cls=F.cross_entropy(logits[layer].transpose(1, 2), target_classes[layer],
                                             weight=weight)) for layer in range(num_layers)]
        if n == 0:
            zero = masks.sum() * 0.0
            for d in out:
                d.update(loss_mask=zero, loss_dice=zero)
            return out
        src_idx = torch.as_tensor(np.concatenate(src_flat), device=dev)
        tgt_idx = torch.as_tensor(np.concatenate(tgt_flat), device=dev)
        src_masks = masks.flatten(0, 2)[src_idx][:, None]  # [L N, 1, h, w]
        tgt_masks = tmasks.flatten(0, 1)[tgt_idx][:, None]  # [L N, 1, H, W]
        over = torch.cat([d["over"] for d in draws])
        rand = torch.cat([d["rand"] for d in draws]) if draws[0]["rand"] is not None else None
        with torch.no_grad():
            coords = select_uncertain_points(src_masks.detach(), over,
                                             int(self.importance_ratio * self.num_points), rand)
            point_labels = point_sample(tgt_masks, coords)[:, 0]
        point_logits = point_sample(src_masks, coords)[:, 0]  # [L N, P]
        bce = F.binary_cross_entropy_with_logits(point_logits, point_labels,
                                                 reduction="none").mean(1).view(num_layers, n)
        dice = dice_loss(point_logits, point_labels).view(num_layers, n)
        loss_mask, loss_dice = bce.sum(1) / num_masks, dice.sum(1) / num_masks
        for layer, d in enumerate(out):
            d.update(loss_mask=loss_mask[layer], loss_dice=loss_dice[layer])
        return out

    def forward(self, outputs: dict, targets) -> dict:
        dev = outputs["pred_logits"].device
        if torch.is_tensor(targets):
            labels, tmasks, sizes = _label_map_targets(targets.to(dev), self.num_classes,
                                                       self.ignore_index)
        else:
            labels, tmasks, sizes = _pad_targets(targets, dev)
        num_masks = torch.tensor(float(sum(sizes)), device=dev)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            num_masks = num_masks / dist.get_world_size()
        num_masks = num_masks.clamp(min=1.0)
        preds = [outputs]
        if self.deep_supervision:
            preds += list(outputs.get("aux_outputs", []))
        shapes = {(tuple(p["pred_logits"].shape), tuple(p["pred_masks"].shape)) for p in preds}
        if len(shapes) > 1:
            raise ValueError(f"every prediction (final and aux_outputs) must have the same "
                             f"pred_logits / pred_masks shapes (the losses of all decoder layers "
                             f"are computed as one batch), got {sorted(shapes)}")
        logits = torch.stack([p["pred_logits"].float() for p in preds])
        masks = torch.stack([p["pred_masks"].float() for p in preds])
        per_layer = self._layer_losses(logits, masks, labels, tmasks, sizes, num_masks)
        losses = dict(per_layer[0])
        for i, layer_losses in enumerate(per_layer[1:]):
            for k, v in layer_losses.items():
                losses[f"d{i}.{k}"] = v
        weights = dict(loss_cls=self.class_weight, loss_mask=self.mask_weight,
                       loss_dice=self.dice_weight)
        losses["loss"] = sum(weights[k.split(".")[-1]] * v for k, v in losses.items())
        return losses
