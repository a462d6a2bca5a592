"""The Rein layer against rein-method.md: equations, init, names, counts, variants."""
import math

import pytest
import torch
from torch import nn

from reinlite import Rein
from reinlite.weights import CheckpointError, load_rein_checkpoint
from reinlite.models.rein import (drop_first_column, feature_delta, instance_queries, low_rank_tokens,
                           pool_layers, token_init_bound, token_similarity)


def reference_rein(x, layer, rein, num_prefix_tokens=1):
    """An independent, loop-based reading of rein-method.md steps 1-4 (one sample, one patch at a time)."""
    tokens = rein.tokens(layer)                                   # [m, c]
    c = tokens.shape[1]
    W_T, b_T = rein.mlp_token2feat.weight, rein.mlp_token2feat.bias
    W_f, b_f = rein.mlp_delta_f.weight, rein.mlp_delta_f.bias
    out = x.clone()
    for b in range(x.shape[0]):
        for n in range(num_prefix_tokens, x.shape[1]):
            f = x[b, n]                                            # [c]
            logits = torch.stack([f @ tokens[j] / math.sqrt(c) for j in range(tokens.shape[0])])
            s = torch.exp(logits - logits.max())
            s = s / s.sum()
            dF = sum(s[j] * (tokens[j] @ W_T.T + b_T) for j in range(1, tokens.shape[0]))
            delta = (dF + f) @ W_f.T + b_f
            out[b, n] = f + rein.scale * delta
    return out


PAPER = dict(num_layers=24, embed_dim=1024, num_tokens=100, query_dim=256)


