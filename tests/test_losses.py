import itertools

import pytest
import torch
import torch.nn.functional as F

from reinlite.models.head import Mask2FormerHead
from reinlite.models.losses import (Mask2FormerLoss, batch_dice_cost, batch_sigmoid_ce_cost,
                             dice_loss, hungarian_match, match_cost, point_sample,
                             semantic_to_targets, uncertain_point_coords)



def brute_force(cost):
    m, n = cost.shape
    best = None
    for perm in itertools.permutations(range(m), n):  # perm[j] = prediction given target j
        total = sum(cost[perm[j], j].item() for j in range(n))
        if best is None or total < best[0]:
            best = (total, perm)
    return best


@pytest.mark.parametrize("m,n,seed", [(3, 3, 0), (4, 2, 1), (5, 3, 2), (6, 4, 3), (5, 5, 4)])
def test_hungarian_matches_brute_force(m, n, seed):
    g = torch.Generator().manual_seed(seed)
    k = 6
    logits = torch.randn(m, k + 1, generator=g)
    pred_masks = torch.randn(m, 6, 8, generator=g) * 3
    labels = torch.randperm(k, generator=g)[:n]
    masks = (torch.rand(n, 12, 16, generator=g) > 0.5).float()
    coords = torch.rand(50, 2, generator=g)
    cost = match_cost(logits, pred_masks, labels, masks, coords)
    assert cost.shape == (m, n)
    rows, cols = hungarian_match(cost)
    assert len(rows) == n and sorted(cols.tolist()) == list(range(n))
    total = cost[rows, cols].sum().item()
    best_total, best_perm = brute_force(cost)
    assert total == pytest.approx(best_total, abs=1e-5)
    assert {int(c): int(r) for r, c in zip(rows, cols)} == dict(enumerate(best_perm))


def test_costs_against_direct_formulas():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 7, generator=g)
    t = (torch.rand(2, 7, generator=g) > 0.5).float()
    ce = batch_sigmoid_ce_cost(x, t)
    dc = batch_dice_cost(x, t)
    for i in range(3):
        for j in range(2):
            ref = F.binary_cross_entropy_with_logits(x[i], t[j])
            assert ce[i, j].item() == pytest.approx(ref.item(), rel=1e-5)
            assert dc[i, j].item() == pytest.approx(dice_loss(x[i:i + 1], t[j:j + 1]).item(), rel=1e-5)
    # perfect prediction: dice ~ 0
    assert dice_loss(torch.tensor([[50.0, -50.0]]), torch.tensor([[1.0, 0.0]])).item() < 1e-6
    # class term: -2 p(c), weights (2, 5, 5)
    logits = torch.randn(3, 5, generator=g)
    labels = torch.tensor([1, 3])
    masks = torch.zeros(2, 4, 4)
    pm = torch.zeros(3, 4, 4)
    coords = torch.rand(10, 2, generator=g)
    c = match_cost(logits, pm, labels, masks, coords)
    p = logits.softmax(-1)[:, labels]
    expected = -2 * p + 5 * torch.log(torch.tensor(2.0)) + 5 * (1 - 1 / (0.5 * 10 + 1))
    torch.testing.assert_close(c, expected)


def test_semantic_to_targets_ignores_255():
    seg = torch.tensor([[[0, 0, 255], [3, 3, 255]], [[255, 255, 255], [255, 255, 255]]])
    t = semantic_to_targets(seg, num_classes=19)
    assert t[0]["labels"].tolist() == [0, 3]
    assert t[0]["masks"].shape == (2, 2, 3)
    assert t[0]["masks"][0].tolist() == [[1, 1, 0], [0, 0, 0]]
    assert t[0]["masks"][1].tolist() == [[0, 0, 0], [1, 1, 0]]
    assert len(t[1]["labels"]) == 0 and t[1]["masks"].shape == (0, 2, 3)


def test_point_sample_and_importance_sampling():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    # pixel (row 1, col 2) centre is ((2 + .5) / 4, (1 + .5) / 3)
    v = point_sample(x, torch.tensor([[[2.5 / 4, 1.5 / 3]]]))
    assert v.item() == pytest.approx(6.0)
    # a ramp crossing zero at x = 0.5: the uncertain points (|logit| small) lie near it
    ramp = 40 * ((torch.arange(64.0) + 0.5) / 64 - 0.5)
    logits = ramp.view(1, 1, 1, 64).expand(2, 1, 16, 64).contiguous()
    torch.manual_seed(0)
    coords = uncertain_point_coords(logits, num_points=40, oversample_ratio=3.0, importance_ratio=0.75)
    assert coords.shape == (2, 40, 2)
    assert ((coords >= 0) & (coords <= 1)).all()
    important, rand = coords[:, :30, 0], coords[:, 30:, 0]
    assert (important - 0.5).abs().max() < 0.3  # (zero padding halves logits at the borders)
    assert (important - 0.5).abs().mean() < 0.5 * (rand - 0.5).abs().mean()


