"""The sweep's bookkeeping (reinlite.experiments.sweep; the training itself is reinlite.engine.train's).

A fake ``run_one`` stands in for training so most tests check what the sweep adds: which runs
it plans, that the base Rein is trained once when several groups contain it, that a sweep
resumes, that runs of another configuration are refused, and the summary tables. One tiny real
sweep checks that every run is built by the one builder from config keys (no monkeypatching),
that its checkpoint rebuilds itself with its method, and the learning-curve mode.
"""
import json
from pathlib import Path

import pytest

from reinlite.experiments import sweep as sweep_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def sweep(monkeypatch):
    module = sweep_module
    trained = []

    def fake_run_one(spec, seed, base_cfg, out, eval_source, backbone=None, eval_at=()):
        trained.append((spec["group"], spec["name"], seed))
        score = 10.0 + seed + len(trained) / 10  # every trained run gets its own number
        doms = ["gta", "cityscapes", "acdc"]
        return dict(name=spec["name"], group=spec["group"], method=spec["method"], kwargs=spec["kwargs"],
                    overrides=module.run_overrides(spec, backbone), backbone=module.backbone_label(backbone),
                    seed=seed, trainable_backbone=123, trainable_total=456,
                    miou={d: score for d in doms}, mean_targets=score, targets=doms[1:],
                    train_seconds=1.0, eval_seconds=0.5, steps=3, final_loss=1.0)

    monkeypatch.setattr(module, "run_one", fake_run_one)
    monkeypatch.setattr(module, "trained", trained, raising=False)
    return module


def test_the_groups_plan_the_issue_runs(sweep):
    base = dict(num_tokens=32, rank=16, query_dim=128)
    names = [s["name"] for s in sweep.run_specs(sweep.GROUPS, base, 50)]
    assert names[:6] == ["rein", "frozen", "full", "lora", "vpt", "adaptformer"]
    assert [n for n in names if n.startswith("rein_m")] == [f"rein_m{m}" for m in (2, 10, 25, 32, 50, 100, 200)]
    assert [n for n in names if n.startswith("rein_r")] == ["rein_r4", "rein_r8", "rein_r16", "rein_r32", "rein_rfull"]
    pieces = [s for s in sweep.run_specs(["pieces"], base, 50)]
    assert [p["name"] for p in pieces] == ["tokens_only", "tokens+shared_mlps", "+low_rank", "+queries (Rein)"]
    assert pieces[0]["kwargs"]["shared_mlps"] is False and pieces[-1]["kwargs"] == base


def test_base_rein_is_trained_once_and_copied(sweep, tmp_path):
    out = tmp_path / "sweep"
    assert sweep.main(["--groups", "methods", "rank", "pieces", "--only", "rein", "rein_r16", "rein_r4",
                       "+queries (Rein)", "--seeds", "0", "1", "--out", str(out), "optim.iters=3"]) == 0
    assert sorted(sweep.trained) == [("methods", "rein", 0), ("methods", "rein", 1),
                                     ("rank", "rein_r4", 0), ("rank", "rein_r4", 1)]
    data = json.loads((out / "results.json").read_text())
    runs = {(r["group"], r["name"], r["seed"]): r for r in data["runs"]}
    assert len(runs) == 8
    for seed in (0, 1):
        base = runs[("methods", "rein", seed)]
        for copy in (runs[("rank", "rein_r16", seed)], runs[("pieces", "+queries (Rein)", seed)]):
            assert copy["same_as"] == "methods/rein" and copy["miou"] == base["miou"]
    assert data["backbone"].startswith("course_vit sha256 ")
    md = (out / "results.md").read_text()
    assert "### methods" in md and "### rank" in md and "### pieces" in md
    assert md.index("rein_r4") < md.index("rein_r16")  # the groups' own order, not finishing order

    # resuming trains nothing new; a changed configuration is refused, naming what changed
    sweep.trained.clear()
    sweep.main(["--groups", "rank", "--only", "rein_r4", "--seeds", "0", "--out", str(out), "optim.iters=3"])
    assert sweep.trained == []
    with pytest.raises(sweep.SweepError, match="optim.iters"):
        sweep.main(["--groups", "rank", "--only", "rein_r4", "--seeds", "0", "--out", str(out), "optim.iters=4"])


