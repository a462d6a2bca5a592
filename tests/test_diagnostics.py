"""Rein's diagnostics: the delta ratio against the equation, and the training log's fields."""
import json

import pytest
import torch

from reinlite import Rein
from reinlite.models.backbone import build_backbone
from reinlite.config import load_config
from reinlite.engine.diagnostics import mean_pairwise_cosine, query_cosine, record_delta_ratios, rein_scale
from reinlite.engine.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_delta_ratio_is_the_norm_of_s_delta_f_over_f():
    bb = build_backbone("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                        depth=3, embed_dim=32, num_heads=2, out_indices=(0, 1, 2), strides=(4, 8, 16),
                        rein=dict(num_tokens=5, rank=None, query_dim=16))
    with torch.no_grad():
        bb.rein.scale.fill_(0.25)
    images = torch.randn(2, 3, 32, 32)
    seen = {}

    def capture(layer, module, inputs, output):
        seen[layer] = output.detach().clone()       # block output f (with the cls row)

    hooks = [blk.register_forward_hook(lambda m, i, o, k=k: capture(k, m, i, o), prepend=True)
             for k, blk in enumerate(bb.vit.blocks)]
    with torch.no_grad(), record_delta_ratios(bb) as ratios:
        bb(images)
    for h in hooks:
        h.remove()
    assert sorted(ratios) == [0, 1, 2]
    for layer, x in seen.items():
        f = x[:, 1:]
        with torch.no_grad():
            expected = (0.25 * bb.rein.delta(f, layer)).norm() / f.norm()
        assert ratios[layer] == pytest.approx(float(expected), rel=1e-4)
    # outside the context nothing is recorded; disabled records nothing
    with torch.no_grad(), record_delta_ratios(bb, enabled=False) as off:
        bb(images)
    assert off == {} and len(ratios) == 3


def test_query_cosine_and_scale():
    rein = Rein(2, 8, num_tokens=4, query_dim=8)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_pairwise_cosine(q) == pytest.approx((0 + 2 * 2 ** -0.5) / 3)
    wrapper = torch.nn.Module()
    wrapper.rein = rein
    assert rein_scale(wrapper) == pytest.approx(1e-3)
    assert -1 <= query_cosine(wrapper) <= 1
    assert query_cosine(torch.nn.Linear(2, 2)) is None and rein_scale(torch.nn.Linear(2, 2)) is None


@pytest.mark.parametrize("method", ["rein", "frozen"])
def test_training_log_carries_reins_diagnostics(tmp_path, tiny_config, method):
    cfg = tiny_config(tmp_path, optim={"iters": 4}, train={"log_every": 2})
    cfg["model"]["method"] = method
    if method != "rein":
        cfg["model"].pop("rein")
    train(load_config(cfg))
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == [1, 2, 4]
    for e in lines:
        if method == "rein":
            assert isinstance(e["rein_scale"], float) and len(e["rein_delta_ratio_layers"]) == 4
            assert all(r > 0 for r in e["rein_delta_ratio_layers"])
            assert e["rein_delta_ratio"] == pytest.approx(sum(e["rein_delta_ratio_layers"]) / 4)
            assert -1 <= e["query_cosine"] <= 1
        else:
            assert "rein_scale" not in e and "rein_delta_ratio" not in e
