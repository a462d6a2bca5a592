import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reinlite import cli
from reinlite.engine.checkpoint import load_trainable, read_run_checkpoint
from reinlite.weights import CheckpointError
from reinlite.config import ConfigError, load_config
from reinlite.data.pipeline import StepBatchSampler
from reinlite.engine.evaluate import load_run
from reinlite.models.segmentor import build_model
from reinlite.engine.optim import param_groups, poly_lr
from reinlite.engine.train import NonFiniteLoss, train

from tiny import make_tiny_config

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


# the shared tiny config (tests/configs/tiny.json); kept under this name for the tests below
tiny_cfg = make_tiny_config


def weights(run_dir):
    return read_run_checkpoint(Path(run_dir) / "checkpoint.safetensors")[0]


def test_cli_reports_bad_keys(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"optim": {"itres": 3}}))
    assert cli.main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.itres'" in err and "optim.iters" in err


def test_poly_lr_and_param_groups(tmp_path):
    assert poly_lr(1e-4, 0, 100) == 1e-4
    assert poly_lr(1e-4, 50, 100) == pytest.approx(1e-4 * 0.5 ** 0.9)
    assert poly_lr(1e-4, 100, 100) == 0.0
    torch.manual_seed(0)
    model = build_model(load_config(tiny_cfg(tmp_path)).model)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    nd = set(no_decay["names"])
    assert "backbone.rein.learnable_tokens_a" in nd and "backbone.rein.scale" in nd
    assert "head.level_embed.weight" in nd and "head.decoder_norm.weight" in nd
    assert any("lateral.0.1" in n for n in nd)  # GroupNorm found by type
    assert "head.class_embed.weight" in decay["names"]
    assert "backbone.rein.mlp_token2feat.weight" in decay["names"]
    assert not any(n.startswith("backbone.vit.") for n in decay["names"] + no_decay["names"])


def test_sampler_is_a_function_of_the_step():
    full = list(StepBatchSampler(7, 3, 6, seed=1))
    resumed = list(StepBatchSampler(7, 3, 6, seed=1, start=4))
    assert full[4:] == resumed
    ranks = [list(StepBatchSampler(7, 2, 3, seed=1, rank=r, world=2)) for r in (0, 1)]
    assert [i for i, _ in ranks[0][0] + ranks[1][0]] == [i for i, _ in list(StepBatchSampler(7, 4, 3, seed=1))[0]]
    # every sample once per epoch
    idx = [i for b in StepBatchSampler(7, 1, 7, seed=2) for i, _ in b]
    assert sorted(idx) == list(range(7))


def test_exact_resume_after_a_crash(tmp_path):
    ref = train(load_config(tiny_cfg(tmp_path, out_dir=str(tmp_path / "ref"))))
    assert ref["step"] == 5

    def crash(step, losses):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    cfg = load_config(tiny_cfg(tmp_path, out_dir=str(tmp_path / "b")))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=crash)
    assert read_run_checkpoint(tmp_path / "b")[1]["step"] == "2"  # last checkpoint before the crash
    res = train(cfg)
    assert res["step"] == 5 and len(res["losses"]) == 3
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert res["losses"] == ref["losses"][2:]
    # stop_at: a planned stop also resumes exactly
    cfg_c = load_config(tiny_cfg(tmp_path, out_dir=str(tmp_path / "c")))
    assert train(cfg_c, stop_at=3)["step"] == 3
    train(cfg_c)
    c = weights(tmp_path / "c")
    assert all(torch.equal(a[k], c[k]) for k in a)
    lines = (tmp_path / "c" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5]


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, monkeypatch):
    import reinlite.engine.train as T

    orig = T.build_criterion

    def bad_criterion(*args):
        crit = orig(*args)
        calls = {"n": 0}
        fwd = crit.forward

        def forward(outputs, targets):
            losses = fwd(outputs, targets)
            calls["n"] += 1
            if calls["n"] >= 4:
                losses["loss"] = losses["loss"] * float("nan")
            return losses

        crit.forward = forward
        return crit

    monkeypatch.setattr(T, "build_criterion", bad_criterion)
    cfg = load_config(tiny_cfg(tmp_path))
    with pytest.raises(NonFiniteLoss, match=r"at step 3.*last good checkpoint .*step 2"):
        train(cfg)
    w, meta = read_run_checkpoint(tmp_path / "run")
    assert meta["step"] == "2" and all(torch.isfinite(v).all() for v in w.values())


def test_checkpoint_of_another_model_lists_keys(tmp_path):
    cfg = load_config(tiny_cfg(tmp_path, optim={"iters": 1}))
    train(cfg)
    model, _ = load_run(tmp_path / "run")  # its own config: loads
    other = load_config(tiny_cfg(tmp_path), ["model.rein.rank=null", "model.head.num_layers=3"])
    torch.manual_seed(0)
    with pytest.raises(CheckpointError) as err:
        load_trainable(build_model(other.model), weights(tmp_path / "run"), "ckpt")
    msg = str(err.value)
    assert "missing keys" in msg and "backbone.rein.learnable_tokens" in msg
    assert "unexpected keys" in msg and "backbone.rein.learnable_tokens_a" in msg
    assert "head.layers.2" in msg