def n_params(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_parameter_counts_match_the_paper():
    assert n_params(Rein(**PAPER, rank=16)) == 2_990_081
    assert n_params(Rein(**PAPER, rank=None)) == 5_016_065
    assert n_params(Rein(**PAPER, rank=16, zero_init_delta=True)) == 2_990_080  # no scale
    assert n_params(Rein(**PAPER, rank=16, link_to_queries=False)) == 2_990_081 - 262_400 - 196_864


def test_state_dict_uses_the_release_names():
    low = Rein(**PAPER, rank=16).state_dict()
    assert set(low) == {"learnable_tokens_a", "learnable_tokens_b", "scale", "mlp_token2feat.weight",
                        "mlp_token2feat.bias", "mlp_delta_f.weight", "mlp_delta_f.bias",
                        "transform.weight", "transform.bias", "merge.weight", "merge.bias"}
    assert low["learnable_tokens_a"].shape == (24, 100, 16)
    assert low["learnable_tokens_b"].shape == (24, 16, 1024)
    assert low["scale"].shape == () and low["merge.weight"].shape == (256, 768)
    full = Rein(**PAPER).state_dict()
    assert full["learnable_tokens"].shape == (24, 100, 1024)
    assert "learnable_tokens_a" not in full
    assert "scale" not in Rein(**PAPER, zero_init_delta=True).state_dict()


def test_tokens_only_variant_drops_both_mlps():
    """The pieces ablation's first step: Delta f = S[:, 1:] T[1:] + f, no W_T, no W_f."""
    rein = Rein(2, 16, 5, rank=None, link_to_queries=False, shared_mlps=False)
    assert set(rein.state_dict()) == {"learnable_tokens", "scale"}
    assert n_params(rein) == 2 * 5 * 16 + 1
    x = torch.randn(3, 7, 16)
    f, T = x[:, 1:], rein.tokens(1)
    S = torch.softmax(f @ T.T / math.sqrt(16), dim=-1)
    expected = f + rein.scale * (S[..., 1:] @ T[1:] + f)
    torch.testing.assert_close(rein(x, 1)[:, 1:], expected)
    torch.testing.assert_close(rein(x, 1)[:, :1], x[:, :1])
    with pytest.raises(ValueError, match="zero_init_delta needs the shared MLPs"):
        Rein(2, 16, 5, shared_mlps=False, zero_init_delta=True)


def test_release_initialisation():
    full = Rein(4, 64, 50, patch_size=16)
    bound = math.sqrt(6 / (3 * 16 ** 2 + 64))
    assert token_init_bound(16, 64) == pytest.approx(bound)
    tokens = full.learnable_tokens
    assert tokens.abs().max() <= bound and tokens.abs().max() > 0.95 * bound
    assert tokens.mean().abs() < 0.1 * bound  # uniform(-v, v), not uniform(0, v)
    low = Rein(4, 64, 50, rank=8, patch_size=16)
    low_bound = math.sqrt(6 / (3 * 16 ** 2 + math.sqrt(64 * 8)))
    for t in (low.learnable_tokens_a, low.learnable_tokens_b):
        assert t.abs().max() <= low_bound and t.abs().max() > 0.9 * low_bound
    assert float(full.scale.detach()) == pytest.approx(1e-3)


def test_forward_matches_a_loop_reference_full_and_low_rank():
    for rank in (None, 3):
        rein = Rein(3, 16, 6, rank=rank, query_dim=8)
        with torch.no_grad():
            rein.scale.fill_(0.7)  # make the update visible
        x = torch.randn(2, 1 + 5, 16)
        torch.testing.assert_close(rein(x, 1), reference_rein(x, 1, rein), rtol=1e-5, atol=1e-5)


def test_similarity_is_a_softmax_over_tokens_scaled_by_sqrt_c():
    f, t = torch.randn(2, 7, 32), torch.randn(5, 32)
    s = token_similarity(f, t)
    assert s.shape == (2, 7, 5)
    torch.testing.assert_close(s.sum(-1), torch.ones(2, 7))
    torch.testing.assert_close(s, torch.softmax(f @ t.T / math.sqrt(32), dim=-1))
    # use_softmax=False: the raw dot product, as in the release
    torch.testing.assert_close(token_similarity(f, t, use_softmax=False), f @ t.T)


def test_first_column_in_normaliser_but_its_value_never_used():
    rein = Rein(1, 8, 4, query_dim=4)
    f = torch.randn(1, 3, 8)
    s = token_similarity(f, rein.tokens(0))
    kept = drop_first_column(s)
    assert kept.shape == (1, 3, 3)
    torch.testing.assert_close(kept.sum(-1), 1 - s[..., 0])  # token 0 stays in the normaliser
    # the token->feature MLP only ever sees tokens 1..m-1
    seen = []
    probe = nn.Linear(8, 8)
    probe.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    feature_delta(f, rein.tokens(0), probe, rein.mlp_delta_f)
    assert seen == [torch.Size([3, 8])]
    # a patch aligned with token 0 (the sink) gets almost no token update: Delta f ~ W_f f + b_f
    with torch.no_grad():
        rein.learnable_tokens[0, 0] = 50 * torch.ones(8)
    sink_patch = torch.ones(1, 1, 8)
    delta = feature_delta(sink_patch, rein.tokens(0), rein.mlp_token2feat, rein.mlp_delta_f)
    torch.testing.assert_close(delta, rein.mlp_delta_f(sink_patch), atol=1e-5, rtol=1e-5)


def test_prefix_rows_untouched_and_output_shape():
    rein = Rein(2, 16, 5, rank=4, query_dim=8)
    x = torch.randn(3, 5 + 20, 16)  # cls + 4 registers
    y = rein(x, 0, num_prefix_tokens=5)
    assert y.shape == x.shape
    assert torch.equal(y[:, :5], x[:, :5])
    assert not torch.equal(y[:, 5:], x[:, 5:])
    assert torch.equal(rein(x[:, 5:], 0, num_prefix_tokens=0), y[:, 5:])


def test_zero_init_delta_is_the_identity():
    rein = Rein(2, 16, 5, rank=4, zero_init_delta=True)
    x = torch.randn(2, 9, 16)
    assert torch.equal(rein(x, 1), x)
    assert rein.scale == 1.0 and not isinstance(rein.scale, nn.Parameter)


def test_low_rank_tokens_are_a_product():
    rein = Rein(3, 16, 5, rank=2)
    torch.testing.assert_close(rein.tokens(1), rein.learnable_tokens_a[1] @ rein.learnable_tokens_b[1])
    assert rein.tokens().shape == (3, 5, 16)
    assert torch.linalg.matrix_rank(rein.tokens(0)) <= 2
    torch.testing.assert_close(low_rank_tokens(rein.learnable_tokens_a, rein.learnable_tokens_b), rein.tokens())


def test_query_pooling_order_is_max_mean_last_per_channel():
    x = torch.tensor([[[1.0, 10.0]], [[3.0, 20.0]], [[2.0, 60.0]]])  # [L=3, m=1, Q=2]
    pooled = pool_layers(x)
    assert pooled.tolist() == [[3.0, 2.0, 2.0, 60.0, 30.0, 60.0]]


def test_queries_use_all_tokens_and_the_merge():
    rein = Rein(4, 16, 6, rank=3, query_dim=8)
    q = rein.queries()
    assert q.shape == (6, 8)
    X = rein.transform(rein.tokens())  # [L, m, Q]
    manual = torch.stack([X.max(0).values, X.mean(0), X[-1]], dim=-1).reshape(6, 24)
    torch.testing.assert_close(q, rein.merge(manual))
    torch.testing.assert_close(q, instance_queries(rein.tokens(), rein.transform, rein.merge))
    assert Rein(4, 16, 6, link_to_queries=False).queries() is None


def test_bfloat16_forward_and_queries():
    rein = Rein(2, 16, 5, rank=4, query_dim=8).to(torch.bfloat16)
    x = torch.randn(2, 10, 16, dtype=torch.bfloat16)
    assert rein(x, 0).dtype == torch.bfloat16
    assert rein.queries().dtype == torch.bfloat16


def test_gradients_reach_every_parameter():
    rein = Rein(2, 16, 5, rank=4, query_dim=8)
    loss = rein(torch.randn(2, 10, 16), 1).square().sum() + rein.queries().square().sum()
    loss.backward()
    # layer 0's tokens feed the queries only; layer 1's feed both paths
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rein.parameters())


