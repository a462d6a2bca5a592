"""The one training step (reinlite.engine.step), the device / AMP rule and the optimizer builder."""
import math

import pytest
import torch
import torch.nn as nn

from reinlite.config import ConfigError, load_config
from reinlite.data.pipeline import AugmentedDataset, StepBatchSampler, build_dataset, collate, mix_seed
from reinlite.data.transforms import TrainAugment
from reinlite.engine.checkpoint import trainable_state_dict
from reinlite.engine.device import amp_enabled, pick_device
from reinlite.engine.optim import build_optimizer, ndim_decay_groups, poly_lr, set_lr, warmup_cosine_lr
from reinlite.engine.step import train_step
from reinlite.engine.train import train
from reinlite.models.segmentor import build_criterion, build_model
from test_train import tiny_cfg, weights

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_step_equals_one_step_of_train_bit_for_bit(tmp_path):
    """train() for one step, and the same step taken by hand with train_step, end with the
    same trainable weights, bit for bit (grad_clip 1.0: the clip is exercised too)."""
    cfg = load_config(tiny_cfg(tmp_path, optim={"iters": 1}))
    train(cfg)
    trained = weights(tmp_path / "run")

    o, d = cfg.optim, cfg.data
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    criterion = build_criterion(cfg.loss, cfg.model.head.num_classes)
    optimizer = build_optimizer(model, o)
    trainable = [p for p in model.parameters() if p.requires_grad]
    source = build_dataset(cfg, d.source, d.source_split)
    loader = torch.utils.data.DataLoader(
        AugmentedDataset(source, TrainAugment.from_config(d)),
        batch_sampler=StepBatchSampler(len(source), o.batch_size, o.iters, cfg.seed, 0, 0, 1),
        collate_fn=collate, num_workers=0, generator=torch.Generator().manual_seed(cfg.seed))
    images, labels = next(iter(loader))
    model.train()
    torch.manual_seed(mix_seed(cfg.seed, "step", 0, 0))
    set_lr(optimizer, poly_lr(o.lr, 0, o.iters, o.poly_power))
    result = train_step(model, images, lambda out: criterion(out, labels), optimizer,
                        params=trainable, grad_clip=o.grad_clip, amp=amp_enabled(cfg.amp, images.device))

    mine = trainable_state_dict(model)
    assert mine.keys() == trained.keys()
    for k in mine:
        assert torch.equal(mine[k], trained[k]), k
    assert set(result.losses) >= {"loss", "loss_cls", "loss_mask", "loss_dice"}
    assert result.loss.requires_grad is False and float(result.grad_norm) > 0


def _linear(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


def test_clipping_is_applied_and_the_norm_is_the_one_before_it():
    model, x = _linear(), torch.randn(8, 4) * 100
    opt = torch.optim.SGD(model.parameters(), lr=0.0)   # lr 0: the step leaves the weights alone
    result = train_step(model, x, lambda y: (y ** 2).sum(), opt, grad_clip=0.5)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert float(result.grad_norm) > 10 and float(clipped) == pytest.approx(0.5, rel=1e-4)

    # without a clip: the gradients are exactly those of a plain backward
    ref, model = _linear(), _linear()
    (ref(x) ** 2).sum().backward()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    result = train_step(model, x, lambda y: (y ** 2).sum(), opt, grad_clip=None)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad)
    assert float(result.grad_norm) == pytest.approx(
        float(torch.linalg.vector_norm(torch.stack([q.grad.norm() for q in ref.parameters()]))))


