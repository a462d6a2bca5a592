"""The frozen ViT + Rein backbone: shapes, freezing, weights loading, families, errors."""
import pytest
import torch
import torch.nn.functional as F

from reinlite import build_backbone, parameter_table
from reinlite.models.backbone import create_vit
from reinlite.weights import adapt_state_dict
from reinlite.weights import CheckpointError

TINY = dict(img_size=64, patch_size=16, depth=4, out_indices=(0, 1, 2, 3),
            rein=dict(num_tokens=6, rank=2, query_dim=8))


def tiny(name="vit_small_patch14_dinov2", **overrides):
    options = {**TINY, **overrides}
    return build_backbone(name, **options)


def test_shapes_at_strides_4_8_16_32_and_queries():
    bb = tiny()
    feats, queries = bb(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 384, 16, 16), (2, 384, 8, 8), (2, 384, 4, 4), (2, 384, 2, 2)]
    assert queries.shape == (6, 8)


def test_release_configuration_counts_2_99M_trainable():
    with torch.device("meta"):  # shapes only: no 1.2 GB of random weights
        bb = build_backbone("vit_large_patch14_dinov2", pretrained=False, img_size=512, patch_size=16,
                            out_indices=(7, 11, 15, 23), rein=dict(num_tokens=100, rank=16, query_dim=256))
    assert sum(p.numel() for p in bb.trainable_parameters()) == 2_990_081
    assert bb.patch_size == 16 and tuple(bb.vit.patch_embed.grid_size) == (32, 32)
    assert bb.vit.pos_embed.shape == (1, 1 + 32 * 32, 1024)


def test_non_square_input():
    feats, _ = tiny()(torch.randn(1, 3, 64, 128))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 32), (8, 16), (4, 8), (2, 4)]


def test_size_not_divisible_by_patch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"image size 70x64 is not divisible by the patch size 16"):
        tiny()(torch.randn(1, 3, 70, 64))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny()(torch.randn(3, 64, 64))


def test_only_rein_trains_and_backbone_is_bit_identical_after_steps():
    bb = tiny().train()
    assert not bb.vit.training and bb.rein.training
    assert all(not p.requires_grad for p in bb.vit.parameters())
    assert {id(p) for p in bb.trainable_parameters()} == {id(p) for p in bb.rein.parameters()}
    before = {k: v.clone() for k, v in bb.vit.state_dict().items()}
    rein_before = bb.rein.learnable_tokens_a.detach().clone()
    optimizer = torch.optim.AdamW(bb.parameters(), lr=1e-2, weight_decay=0.05)
    for _ in range(3):
        feats, queries = bb(torch.randn(2, 3, 64, 64))
        loss = sum(f.square().mean() for f in feats) + queries.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in bb.vit.parameters())
    assert all(torch.equal(before[k], v) for k, v in bb.vit.state_dict().items())
    assert not torch.equal(rein_before, bb.rein.learnable_tokens_a)


def test_without_rein_is_the_plain_frozen_vit():
    bb = tiny(rein=None)
    x = torch.randn(1, 3, 64, 64)
    feats, queries = bb(x)
    assert queries is None and bb.trainable_parameters() == []
    plain = bb.vit.forward_intermediates(x, indices=[3], norm=False, intermediates_only=True)[0]
    torch.testing.assert_close(F.interpolate(plain, scale_factor=0.5, mode="bilinear"), feats[3])


def test_zero_init_rein_leaves_features_unchanged():
    x = torch.randn(1, 3, 64, 64)
    with_rein = tiny(rein=dict(num_tokens=6, rank=2, zero_init_delta=True))
    plain = tiny(rein=None)
    plain.vit.load_state_dict(with_rein.vit.state_dict())
    for a, b in zip(with_rein(x)[0], plain(x)[0]):
        torch.testing.assert_close(a, b)


def test_rein_sees_every_block_and_prefix_tokens_pass_through():
    bb = tiny("vit_small_patch14_reg4_dinov2")
    assert bb.num_prefix_tokens == 5
    seen = []
    original = bb.rein.forward
    bb.rein.forward = lambda x, layer, num_prefix_tokens=1: (seen.append((layer, num_prefix_tokens)), original(x, layer, num_prefix_tokens))[1]
    bb(torch.randn(1, 3, 64, 64))
    assert seen == [(i, 5) for i in range(4)]


def test_bfloat16():
    bb = tiny().to(torch.bfloat16)
    feats, queries = bb(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16))
    assert all(f.dtype == torch.bfloat16 for f in feats) and queries.dtype == torch.bfloat16


