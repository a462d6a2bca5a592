"""The self-supervised course backbone's pretraining (reinlite.experiments.pretrain_mae)."""
import hashlib
import json
from pathlib import Path

import pytest
import torch

import reinlite.weights as B
from reinlite import build_backbone
from reinlite.experiments import corpus
from reinlite.experiments import pretrain_mae as M

pytestmark = pytest.mark.usefixtures("one_thread")
WEIGHTS = Path(B.__file__).parent
needs_weights = pytest.mark.skipif(not (WEIGHTS / "course_vit_mae.safetensors").is_file(),
                                   reason="course_vit_mae weights not shipped yet")

TINY = ["--tiny", "--batch", "4", "--views", "2", "--warmup", "1", "--dec-dim", "16",
        "--dec-depth", "1", "--dec-heads", "2", "--log-every", "1"]


def test_patchify_and_sincos():
    x = torch.arange(2 * 3 * 16 * 8, dtype=torch.float32).reshape(2, 3, 16, 8)
    p = M.patchify(x, 8)
    assert p.shape == (2, 2, 8 * 8 * 3)
    assert torch.equal(p[1, 1].reshape(8, 8, 3).permute(2, 0, 1), x[1, :, 8:16, :])
    pos = M.sincos_pos_embed(2, 4, 8)
    assert pos.shape == (8, 8)
    assert torch.allclose(pos[:, :4][:4], pos[:, :4][0].expand(4, -1))  # same row -> same row code
    with pytest.raises(ValueError, match="divisible by 4"):
        M.sincos_pos_embed(2, 2, 6)


def test_encoder_sees_only_visible_patches_and_loss_is_on_masked_ones():
    torch.manual_seed(0)
    model = M.MaskedAutoencoder(corpus.build_vit(embed_dim=32, depth=1, num_heads=2, img_size=(16, 32)),
                                dec_dim=16, dec_depth=1, dec_heads=2)
    assert not model.vit.pos_embed.requires_grad
    x = torch.randn(2, 3, 16, 32)
    keep = M.random_keep(2, 8, 2, torch.Generator().manual_seed(0))
    assert model.encode(x, keep).shape == (2, 1 + 2, 32)
    # changing a masked patch changes no encoder output
    masked = [j for j in range(8) if j not in keep[0].tolist()][0]
    x2 = x.clone()
    r, c = divmod(masked, 4)
    x2[0, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] += 5.0
    assert torch.allclose(model.encode(x, keep), model.encode(x2, keep))
    pred, mask = model(x, keep)
    assert pred.shape == (2, 8, 192) and mask.sum() == 2 * 6
    assert torch.equal(mask[0, keep[0]], torch.zeros(2))
    # the loss ignores predictions at visible patches
    pred2 = pred.detach().clone()
    pred2[0, keep[0]] += 100.0
    assert M.mae_loss(pred2, x, mask, 8) == pytest.approx(float(M.mae_loss(pred.detach(), x, mask, 8)))


def test_corpus_is_deterministic_and_label_free():
    ds = corpus.ImageCorpus(0, 4, stream=M.MAE_STREAM, views=3, size=(16, 32), full=(32, 64))
    a, b = ds[1], ds[1]
    assert a.shape == (3, 3, 16, 32) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(ds[0], ds[1])


@pytest.mark.slow
def test_tiny_run_resumes_exactly_exports_and_loads(tmp_path, monkeypatch):
    straight, split, out = tmp_path / "a", tmp_path / "b", tmp_path / "w"
    assert M.main(["--out", str(straight), "--steps", "3", *TINY]) == 0
    args = ["--out", str(split), "--steps", "3", *TINY]
    M.main([*args, "--max-minutes", "0"])             # stops after one step, checkpointed
    assert torch.load(split / "ckpt.pt", weights_only=True)["step"] == 1
    with pytest.raises(M.PretrainError, match="--resume"):
        M.main(args)                                  # an existing run is never silently resumed
    with pytest.raises(M.PretrainError, match="--lr"):
        M.main([*args, "--resume", "--lr", "0.5"])
    M.main([*args, "--resume"])
    ca = torch.load(straight / "ckpt.pt", weights_only=True)
    cb = torch.load(split / "ckpt.pt", weights_only=True)
    assert cb["step"] == 3
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k     # exact resume
    assert cb["cpu"] > 0 and cb["elapsed"] > 0
    M.main(["--out", str(split), "--export", str(out), "--figure", str(tmp_path / "recon.png")])
    assert (tmp_path / "recon.png").stat().st_size > 1000
    meta = json.loads((out / "course_vit_mae.json").read_text())
    assert meta["steps"] == 3 and meta["seed"] == 0 and meta["images_seen"] == 12
    assert "reinlite pretrain-mae" in meta["command"] and "--steps 3" in meta["command"]
    assert {"sha256", "cpu_minutes", "wall_minutes", "timm_kwargs"} <= set(meta)
    from safetensors.torch import load_file

    sd = load_file(str(out / "course_vit_mae.safetensors"))
    assert all(not k.startswith(("dec_", "mask_token")) for k in sd)  # the encoder only
    vit = corpus.build_vit(**{k: v for k, v in meta["timm_kwargs"].items() if k != "img_size"},
                           img_size=tuple(meta["timm_kwargs"]["img_size"]))
    vit.load_state_dict(sd)
    monkeypatch.setattr(B, "WEIGHTS_DIR", out)
    bb = build_backbone("course_vit_mae", pretrained=True, img_size=(16, 32))
    assert bb.embed_dim == 32 and torch.equal(bb.vit.pos_embed, sd["pos_embed"])


def test_random_course_vit_mae_has_the_course_shape_without_its_record(tmp_path, monkeypatch):
    (tmp_path / "course_vit.json").write_text((WEIGHTS / "course_vit.json").read_text())
    monkeypatch.setattr(B, "WEIGHTS_DIR", tmp_path)
    bb = build_backbone("course_vit_mae", pretrained=False, img_size=(64, 128))
    assert (bb.embed_dim, len(bb.vit.blocks), bb.patch_size) == (192, 6, 8)
    with pytest.raises(FileNotFoundError, match="pretrain_mae"):
        build_backbone("course_vit_mae", pretrained=True)


@needs_weights
def test_shipped_course_vit_mae_loads_offline_by_name(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from safetensors.torch import load_file

    meta = json.loads((WEIGHTS / "course_vit_mae.json").read_text())
    path = WEIGHTS / "course_vit_mae.safetensors"
    assert path.stat().st_size <= 25e6
    assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"]
    for key in ("command", "seed", "steps", "wall_minutes", "cpu_minutes", "objective"):
        assert key in meta, key
    assert meta["timm_kwargs"] == json.loads((WEIGHTS / "course_vit.json").read_text())["timm_kwargs"]
    bb = build_backbone("course_vit_mae", pretrained=True, img_size=(128, 256),
                        rein=dict(num_tokens=8, rank=4, query_dim=32))
    sd = load_file(str(path))
    assert set(sd) == set(bb.vit.state_dict())
    course = build_backbone("course_vit", pretrained=True)
    assert not torch.equal(course.vit.patch_embed.proj.weight, bb.vit.patch_embed.proj.weight)
    with torch.no_grad():
        feats, queries = bb(torch.randn(1, 3, 128, 256))
    assert feats[2].shape == (1, 192, 8, 16) and queries.shape == (8, 32)