def test_the_step_is_zero_grad_backward_clip_adamw():
    """The same float operations, in the same order, as written out by hand."""
    x = torch.randn(8, 4)
    a, b = _linear(), _linear()
    opt_a = build_optimizer(a.parameters(), lr=1e-2, weight_decay=0.05)
    opt_b = build_optimizer(b.parameters(), lr=1e-2, weight_decay=0.05)
    for _ in range(3):
        train_step(a, x, lambda y: y.square().mean(), opt_a, grad_clip=0.1)
        loss = b(x).square().mean()
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(b.parameters()), 0.1)
        opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_check_loss_stops_before_anything_changes_and_tuples_are_spread():
    model = _linear()
    before = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(model.parameters(), lr=1.0)

    def refuse(loss):
        raise RuntimeError(f"stop at {float(loss.detach()):.1f}")

    with pytest.raises(RuntimeError, match="stop at"):
        train_step(lambda x, scale: model(x) * scale, (torch.ones(2, 4), 2.0),
                   lambda y: y.sum(), opt, check_loss=refuse)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters())


def test_amp_autocasts_the_forward_only_and_is_off_on_a_cpu_by_default():
    cpu = torch.device("cpu")
    assert amp_enabled("auto", cpu) is False and amp_enabled("none", cpu) is False
    assert amp_enabled(None, cpu) is False and amp_enabled("bf16", cpu) is True
    assert amp_enabled("auto", torch.device("cuda", 0)) is True
    with pytest.raises(ConfigError, match="amp='fp8'"):
        amp_enabled("fp8", cpu)
    seen = {}

    def loss_fn(y):
        seen["dtype"], seen["autocast"] = y.dtype, torch.is_autocast_enabled("cpu")
        return y.float().sum()

    model = _linear()
    train_step(model, torch.randn(2, 4), loss_fn, build_optimizer(model.parameters(), lr=1e-3), amp=True)
    assert seen == {"dtype": torch.bfloat16, "autocast": False}   # forward in bf16, loss outside
    train_step(model, torch.randn(2, 4), loss_fn, build_optimizer(model.parameters(), lr=1e-3), amp=False)
    assert seen["dtype"] == torch.float32


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="not a device"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU"):
            pick_device("cuda")


def test_build_optimizer_from_a_model_or_plain_settings(tmp_path):
    cfg = load_config(tiny_cfg(tmp_path, model={"method": "full"}, optim={"backbone_lr_mult": 0.1}))
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg.optim)
    # every group starts at lr * its lr_mult: the backbone's at a tenth
    assert sorted({round(g["lr"] / cfg.optim.lr, 9) for g in opt.param_groups}) == [0.1, 1.0]
    assert all(g["betas"] == tuple(cfg.optim.betas) for g in opt.param_groups)

    lin = _linear()
    plain = build_optimizer(lin.parameters(), lr=3e-3, weight_decay=1e-4)
    g = plain.param_groups[0]
    assert (g["lr"], g["weight_decay"], g["betas"], g["eps"]) == (3e-3, 1e-4, (0.9, 0.999), 1e-8)
    groups = ndim_decay_groups(lin.parameters(), 0.05)
    opt = build_optimizer(groups, lr=1e-3, betas=(0.9, 0.95))
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]           # weight | bias
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_warmup_cosine_lr_is_the_pretraining_schedule():
    base, total, warmup = 1.5e-3, 100, 10
    assert warmup_cosine_lr(base, 0, total, warmup) == base / warmup
    assert warmup_cosine_lr(base, warmup - 1, total, warmup) == base
    assert warmup_cosine_lr(base, warmup, total, warmup) == pytest.approx(base)
    assert warmup_cosine_lr(base, total, total, warmup) == pytest.approx(1e-2 * base)
    mid = warmup + (total - warmup) // 2
    assert warmup_cosine_lr(base, mid, total, warmup) == pytest.approx(1e-2 * base + 0.5 * 0.99 * base)
    # the formula the two pretraining programs wrote out, to the bit
    for k in range(warmup, total + 1, 7):
        p = (k - warmup) / max(1, total - warmup)
        assert warmup_cosine_lr(base, k, total, warmup) == \
            1e-2 * base + 0.5 * (base - 1e-2 * base) * (1 + math.cos(math.pi * p))