@pytest.mark.slow
def test_ddp_two_gloo_processes(tmp_path):
    cfg = tiny_cfg(tmp_path, optim={"iters": 3, "batch_size": 1}, train={"ckpt_every": 3},
                   data={"crop_size": [64, 64]})
    path = tmp_path / "ddp.json"
    path.write_text(json.dumps(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "reinlite.cli", "train", "--config", str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w, meta = read_run_checkpoint(tmp_path / "run")
    assert meta["step"] == "3"
    assert all(torch.isfinite(v).all() for v in w.values())


@pytest.mark.parametrize("method", ["frozen", "full", "lora"])
def test_baseline_methods_build_and_step(tmp_path, method):
    cfg = load_config(tiny_cfg(tmp_path), [f"model.method={method}", "data.crop_size=[64,64]",
                                           "optim.iters=1"])
    res = train(cfg)
    w = weights(tmp_path / "run")
    assert res["step"] == 1 and not any(k.startswith("backbone.rein") for k in w)
    assert "head.query_embed.weight" in w  # learned queries without Rein
    if method == "full":
        assert "backbone.vit.pos_embed" in w
        nd = param_groups(build_model(cfg.model), 0.05)[1]["names"]
        assert "backbone.vit.pos_embed" in nd and "backbone.vit.cls_token" in nd
    if method == "lora":
        assert any(k.startswith("backbone.peft") for k in w)


def test_cli_missing_benchmark_and_config(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(tiny_cfg(tmp_path, data={"kind": "benchmark", "root": str(tmp_path / "nope")})))
    assert cli.main(["train", "--config", str(path)]) == 2
    assert "no benchmark at" in capsys.readouterr().err
    assert cli.main(["train", "--config", "cuorse"]) == 2
    err = capsys.readouterr().err
    assert "config 'cuorse' not found" in err and "course" in err


def test_backbone_lr_mult_scales_the_backbone_groups(tmp_path):
    from reinlite.engine.optim import build_optimizer, set_lr

    cfg = load_config(tiny_cfg(tmp_path), ["model.method=full", "optim.backbone_lr_mult=0.1"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    groups = param_groups(model, 0.05, 0.1)
    for g in groups:
        assert all(n.startswith("backbone.") for n in g["names"]) == (g["lr_mult"] == 0.1)
    assert {g["lr_mult"] for g in groups} == {0.1, 1.0}
    opt = build_optimizer(model, cfg.optim)
    set_lr(opt, 1e-3)
    lrs = sorted({round(g["lr"], 12) for g in opt.param_groups})
    assert lrs == [1e-4, 1e-3]


def test_resume_refuses_a_changed_config(tmp_path):
    cfg = load_config(tiny_cfg(tmp_path, optim={"iters": 2}))
    train(cfg)
    changed = load_config(tiny_cfg(tmp_path, optim={"iters": 2}), ["optim.lr=0.0001"])
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 in the run, 0.0001 now[\s\S]*train.resume=none"):
        train(changed)
    before = weights(tmp_path / "run")
    # extending the run (more iterations) is allowed and continues from step 2
    longer = load_config(tiny_cfg(tmp_path, optim={"iters": 3}))
    assert train(longer)["step"] == 3
    # starting over is the other way out
    fresh = load_config(tiny_cfg(tmp_path, optim={"iters": 2}), ["optim.lr=0.0001", "train.resume=none"])
    assert train(fresh)["step"] == 2
    assert any(not torch.equal(before[k], v) for k, v in weights(tmp_path / "run").items())


def test_checkpoint_records_the_method_and_rebuilds_it(tmp_path):
    cfg = load_config(tiny_cfg(tmp_path, optim={"iters": 1}),
                      ["model.method=lora", "model.method_kwargs.rank=2", "data.crop_size=[64,64]"])
    train(cfg)
    model, stored = load_run(tmp_path / "run")
    assert stored.model.method == "lora" and stored.model.lora.rank == 2  # method_kwargs folded in
    assert model.backbone.method == "lora"


def test_ship_run_and_load_it_back(tmp_path, monkeypatch):
    import hashlib

    import reinlite.weights as B
    from reinlite import course

    cfg = load_config(tiny_cfg(tmp_path, optim={"iters": 1}))
    train(cfg)
    (tmp_path / "run" / "eval").mkdir()
    (tmp_path / "run" / "eval" / "metrics.json").write_text(json.dumps(
        {"mean": 1.5, "targets": ["cityscapes"], "domains": {"cityscapes": {"miou": 1.5}}}))
    monkeypatch.setattr(B, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    monkeypatch.delenv("REINLITE_CHECKPOINT", raising=False)
    path = course.ship_run(tmp_path / "run", "tiny", command="reinlite train ...", dest=tmp_path / "weights")
    assert path.parent == tmp_path / "weights"
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["evaluation"]["mean_targets"] == 1.5 and record["step"] == 1
    assert course.find_checkpoint("tiny") == path
    model, stored = load_run(path)
    assert stored == cfg


def test_paths_come_from_the_current_directory_not_the_package(tmp_path, monkeypatch):
    """ship-run writes only into an explicit folder; the checkout is found from the current
    directory (or its parent: notebooks run in notebooks/), data paths likewise."""
    from reinlite import course
    from reinlite.data.pipeline import resolve_path

    monkeypatch.chdir(tmp_path)
    assert course.repo_root() is None
    with pytest.raises(FileNotFoundError, match="not the root of a reinlite checkout"):
        course.checkout_weights_dir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "reinlite" / "weights").mkdir(parents=True)
    (tmp_path / "reinlite" / "weights" / "__init__.py").write_text("")
    (tmp_path / "data" / "benchmark").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    assert course.repo_root() == tmp_path.resolve()
    assert course.checkout_weights_dir() == Path("reinlite") / "weights"
    monkeypatch.chdir(tmp_path / "notebooks")
    assert course.repo_root() == tmp_path.resolve()
    assert resolve_path("data/benchmark").resolve() == (tmp_path / "data" / "benchmark").resolve()
    assert resolve_path("data/benchmark", root="/elsewhere") == Path("/elsewhere/data/benchmark")
    assert resolve_path("nowhere/x") == Path("nowhere/x")
