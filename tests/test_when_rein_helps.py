"""The report of docs/when_rein_helps.md on small synthetic results (no training)."""
import json

import pytest

from reinlite.experiments import when_rein_helps as wrh

STEPS = (250, 500, 1000, 1500, 2000)
TARGETS = ["cityscapes", "bdd100k", "mapillary", "acdc"]


def _point(step, targets, source, ratio=None):
    miou = {"gta": source, **{t: targets + i * 0.1 - 0.15 for i, t in enumerate(TARGETS)}}
    p = dict(step=step, miou=miou, mean_targets=sum(miou[t] for t in TARGETS) / 4, eval_seconds=1.0)
    if ratio is not None:
        p.update(query_cosine=0.2, rein_scale=-0.02, rein_delta_ratio=ratio,
                 rein_delta_ratio_layers=[ratio * (1.1 - 0.04 * b) for b in range(6)], rein_delta_ratio_step=step)
    return p


def make_results(root, gains, full_gap=-1.0, full_source=5.0, ratio=0.03, runs=None, steps=STEPS):
    """A results folder: target mean of frozen = 20 + seed/2 at every step; Rein = frozen +
    gains[backbone](step); full = Rein + full_gap on the targets and + full_source on gta.
    ``runs``: only these (method, seed, backbone) (default: the whole plan)."""
    recs = []
    (root / "logs").mkdir(parents=True, exist_ok=True)
    for bb, seeds in wrh.PLANNED_SEEDS.items():
        for seed in seeds:
            for method in wrh.METHODS:
                if runs is not None and (method, seed, bb) not in runs:
                    continue
                pts = []
                for k in steps:
                    base = 20.0 + seed / 2
                    t = base + (gains[bb](k) if method != "frozen" else 0.0) + (full_gap if method == "full" else 0.0)
                    src = 30.0 + (full_source if method == "full" else 0.0)
                    pts.append(_point(k, t, src, ratio * k / steps[-1] if method == "rein" else None))
                last = pts[-1]
                recs.append(dict(name=method, group="methods", method=method, backbone=bb, seed=seed,
                                 miou=last["miou"], mean_targets=last["mean_targets"], targets=TARGETS,
                                 steps=steps[-1], curve=pts, train_seconds=1.0))
                if method == "rein":
                    lines = [dict(step=s, loss=1.0, rein_scale=-0.001 * s / 50, rein_delta_ratio=ratio * s / steps[-1],
                                  rein_delta_ratio_layers=[ratio * s / steps[-1]] * 6, query_cosine=0.9 - s / 5000)
                             for s in range(50, steps[-1] + 1, 50)]
                    text = "\n".join(json.dumps(x) for x in lines) + "\n"
                    (root / "logs" / f"rein_s{seed}_{bb}.jsonl").write_text(text)
    (root / "results.json").write_text(json.dumps({"runs": recs, "config": {"optim": {"iters": steps[-1]}}}))
    return root


def growing(scale):   # a gain that grows from scale/4 at 250 steps to scale at 2,000
    return lambda k: scale * (0.25 + 0.75 * (k - 250) / 1750)


GAINS_H2 = {"course_vit": growing(0.5), "course_vit_mae": growing(2.0), "random": growing(5.0)}


def test_paired_differences_are_per_seed_and_step(tmp_path):
    data = wrh.load(make_results(tmp_path, GAINS_H2))
    rows = wrh.paired_differences(data["records"])
    key = ("course_vit_mae", "rein", "frozen", 2000)
    r = next(x for x in rows if (x["backbone"], x["a"], x["b"], x["step"]) == key)
    assert r["seeds"] == [0, 1] and r["diffs"] == pytest.approx([2.0, 2.0]) and r["mean"] == pytest.approx(2.0)
    full = next(x for x in rows if (x["backbone"], x["b"], x["step"]) == ("course_vit", "full", 250))
    assert full["diffs"] == pytest.approx([1.0, 1.0, 1.0])          # Rein - full = -full_gap
    assert sorted({x["step"] for x in rows}) == list(STEPS)
    src = wrh.paired_differences(data["records"], "source")
    assert next(x for x in src if x["b"] == "full")["mean"] == pytest.approx(-5.0)