def test_loss_no_targets_is_finite():
    crit = Mask2FormerLoss(num_classes=3, num_points=20)
    out = dict(pred_logits=torch.randn(1, 4, 4, requires_grad=True),
               pred_masks=torch.randn(1, 4, 5, 5, requires_grad=True), aux_outputs=[])
    losses = crit(out, torch.full((1, 20, 20), 255))
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()


def test_loss_deep_supervision_keys():
    crit = Mask2FormerLoss(num_classes=3, num_points=20)
    mk = lambda: dict(pred_logits=torch.randn(2, 4, 4), pred_masks=torch.randn(2, 4, 5, 5))  # noqa: E731
    out = dict(**mk(), aux_outputs=[mk(), mk()])
    seg = torch.randint(0, 3, (2, 20, 20))
    losses = crit(out, seg)
    for k in ("loss_cls", "loss_mask", "loss_dice", "d0.loss_cls", "d1.loss_dice"):
        assert k in losses
    total = sum({"loss_cls": 2, "loss_mask": 5, "loss_dice": 5}[k.split(".")[-1]] * v
                for k, v in losses.items() if k != "loss")
    torch.testing.assert_close(losses["loss"], total)


@pytest.fixture
def one_thread():
    """Small ops: one thread avoids waiting for a second core that another job holds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_loss_falls_when_overfitting_one_batch(one_thread):
    torch.manual_seed(0)
    k, m = 4, 6
    head = Mask2FormerHead(16, num_classes=k, num_queries=m, query_dim=16, hidden_dim=32,
                           num_layers=2, num_heads=4, ffn_dim=64, mask_dim=32, pixel_decoder="fpn")
    feats = [torch.randn(2, 16, 32 // s, 32 // s) for s in (4, 8, 16, 32)]
    queries = torch.nn.Parameter(torch.randn(m, 16))
    seg = torch.zeros(2, 32, 32, dtype=torch.long)
    seg[0, :16] = 1
    seg[0, 20:, 10:] = 2
    seg[1, :, :12] = 3
    seg[1, 0:4] = 255
    crit = Mask2FormerLoss(num_classes=k, num_points=256)
    opt = torch.optim.AdamW(list(head.parameters()) + [queries], lr=1e-3)
    losses = []
    for _ in range(30):
        out = head(feats, queries)
        loss = crit(out, seg)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    with torch.no_grad():
        pred = head.predict(feats, queries, size=(32, 32)).argmax(1)
    valid = seg != 255
    assert (pred[valid] == seg[valid]).float().mean() > 0.9


# ----------------------------------------------------------------------------------------
# The batched loss against the per-image, per-layer definition (bit for bit)
# ----------------------------------------------------------------------------------------
def reference_loss(outputs, seg, crit):
    """The loss as the module docstring defines it, one image and one layer at a time (the
    loop the batched implementation replaces), with the same order of random draws."""
    targets = semantic_to_targets(seg, crit.num_classes, crit.ignore_index)
    num_masks = torch.tensor(float(sum(len(t["labels"]) for t in targets))).clamp(min=1.0)

    def single(pred_logits, pred_masks):
        indices = []
        for b, t in enumerate(targets):
            if len(t["labels"]) == 0:
                indices.append((torch.empty(0, dtype=torch.long),) * 2)
                continue
            coords = torch.rand(crit.num_points, 2)
            cost = match_cost(pred_logits[b], pred_masks[b], t["labels"], t["masks"], coords,
                              crit.class_weight, crit.mask_weight, crit.dice_weight)
            indices.append(hungarian_match(cost))
        bsz, m, _ = pred_logits.shape
        target_classes = torch.full((bsz, m), crit.num_classes, dtype=torch.long)
        for i, ((src, tgt), t) in enumerate(zip(indices, targets)):
            target_classes[i, src] = t["labels"][tgt]
        loss_cls = F.cross_entropy(pred_logits.transpose(1, 2), target_classes,
                                   weight=crit.empty_weight)
        src_masks = torch.cat([pred_masks[i, src] for i, (src, _) in enumerate(indices)])
        if src_masks.shape[0] == 0:
            zero = pred_masks.sum() * 0.0
            return dict(loss_cls=loss_cls, loss_mask=zero, loss_dice=zero)
        tgt_masks = torch.cat([t["masks"][tgt] for (_, tgt), t in zip(indices, targets)])
        src_masks, tgt_masks = src_masks[:, None], tgt_masks[:, None]
        coords = uncertain_point_coords(src_masks, crit.num_points, crit.oversample_ratio,
                                        crit.importance_ratio)
        point_labels = point_sample(tgt_masks, coords)[:, 0]
        point_logits = point_sample(src_masks, coords)[:, 0]
        loss_mask = F.binary_cross_entropy_with_logits(point_logits, point_labels,
                                                       reduction="none").mean(1).sum() / num_masks
        loss_dice = dice_loss(point_logits, point_labels).sum() / num_masks
        return dict(loss_cls=loss_cls, loss_mask=loss_mask, loss_dice=loss_dice)

    losses = single(outputs["pred_logits"], outputs["pred_masks"])
    for i, aux in enumerate(outputs["aux_outputs"]):
        for k, v in single(aux["pred_logits"], aux["pred_masks"]).items():
            losses[f"d{i}.{k}"] = v
    w = dict(loss_cls=crit.class_weight, loss_mask=crit.mask_weight, loss_dice=crit.dice_weight)
    losses["loss"] = sum(w[k.split(".")[-1]] * v for k, v in losses.items())
    return losses


def _outputs(seed, b=3, m=6, k=5, h=8, w=16, layers=3):
    g = torch.Generator().manual_seed(seed)

    def one():
        return dict(pred_logits=torch.randn(b, m, k + 1, generator=g).requires_grad_(),
                    pred_masks=(3 * torch.randn(b, m, h, w, generator=g)).requires_grad_())

    out = one()
    out["aux_outputs"] = [one() for _ in range(layers - 1)]
    return out


def _leaves(out):
    return [out["pred_logits"], out["pred_masks"]] + [
        t for a in out["aux_outputs"] for t in (a["pred_logits"], a["pred_masks"])]


def _seg(seed, b=3, k=5, h=32, w=64):
    """Blocky label maps with void; image 1 is all void (no targets), an id >= k is ignored too."""
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, k, (b, 4, 8), generator=g).repeat_interleave(h // 4, 1).repeat_interleave(w // 8, 2)
    seg[0, :5, :9] = 255
    seg[0, -3:, -5:] = k + 2  # not a class: ignored like void
    seg[1] = 255
    return seg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_loss_is_bit_for_bit_the_per_image_definition(seed):
    crit = Mask2FormerLoss(num_classes=5, num_points=64)
    seg = _seg(seed)
    results = []
    for fn in (lambda o: crit(o, seg), lambda o: reference_loss(o, seg, crit)):
        out = _outputs(seed)
        torch.manual_seed(100 + seed)
        losses = fn(out)
        losses["loss"].backward()
        results.append((losses, [t.grad for t in _leaves(out)], torch.rand(3)))
    (new, g_new, rng_new), (ref, g_ref, rng_ref) = results
    assert list(new) == list(ref)
    for key in ref:
        assert torch.equal(new[key], ref[key]), (key, new[key], ref[key])
    assert all(torch.equal(a, b) for a, b in zip(g_new, g_ref))
    assert torch.equal(rng_new, rng_ref)  # the same random draws, in the same order


def test_loss_without_deep_supervision_and_with_target_dicts():
    seg = _seg(3)
    out = _outputs(3)
    crit = Mask2FormerLoss(num_classes=5, num_points=32, deep_supervision=False)
    torch.manual_seed(0)
    a = crit(out, seg)
    torch.manual_seed(0)
    b = crit(out, semantic_to_targets(seg, 5))
    assert set(a) == {"loss", "loss_cls", "loss_mask", "loss_dice"}
    for key in a:
        assert torch.equal(a[key], b[key])


def test_label_map_targets_match_semantic_to_targets():
    from reinlite.models.losses import _label_map_targets

    seg = _seg(4)
    seg[2, 0, 0] = -1  # negative ids are no class either
    labels, masks, sizes = _label_map_targets(seg, 5)
    ref = semantic_to_targets(seg, 5)
    assert sizes == [len(t["labels"]) for t in ref] and sizes[1] == 0
    assert labels.shape[1] == masks.shape[1] == max(sizes)
    for b, t in enumerate(ref):
        n = sizes[b]
        assert torch.equal(labels[b, :n], t["labels"])
        assert torch.equal(masks[b, :n], t["masks"])
        assert not masks[b, n:].any()
    labels, masks, sizes = _label_map_targets(torch.full((2, 4, 4), 255), 5)
    assert sizes == [0, 0] and masks.shape == (2, 1, 4, 4) and not masks.any()


def test_batch_match_cost_is_match_cost_per_image():
    from reinlite.models.losses import batch_match_cost

    g = torch.Generator().manual_seed(7)
    n_img, m, k, sizes = 3, 5, 6, [2, 0, 4]
    logits = torch.randn(n_img, m, k + 1, generator=g)
    pred = torch.randn(n_img, m, 6, 8, generator=g) * 3
    labels = torch.zeros(n_img, max(sizes), dtype=torch.long)
    masks = torch.zeros(n_img, max(sizes), 12, 16)
    for i, n in enumerate(sizes):
        labels[i, :n] = torch.randperm(k, generator=g)[:n]
        masks[i, :n] = (torch.rand(n, 12, 16, generator=g) > 0.5).float()
    coords = torch.rand(n_img, 40, 2, generator=g)
    cost = batch_match_cost(logits, pred, labels, masks, coords, sizes)
    assert cost.shape == (n_img, m, max(sizes))
    for i, n in enumerate(sizes):
        if n:
            ref = match_cost(logits[i], pred[i], labels[i, :n], masks[i, :n], coords[i])
            assert torch.equal(cost[i, :, :n], ref)


def test_crit_match_gives_the_per_image_matches():
    crit = Mask2FormerLoss(num_classes=5, num_points=48)
    seg = _seg(5)
    targets = semantic_to_targets(seg, 5)
    out = _outputs(5)
    torch.manual_seed(9)
    found = crit.match(out["pred_logits"], out["pred_masks"], targets)
    torch.manual_seed(9)
    for b, (t, (rows, cols)) in enumerate(zip(targets, found)):
        if len(t["labels"]) == 0:
            assert len(rows) == len(cols) == 0
            continue
        coords = torch.rand(48, 2)
        ref = hungarian_match(match_cost(out["pred_logits"][b], out["pred_masks"][b],
                                         t["labels"], t["masks"], coords))
        assert torch.equal(rows, ref[0]) and torch.equal(cols, ref[1])


def test_hungarian_non_finite_costs_count_as_the_largest_finite_cost():
    # -inf used to become -1e8, i.e. the preferred pair; now it is the worst finite cost
    cost = torch.tensor([[float("-inf"), 1.0], [2.0, 5.0], [0.5, 3.0]])
    rows, cols = hungarian_match(cost)
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 2, 1: 0}  # 0.5 + 1.0, not -inf + 3.0
    for bad in (float("nan"), float("inf")):
        c = torch.tensor([[bad, 1.0], [2.0, 5.0], [0.5, 3.0]])
        r, k = hungarian_match(c)
        assert dict(zip(k.tolist(), r.tolist())) == {0: 2, 1: 0}
    # a tie with the largest finite cost is allowed, but never better than it
    c = torch.tensor([[float("-inf"), 0.0], [5.0, 0.0]])
    r, k = hungarian_match(c)
    assert float(torch.where(torch.isfinite(c), c, 5.0)[r, k].sum()) == 5.0
    r, k = hungarian_match(torch.full((2, 2), float("nan")))  # nothing finite: any assignment
    assert sorted(k.tolist()) == [0, 1]


def test_predictions_of_different_shapes_are_a_clear_error():
    out = _outputs(0)
    out["aux_outputs"][0]["pred_masks"] = torch.randn(3, 6, 4, 8)
    with pytest.raises(ValueError, match="same pred_logits / pred_masks shapes"):
        Mask2FormerLoss(num_classes=5, num_points=16)(out, _seg(0))


def test_more_targets_than_queries():
    """Only m of an image's n > m targets can be matched; the loss is finite and uses m masks."""
    torch.manual_seed(0)
    m, k = 3, 19
    out = {"pred_logits": torch.randn(2, m, k + 1, requires_grad=True),
           "pred_masks": torch.randn(2, m, 8, 8, requires_grad=True)}
    labels = torch.arange(32).remainder(6).view(1, 4, 8).repeat_interleave(4, 1)
    labels = torch.nn.functional.interpolate(labels[None].float(), size=(32, 32), mode="nearest")[0].long()
    labels = torch.cat([labels, labels])  # 6 classes per image, 3 queries
    losses = Mask2FormerLoss(k, num_points=64, deep_supervision=False)(out, labels)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
