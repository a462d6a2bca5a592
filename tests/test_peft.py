"""The baselines (frozen, full, LoRA, VPT, AdaptFormer): what trains, shapes, counts, parity."""
import copy

import pytest
import torch
import torch.nn.functional as F

from reinlite.models.baselines import METHODS, build_peft_backbone, peft_parameter_count

TINY = dict(img_size=32, patch_size=16, out_indices=(0, 1, 2, 3),
            model_kwargs=dict(depth=4, embed_dim=48, num_heads=2, init_values=1.0))  # layer scale 1: blocks matter
KWARGS = dict(rein=dict(num_tokens=6, rank=2, query_dim=8), lora=dict(rank=2), vpt=dict(num_prompts=3),
              adaptformer=dict(bottleneck=4))


def tiny(method, name="vit_small_patch14_dinov2", **overrides):
    return build_peft_backbone(method, name, **{**TINY, **KWARGS.get(method, {}), **overrides})


def _randomise_zero_init(bb):
    """Make the zero-initialised halves non-zero so that parity tests see the method act."""
    with torch.no_grad():
        for name, p in bb.peft.named_parameters():
            if not p.abs().sum():
                p.normal_(0, 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_shapes_queries_and_only_the_method_trains(method):
    bb = tiny(method).train()
    feats, queries = bb(torch.randn(2, 3, 32, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 48, 8, 16), (2, 48, 4, 8), (2, 48, 2, 4), (2, 48, 1, 2)]
    assert (queries is None) == (method != "rein")
    assert all(f.requires_grad == (method != "frozen") for f in feats)  # frozen: no graph through the ViT
    trainable = {id(p) for p in bb.trainable_parameters()}
    expected = {"rein": lambda: bb.rein.parameters(), "frozen": lambda: [], "full": lambda: bb.vit.parameters(),
                }.get(method, lambda: bb.peft.parameters())()
    assert trainable == {id(p) for p in expected}
    assert bb.vit.training == (method == "full")
    if method not in ("full", "rein"):
        assert all(not p.requires_grad for p in bb.vit.parameters())


def test_paper_counts_for_dinov2_large():
    # Table 3 of the paper: LoRA 0.79M (r=8), AdaptFormer 3.17M, VPT 3.69M, Rein 2.99M; full 304.20M
    expected = dict(rein=2_990_081, frozen=0, full=304_198_656, lora=786_432, vpt=3_686_400,
                    adaptformer=3_171_840)
    from dataclasses import asdict

    from reinlite.config import load_config

    release_rein = asdict(load_config("gta2cs_dinov2_large").model.rein)  # m 100, r 16, Q 256
    args = dict(rein=release_rein, lora=dict(rank=8), vpt=dict(num_prompts=150), adaptformer=dict(bottleneck=64))
    for method, count in expected.items():
        with torch.device("meta"):  # shapes only
            bb = build_peft_backbone(method, "vit_large_patch14_dinov2", img_size=512, patch_size=16,
                                     out_indices=(7, 11, 15, 23), **args.get(method, {}))
        assert peft_parameter_count(bb) == count, method


@pytest.mark.parametrize("method", ["frozen", "lora", "vpt", "adaptformer", "full"])
def test_backbone_weights_bit_identical_after_steps_except_full(method):
    bb = tiny(method).train()
    before = copy.deepcopy(bb.vit.state_dict())
    params = bb.trainable_parameters()
    head = torch.nn.Conv2d(48, 2, 1)  # so that "frozen" has something to train too
    optimizer = torch.optim.AdamW(params + list(head.parameters()), lr=1e-2, weight_decay=0.05)
    peft_before = [p.detach().clone() for p in params]
    for _ in range(3):
        feats, _ = bb(torch.randn(2, 3, 32, 32))
        loss = sum(head(f).square().mean() for f in feats)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = bb.vit.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if method == "full":
        assert changed  # the whole ViT trains
    else:
        assert changed == []
        assert all(p.grad is None for p in bb.vit.parameters())  # no grads built for frozen weights
        assert all(not torch.equal(a, b) for a, b in zip(peft_before, params))


@pytest.mark.parametrize("method", ["lora", "adaptformer"])
def test_zero_init_methods_start_as_the_frozen_backbone(method):
    torch.manual_seed(0)
    frozen = tiny("frozen")
    bb = tiny(method)
    bb.vit.load_state_dict(frozen.vit.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(frozen(x)[0], bb(x)[0]):
        assert torch.equal(a, b)


def test_vpt_without_prompts_is_the_frozen_backbone_and_prompts_are_removed():
    frozen = tiny("frozen")
    bb = tiny("vpt", num_prompts=0)
    bb.vit.load_state_dict(frozen.vit.state_dict())
    x = torch.randn(1, 3, 32, 32)
    for a, b in zip(frozen(x)[0], bb(x)[0]):
        assert torch.equal(a, b)
    bb = tiny("vpt", num_prompts=5)
    bb.vit.load_state_dict(frozen.vit.state_dict())
    feats, _ = bb(x)
    assert feats[2].shape == frozen(x)[0][2].shape  # the prompt rows are gone again
    assert not torch.allclose(feats[3], frozen(x)[0][3])


def _tokens(vit, x):
    return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))