def test_verdicts_follow_the_preregistered_criteria(tmp_path):
    v = {x["hypothesis"]: x for x in wrh.verdicts(wrh.load(make_results(tmp_path, GAINS_H2)))}
    assert v["H1"]["verdict"] == "supported"        # max ratio 0.03 < 0.05 through 2,000 steps
    assert v["H2"]["verdict"] == "supported"        # random 5 > mae 2 > course_vit 0.5, seeds agree
    assert v["H3"]["verdict"] == "supported"        # the gain grows on both pretrained backbones
    assert v["H4"]["verdict"] == "supported"        # full +5 on gta, Rein +1 over full on the targets
    assert "course_vit_mae: +2.00" in v["H2"]["numbers"]


def test_verdicts_refuted(tmp_path):
    flat = {bb: (lambda k: 0.0) for bb in wrh.BACKBONES}
    v = {x["hypothesis"]: x for x in wrh.verdicts(wrh.load(make_results(tmp_path, flat, full_gap=0.5, ratio=0.3)))}
    assert v["H1"]["verdict"] == "refuted"          # ratio 0.3 > 0.2 while Rein does not beat frozen
    assert v["H2"]["verdict"] == "refuted"          # equal gains
    assert v["H3"]["verdict"] == "refuted"          # flat on both
    assert v["H4"]["verdict"] == "refuted"          # full beats Rein on the targets


def test_partial_results_say_their_n_and_decide_nothing(tmp_path):
    runs = {("rein", 0, "course_vit"), ("frozen", 0, "course_vit")}
    root = make_results(tmp_path, GAINS_H2, runs=runs, steps=(250, 500))
    data = wrh.load(root)
    assert len(data["records"]) == 2 and list(data["logs"]) == ["rein_s0_course_vit"]
    row = "| course_vit | 1 of 3 (seeds 0) | 1 of 3 (seeds 0) | 0 of 3 (seeds –) |"
    assert row in wrh.cells_table(data["records"])
    assert "n=1" in wrh.paired_table(data["records"])
    assert {v["verdict"] for v in wrh.verdicts(data)} == {"not decided"}


def test_report_and_figures_are_written_without_machine_paths(tmp_path):
    root = make_results(tmp_path / "res", GAINS_H2)
    written = wrh.write_report(root, tmp_path / "out")
    text = written["report.md"].read_text()
    assert str(tmp_path) not in text and "/tmp" not in text
    for name in ("curves.png", "diagnostics.png"):
        assert written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| paper, Table 2 | DINOv2-L | 61.1 | 61.7 | 64.3 | +3.2 | +2.6 |" in text
    assert "MAE-L | 43.0 | not transcribed" in text and "issues/48" in text
    assert "## The pre-registered criteria, evaluated mechanically" in text


def test_logs_keep_the_last_entry_of_a_repeated_step(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 100, "loss": 2}\n{"step": 50, "loss": 3}\n{"step": 100, "loss": 1}\n\n')
    assert [(e["step"], e["loss"]) for e in wrh.read_log(log)] == [(50, 3), (100, 1)]


def test_bad_input_names_the_file(tmp_path):
    with pytest.raises(wrh.ReportError, match="results.json: not found"):
        wrh.load(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"runs": [{"name": "rein", "seed": 0}]}))
    with pytest.raises(wrh.ReportError, match="results.json: run 'rein' lacks backbone"):
        wrh.load(tmp_path)


def test_a_report_without_any_rein_run_still_draws(tmp_path):
    root = make_results(tmp_path / "res", GAINS_H2, runs={("frozen", 0, "course_vit_mae")}, steps=(250,))
    written = wrh.write_report(root, tmp_path / "out")
    assert written["diagnostics.png"].stat().st_size > 0
    assert "| course_vit_mae | 0 of 2 (seeds –) | 1 of 2 (seeds 0) |" in written["report.md"].read_text()
