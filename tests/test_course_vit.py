"""The shipped course backbone (reinlite/weights/course_vit.*) and its pretraining (reinlite pretrain)."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import reinlite.weights as B
from reinlite import build_backbone
from reinlite.weights import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "reinlite" / "weights"
from reinlite.experiments import pretrain as P  # noqa: E402

needs_weights = pytest.mark.skipif(not (WEIGHTS / "course_vit.safetensors").is_file(),
                                   reason="course_vit weights not shipped yet")


@needs_weights
def test_record_is_complete_and_small():
    meta = json.loads((WEIGHTS / "course_vit.json").read_text())
    for key in ("timm_kwargs", "sha256", "command", "seed", "steps", "wall_minutes", "objective"):
        assert key in meta, key
    assert "pretrain_course_vit.py" in meta["command"]
    kw = meta["timm_kwargs"]
    assert (kw["embed_dim"], kw["depth"], kw["num_heads"], kw["patch_size"]) == (192, 6, 3, 8)
    assert (WEIGHTS / "course_vit.safetensors").stat().st_size <= 25e6


@needs_weights
def test_sha256_matches_record():
    meta = json.loads((WEIGHTS / "course_vit.json").read_text())
    digest = hashlib.sha256((WEIGHTS / "course_vit.safetensors").read_bytes()).hexdigest()
    assert digest == meta["sha256"]


@needs_weights
def test_loads_offline_with_timm_names_and_differs_from_random(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from safetensors.torch import load_file

    bb = build_backbone("course_vit", pretrained=True, img_size=(64, 128))
    sd = load_file(str(WEIGHTS / "course_vit.safetensors"))
    assert set(sd) == set(bb.vit.state_dict())  # timm key names, nothing else
    assert torch.equal(bb.vit.patch_embed.proj.weight, sd["patch_embed.proj.weight"])
    rand = build_backbone("course_vit", pretrained=False, img_size=(64, 128))
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        f1, _ = bb(x)
        f0, _ = rand(x)
    assert [tuple(f.shape) for f in f1] == [(1, 192, 16, 32), (1, 192, 8, 16), (1, 192, 4, 8), (1, 192, 2, 4)]
    assert not torch.allclose(f1[-1], f0[-1], atol=1e-3)


@needs_weights
def test_runs_at_the_benchmark_size():
    bb = build_backbone("course_vit", pretrained=True, img_size=(128, 256),
                        rein=dict(num_tokens=8, rank=4, query_dim=32))
    with torch.no_grad():
        feats, queries = bb(torch.randn(1, 3, 128, 256))
    assert feats[2].shape == (1, 192, 8, 16) and queries.shape == (8, 32)


@needs_weights
def test_sha_mismatch_is_reported(tmp_path, monkeypatch):
    shutil.copy(WEIGHTS / "course_vit.safetensors", tmp_path / "course_vit.safetensors")
    meta = json.loads((WEIGHTS / "course_vit.json").read_text())
    meta["sha256"] = "0" * 64
    (tmp_path / "course_vit.json").write_text(json.dumps(meta))
    monkeypatch.setattr(B, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="sha256"):
        build_backbone("course_vit", pretrained=True)


@needs_weights
def test_wrong_keys_file_gives_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"encoder.layer0.weight": torch.zeros(3, 3)}, str(bad))
    with pytest.raises(CheckpointError, match="missing keys"):
        build_backbone("course_vit", pretrained=str(bad))


# --------------------------------------------------------------------------- the pretraining
def test_category_table():
    assert [P.LUT[i] for i in (7, 8, 11, 17, 20, 21, 23, 24, 26, 33)] == [0, 0, 1, 2, 2, 3, 4, 5, 6, 6]
    assert P.LUT[0] == P.LUT[1] == P.LUT[255] == P.IGNORE


def test_boundaries_and_region_geometry():
    label = np.full((8, 8), 7, np.uint8)
    label[:2] = 23                      # sky on top
    label[2:6, 3] = 17                  # a pole: 4 px tall, 1 px wide
    inst = np.zeros((8, 8), np.int32)
    inst[5:7, 5:8] = 1                  # a car: 2 x 3
    label[5:7, 5:8] = 26
    depth = np.full((8, 8), 10.0, np.float32)
    cat = P.LUT[label]
    b = P.boundaries(cat, inst)
    assert b[1, 0] and b[2, 0] and not b[7, 0]
    geom, mask = P.region_geometry(label, inst, depth, pixel_scale=1.0)
    assert not mask[:2].any()           # sky has no region geometry
    assert mask[3, 3] and mask[6, 6]
    # log metric height - log metric width: the pole is tall and thin, the car wide
    assert geom[0, 3, 3] - geom[1, 3, 3] == pytest.approx(np.log(4 / 1))
    assert geom[0, 6, 6] - geom[1, 6, 6] == pytest.approx(np.log(2 / 3))
    assert geom[2, 2, 3] < geom[2, 5, 3]  # relative height inside the pole: top < bottom


@pytest.mark.slow
def test_one_step_resume_export_and_load(tmp_path, monkeypatch):
    run, out = tmp_path / "run", tmp_path / "w"
    args = ["--out", str(run), "--steps", "2", "--batch", "1", "--workers", "0", "--warmup", "1",
            "--max-minutes", "0"]
    P.main(args)                                  # stops after one step, checkpointed
    assert torch.load(run / "ckpt.pt", weights_only=False)["step"] == 1
    P.main(args)                                  # resumes, finishes
    assert torch.load(run / "ckpt.pt", weights_only=False)["step"] == 2
    P.main(["--out", str(run), "--export", str(out)])
    meta = json.loads((out / "course_vit.json").read_text())
    assert meta["steps"] == 2 and meta["seed"] == 0 and "--steps 2" in meta["command"]
    assert meta["command"].startswith("reinlite pretrain ")
    monkeypatch.setattr(B, "WEIGHTS_DIR", out)
    bb = build_backbone("course_vit", pretrained=True, img_size=(64, 128))
    assert bb.embed_dim == 192 and bb.patch_size == 8


def test_corpus_seeds_are_the_shipped_runs():
    """The shared corpus draws item i of seed s from default_rng([0x5EEDC0DE, s, i]), as recorded."""
    from reinlite.experiments import corpus

    meta = json.loads((WEIGHTS / "course_vit.json").read_text())
    assert meta["data_seeds"].startswith(f"np.random.default_rng([{corpus.PRETRAIN_SEED_TAG}, 0, i])")
    a = corpus.corpus_rng(0, 5).random(3)
    b = np.random.default_rng([0x5EEDC0DE, 0, 5]).random(3)
    assert np.array_equal(a, b)
    assert corpus.VIT_KWARGS == {**meta["timm_kwargs"], "img_size": tuple(meta["timm_kwargs"]["img_size"])}