@pytest.mark.parametrize("name", ["vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"])
def test_vpt_matches_a_hand_written_deep_prompt_loop(name):
    bb = tiny("vpt", name=name, num_prompts=3)
    plain = tiny("frozen", name=name)
    plain.vit.load_state_dict(bb.vit.state_dict())
    vit, k = plain.vit, plain.num_prefix_tokens
    assert k == (5 if "reg4" in name else 1)  # cls (+ 4 registers): prompts go after all of them
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        t = _tokens(vit, x)
        for i, blk in enumerate(vit.blocks):
            p = bb.peft.prompts[i].expand(2, -1, -1)
            t = blk(torch.cat([t[:, :k], p, t[:, k:]], 1))
            t = torch.cat([t[:, :k], t[:, k + 3:]], 1)
        ref = t[:, k:].transpose(1, 2).reshape(2, 48, 2, 2)
        out = bb.forward_patch_maps(x)[3]
    torch.testing.assert_close(out, ref)


def test_adaptformer_parity_with_the_parallel_adapter_equation():
    bb = tiny("adaptformer")
    _randomise_zero_init(bb)
    plain = tiny("frozen")
    plain.vit.load_state_dict(bb.vit.state_dict())
    x = torch.randn(2, 3, 32, 32)
    a = bb.peft
    with torch.no_grad():
        t = _tokens(plain.vit, x)
        for i, blk in enumerate(plain.vit.blocks):
            t1 = t + blk.ls1(blk.attn(blk.norm1(t)))                                  # x'
            t = t1 + blk.ls2(blk.mlp(blk.norm2(t1))) + 0.1 * a.up[i](F.relu(a.down[i](t1)))
        ref = t[:, 1:].transpose(1, 2).reshape(2, 48, 2, 2)
        out = bb.forward_patch_maps(x)[3]
    torch.testing.assert_close(out, ref)


def test_lora_equals_a_merged_qkv_weight():
    bb = tiny("lora", rank=2, alpha=4.0)
    _randomise_zero_init(bb)
    merged = tiny("frozen")
    merged.vit.load_state_dict(bb.vit.state_dict())
    lora = bb.peft["qkv"]
    assert lora.scaling == 2.0
    with torch.no_grad():
        for i, blk in enumerate(merged.vit.blocks):
            blk.attn.qkv.weight += lora.scaling * lora.lora_b[i] @ lora.lora_a[i]  # W + (alpha/r) B A
        x = torch.randn(2, 3, 32, 32)
        for a, b in zip(bb(x)[0], merged(x)[0]):
            torch.testing.assert_close(a, b)


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown method 'prefix'"):
        build_peft_backbone("prefix", "vit_small_patch14_dinov2", **TINY)


def test_a_baseline_is_one_registry_entry(monkeypatch):
    from functools import partial

    from reinlite.models import baselines

    def bias_only(bb, scale=1.0):  # a made-up method: one trainable bias on the last block's output
        bias = torch.nn.Parameter(torch.zeros(bb.embed_dim))
        bb.vit.blocks[-1].register_forward_hook(lambda m, i, out: out + scale * bias)
        return torch.nn.ParameterList([bias])

    monkeypatch.setitem(baselines.ADAPTERS, "bias", bias_only)
    monkeypatch.setitem(baselines.METHODS, "bias", partial(baselines.PeftBackbone, method="bias"))
    bb = tiny("bias", scale=2.0)
    assert peft_parameter_count(bb) == 48 and bb.method == "bias"
    assert isinstance(bb, baselines.ViTBackbone) and not hasattr(bb, "rein")  # no Rein under the baselines
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        tiny("nope")