def test_summary_gives_mean_and_spread_over_seeds(sweep):
    recs = [dict(name="rein", group="methods", seed=s, trainable_backbone=10, miou={"gta": v, "cs": v},
                 mean_targets=v, targets=["cs"]) for s, v in ((0, 10.0), (1, 12.0), (2, 14.0))]
    cfg = dict(optim=dict(iters=5, batch_size=2, lr=1e-3), data=dict(crop_size=[8, 8]),
               model=dict(backbone="course_vit", pretrained=True, head=dict(num_classes=19), rein=dict(num_tokens=4)))
    md = sweep.summarise(recs, cfg)
    assert "| rein | 10 | 3 | 12.0 ± 2.0 | 12.0 ± 2.0 | **12.0 ± 2.0** |" in md


# --------------------------------------------------------------------------- runs are config keys
def test_every_run_is_config_keys_for_the_one_builder():
    from reinlite.config import load_config

    base = dict(num_tokens=32, rank=16, query_dim=128)
    specs = {s["name"]: s for s in sweep_module.run_specs(sweep_module.GROUPS, base, 50)}
    cfgs = {n: load_config("course", sweep_module.run_overrides(s)) for n, s in specs.items()}
    assert {n: c.model.method for n, c in cfgs.items() if n in ("rein", "lora", "full", "full_lr1")} == \
        dict(rein="rein", lora="lora", full="full", full_lr1="full")
    assert cfgs["full"].optim.backbone_lr_mult == 0.1 and cfgs["full_lr1"].optim.backbone_lr_mult == 1.0
    assert cfgs["rein"].optim.backbone_lr_mult == 1.0 and cfgs["lora"].model.lora.rank == 8
    assert cfgs["tokens_only"].model.rein.shared_mlps is False and cfgs["tokens_only"].model.rein.rank is None
    assert cfgs["rein_m2"].model.rein.num_tokens == 2 and cfgs["rein_rfull"].model.rein.rank is None
    mae = load_config("course", sweep_module.run_overrides(specs["frozen"], "course_vit_mae"))
    rand = load_config("course", sweep_module.run_overrides(specs["frozen"], "random"))
    path = load_config("course", sweep_module.run_overrides(specs["frozen"], "step450=/tmp/w.safetensors"))
    assert (mae.model.backbone, mae.model.pretrained) == ("course_vit_mae", True)
    assert (rand.model.backbone, rand.model.pretrained) == ("course_vit", False)
    assert path.model.pretrained == "/tmp/w.safetensors"
    assert sweep_module.run_name(specs["+queries (Rein)"], 1, "step450=/tmp/w.safetensors") == "plus_queries_Rein_s1_step450"
    with pytest.raises(sweep_module.SweepError, match="course_vit_mae"):
        sweep_module.backbone_overrides("dinov3")


def test_overrides_may_follow_list_options():
    from reinlite.cli import build_parser

    args = build_parser().parse_args(["sweep", "--groups", "methods", "rank", "--seeds", "0", "1",
                                      "optim.iters=300", "eval.max_images=100"])
    assert args.groups == ["methods", "rank"] and args.seeds == [0, 1]
    assert args.extra_overrides == ["optim.iters=300", "eval.max_images=100"]
    args = build_parser().parse_args(["sweep", "--backbones", "course_vit", "old=/w/a.safetensors",
                                      "--threads", "1", "optim.iters=3"])
    assert args.backbones == ["course_vit", "old=/w/a.safetensors"] and args.overrides == ["optim.iters=3"]


