import itertools

import pytest
import torch
import torch.nn.functional as F

from reinlite.head import Mask2FormerHead
from reinlite.losses import (Mask2FormerLoss, batch_dice_cost, batch_sigmoid_ce_cost,
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
