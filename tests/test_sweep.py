"""data_scripts/sweep.py's bookkeeping (the training itself is reinlite.train's, tested there).

A fake ``run_one`` stands in for training so these tests check what the sweep adds: which runs
it plans, that the base Rein is trained once when several groups contain it, that a sweep
resumes, that runs of another configuration are refused, and the summary tables.
"""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def sweep(monkeypatch):
    spec = importlib.util.spec_from_file_location("sweep_under_test", ROOT / "data_scripts" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trained = []

    def fake_run_one(spec, seed, base_cfg, out, eval_source):
        trained.append((spec["group"], spec["name"], seed))
        score = 10.0 + seed + len(trained) / 10  # every trained run gets its own number
        doms = ["gta", "cityscapes", "acdc"]
        return dict(name=spec["name"], group=spec["group"], method=spec["method"], kwargs=spec["kwargs"],
                    seed=seed, trainable_backbone=123, trainable_total=456,
                    miou={d: score for d in doms}, mean_targets=score, targets=doms[1:],
                    train_seconds=1.0, eval_seconds=0.5, steps=3, final_loss=1.0)

    monkeypatch.setattr(module, "run_one", fake_run_one)
    module.trained = trained
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
    with pytest.raises(SystemExit, match="optim"):
        sweep.main(["--groups", "rank", "--only", "rein_r4", "--seeds", "0", "--out", str(out), "optim.iters=4"])


def test_summary_gives_mean_and_spread_over_seeds(sweep):
    recs = [dict(name="rein", group="methods", seed=s, trainable_backbone=10, miou={"gta": v, "cs": v},
                 mean_targets=v, targets=["cs"]) for s, v in ((0, 10.0), (1, 12.0), (2, 14.0))]
    cfg = dict(optim=dict(iters=5, batch_size=2, lr=1e-3), data=dict(crop_size=[8, 8]),
               model=dict(backbone="course_vit", pretrained=True, head=dict(num_classes=19), rein=dict(num_tokens=4)))
    md = sweep.summarise(recs, cfg)
    assert "| rein | 10 | 3 | 12.0 ± 2.0 | 12.0 ± 2.0 | **12.0 ± 2.0** |" in md