def test_bad_arguments_give_clear_errors():
    rein = Rein(2, 16, 5)
    with pytest.raises(IndexError, match="layer 2 is out of range"):
        rein(torch.randn(1, 3, 16), 2)
    with pytest.raises(ValueError, match="16 channels"):
        rein(torch.randn(1, 3, 8), 0)
    with pytest.raises(ValueError, match="num_tokens >= 2"):
        Rein(2, 16, 1)


def test_load_release_checkpoint_whole_model_and_rein_only(tmp_path):
    src = Rein(3, 16, 5, rank=2, query_dim=8)
    whole = {f"backbone.reins.{k}": v for k, v in src.state_dict().items()}
    whole["decode_head.conv_seg.weight"] = torch.zeros(3)
    path = tmp_path / "iter_40000.pth"
    torch.save({"state_dict": whole, "meta": {"iter": 40000}}, path)
    dst = load_rein_checkpoint(Rein(3, 16, 5, rank=2, query_dim=8), path)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    load_rein_checkpoint(Rein(3, 16, 5, rank=2, query_dim=8), src.state_dict())


def test_checkpoint_with_wrong_keys_is_reported(tmp_path):
    src = Rein(3, 16, 5, rank=None, query_dim=8).state_dict()
    with pytest.raises(CheckpointError) as err:
        load_rein_checkpoint(Rein(3, 16, 5, rank=2, query_dim=8), src)
    message = str(err.value)
    assert "missing keys" in message and "learnable_tokens_a" in message
    assert "unexpected keys" in message and "learnable_tokens" in message
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_rein_checkpoint(Rein(3, 16, 6, rank=None, query_dim=8), src)


class _Payload:
    pass


def test_checkpoint_needing_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Rein(2, 8, 3).state_dict(), "obj": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_rein_checkpoint(Rein(2, 8, 3), path)


def test_from_config_is_the_keyword_constructor():
    from reinlite.config import ReinConfig

    cfg = ReinConfig(num_tokens=5, rank=2, query_dim=8)
    torch.manual_seed(0)
    a = Rein.from_config(3, 16, cfg, patch_size=8)
    torch.manual_seed(0)
    b = Rein(3, 16, num_tokens=5, rank=2, query_dim=8, patch_size=8)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