@pytest.mark.parametrize("name, prefix", [
    ("eva02_small_patch14_224.mim_in22k", 1),
    ("vit_base_patch16_clip_224.openai", 1),
    ("deit_tiny_distilled_patch16_224", 2),
    ("samvit_base_patch16", 0),
])
def test_other_vfm_families(name, prefix):
    extra = dict(global_attn_indexes=(3,)) if "sam" in name else {}
    bb = build_backbone(name, img_size=64, patch_size=16, depth=4,
                        rein=dict(num_tokens=4, rank=2, query_dim=8), **extra)
    feats, queries = bb(torch.randn(1, 3, 64, 64 + 2 * bb.patch_size))
    assert bb.num_prefix_tokens == prefix
    assert len(feats) == 4 and feats[0].shape[-2:] == (16, 16 + 2 * bb.patch_size // 4)
    assert queries.shape == (4, 8)


def _dinov2_original_state_dict(depth=4, registers=0):
    """A state dict in the DINOv2 authors' key names (patch 14, 37x37 grid, mask_token)."""
    vit = create_vit("vit_small_patch14_dinov2", img_size=518, depth=depth)
    state = vit.state_dict()
    state["mask_token"] = torch.zeros(1, 384)
    if registers:
        state["register_tokens"] = torch.randn(1, registers, 384)
        state.pop("reg_token", None)
    return state


def test_local_dinov2_release_file_with_backbone_prefix_resized_to_patch_16(tmp_path):
    state = _dinov2_original_state_dict()
    path = tmp_path / "dinov2_vits14.pth"
    torch.save({f"backbone.{k}": v for k, v in state.items()}, path)
    bb = tiny(pretrained=str(path), img_size=512, rein=None)
    kernel = bb.vit.patch_embed.proj.weight
    assert kernel.shape == (384, 3, 16, 16)
    expected = F.interpolate(state["patch_embed.proj.weight"], size=(16, 16), mode="bicubic", align_corners=False)
    torch.testing.assert_close(kernel, expected)
    assert bb.vit.pos_embed.shape == (1, 1 + 32 * 32, 384)
    torch.testing.assert_close(bb.vit.pos_embed[:, 0], state["pos_embed"][:, 0])  # cls position kept
    torch.testing.assert_close(bb.vit.blocks[2].attn.qkv.weight, state["blocks.2.attn.qkv.weight"])


def test_local_dinov2_with_registers_in_authors_names(tmp_path):
    state = _dinov2_original_state_dict(registers=4)
    path = tmp_path / "dinov2_vits14_reg4.pth"
    torch.save(state, path)
    bb = tiny("vit_small_patch14_reg4_dinov2", pretrained=str(path), img_size=518, patch_size=14, rein=None)
    torch.testing.assert_close(bb.vit.reg_token, state["register_tokens"])
    torch.testing.assert_close(bb.vit.cls_token, state["cls_token"] + state["pos_embed"][:, 0])


def test_local_timm_safetensors_roundtrip(tmp_path):
    from safetensors.torch import save_file

    src = create_vit("vit_small_patch14_dinov2", img_size=64, patch_size=16, depth=4)
    path = tmp_path / "vits.safetensors"
    save_file(src.state_dict(), str(path))
    bb = tiny(pretrained=path)
    for k, v in src.state_dict().items():
        assert torch.equal(bb.vit.state_dict()[k], v), k


def test_wrong_weights_file_names_the_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, path)
    with pytest.raises(CheckpointError, match=r"other.pth does not match.*\n  missing keys"):
        tiny(pretrained=str(path))
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        tiny(pretrained=str(tmp_path / "nope.safetensors"))


def test_online_weights_offline_points_to_local_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="pretrained='/path/to/weights"):
        build_backbone("vit_tiny_patch16_224", pretrained=True, img_size=64, depth=2)


def test_adapt_state_dict_resamples_the_position_grid():
    vit = create_vit("vit_small_patch14_dinov2", img_size=(32, 64), patch_size=16, depth=1)
    state = create_vit("vit_small_patch14_dinov2", img_size=64, patch_size=16, depth=1).state_dict()
    adapted = adapt_state_dict(state, vit)
    assert adapted["pos_embed"].shape == vit.pos_embed.shape == (1, 1 + 2 * 4, 384)


def test_parameter_table_lists_trainable_and_total():
    table = parameter_table(tiny())
    assert "| rein |" in table and "| vit | 0 |" in table and "**all**" in table


def test_shallow_vit_repeats_a_block_across_strides():
    bb = build_backbone("vit_small_patch14_dinov2", img_size=64, patch_size=16, depth=2,
                        rein=dict(num_tokens=4, rank=2, query_dim=8))
    assert bb.out_indices == (0, 0, 1, 1)
    feats, _ = bb(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]