def test_the_shipped_results_stay_readable():
    for path in (ROOT / "docs" / "sweep" / "results.json", ROOT / "docs" / "sweep" / "long" / "results.json"):
        data = json.loads(path.read_text())
        md = sweep_module.summarise(data["runs"], data["config"])
        assert "### methods" in md and "| rein |" in md
    assert "Rein − frozen" in md  # paired gains from the old records too


def test_gains_and_curves_tables():
    def rec(name, seed, v, bb, curve=None):
        return dict(name=name, group="methods", seed=seed, backbone=bb, trainable_backbone=1,
                    miou={"gta": v + 10, "cs": v}, mean_targets=v, targets=["cs"],
                    **({"curve": curve} if curve else {}))

    curve = [dict(step=2, miou={"gta": 5.0, "cs": 1.0}, mean_targets=1.0, query_cosine=0.9),
             dict(step=4, miou={"gta": 6.0, "cs": 2.0}, mean_targets=2.0, query_cosine=0.5)]
    recs = [rec("rein", 0, 12.0, "course_vit_mae", curve), rec("frozen", 0, 10.0, "course_vit_mae", curve),
            rec("rein", 1, 13.0, "course_vit_mae"), rec("frozen", 1, 10.0, "course_vit_mae"),
            rec("rein", 0, 5.0, "random")]
    md = sweep_module.summarise(recs, {})
    assert "### methods — backbone course_vit_mae" in md and "### methods — backbone random" in md
    assert "| course_vit_mae | Rein − frozen | 2 | +2.0, +3.0 | **+2.5 ± 0.7** |" in md
    assert "| rein | 1 | query cosine | 0.90 ± 0.00 | 0.50 ± 0.00 |" in md
    assert "| frozen | 1 | gta (source) | 5.0 ± 0.0 | 6.0 ± 0.0 |" in md


# --------------------------------------------------------------------------- a tiny real sweep
def tiny_config_file(tmp_path, tiny_config) -> Path:
    cfg = tiny_config(None, threads=1, optim={"iters": 3}, train={"ckpt_every": 100}, eval={"mode": "whole"},
                      data={"random_size": [32, 32], "random_count": 3, "targets": ["cityscapes"]})
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_tiny_sweep_builds_each_method_by_config_and_records_curves(tmp_path, monkeypatch, tiny_config):
    from reinlite.engine.evaluate import load_run

    out = tmp_path / "sweep"
    config = tiny_config_file(tmp_path, tiny_config)
    argv = ["--config", str(config), "--groups", "methods", "--only", "rein", "lora",
            "--seeds", "0", "--eval-at", "2", "--threads", "1", "--out", str(out)]
    assert sweep_module.main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    runs = {r["name"]: r for r in data["runs"]}
    assert set(runs) == {"rein", "lora"}
    for name, method in (("rein", "rein"), ("lora", "lora")):
        r = runs[name]
        assert r["method"] == method and [p["step"] for p in r["curve"]] == [2, 3]
        model, cfg = load_run(r["checkpoint"])          # the checkpoint rebuilds itself
        assert cfg.model.method == method
    assert load_run(runs["lora"]["checkpoint"])[1].model.lora.rank == 8
    assert isinstance(runs["rein"]["curve"][0]["query_cosine"], float)
    assert runs["lora"]["curve"][0]["query_cosine"] is None
    for point in runs["rein"]["curve"]:  # Rein's diagnostics at every evaluation point
        assert isinstance(point["rein_scale"], float) and 0 < point["rein_delta_ratio"] < 10
        assert len(point["rein_delta_ratio_layers"]) == 4
    assert runs["lora"]["curve"][0]["rein_scale"] is None
    assert runs["rein"]["miou"] == runs["rein"]["curve"][-1]["miou"]
    md = (out / "results.md").read_text()
    assert "### learning curves" in md and "query cosine" in md and "Rein scale s" in md

    # resuming trains nothing: the finished runs are skipped
    import reinlite.engine.train

    monkeypatch.setattr(reinlite.engine.train, "train", lambda *a, **k: pytest.fail("trained again"))
    assert sweep_module.main(argv) == 0
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 2
