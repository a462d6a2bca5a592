"""The experiment exercises' runner (reinlite.course.experiments) and their checker."""
import pytest
import torch

from reinlite.course.experiments import metric, quick_run, run_signature, without_sink
from reinlite.course.feedback import CheckFailed, check_experiment
from reinlite.models import rein as rein_module
from tiny import make_tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(tmp_path):
    """The tests' tiny run (tests/configs/tiny.json), evaluated on one target at 32 x 32."""
    return make_tiny_config(tmp_path, data={"random_size": [32, 32], "random_count": 4, "source": "gta",
                                            "targets": ["cityscapes"]},
                            eval={"mode": "whole", "resize": [32, 32]})


def test_quick_run_records_the_choice_the_curve_and_the_diagnostics(tmp_path):
    small = quick_run({"scale_init": 1e-3}, steps=4, seed=0, config=tiny(tmp_path), eval_images=2)
    large = quick_run({"scale_init": 1.0}, steps=4, seed=0, config=tiny(tmp_path), eval_images=2)
    for record in (small, large):
        assert record["steps"] == 4 and len(record["loss"]) == 4
        assert set(record["miou"]) == {"gta", "cityscapes"} and record["target_mean"] is not None
        assert record["log_steps"][-1] == 4 and len(record["scale"]) == len(record["delta_ratio"])
        assert record["signature"] == run_signature(record)
    assert small["rein"]["scale_init"] == 1e-3 and large["options"] == {"scale_init": 1.0}
    # the scale's start shows in the diagnostics: s stays near its start after 4 steps of lr 1e-3,
    # and a change scaled by ~1 moves the features far more than one scaled by ~1e-3
    assert abs(small["final_scale"] - 1e-3) < 0.02 and abs(large["final_scale"] - 1.0) < 0.02
    assert large["final_delta_ratio"] > 20 * small["final_delta_ratio"]
    assert metric(large, "delta_ratio") == large["final_delta_ratio"]


def test_without_sink_renormalises_the_kept_columns_and_restores_the_library():
    library = rein_module.token_similarity
    f, t = torch.randn(2, 5, 8), torch.randn(4, 8)
    with without_sink():
        s = rein_module.token_similarity(f, t)
        assert torch.allclose(s[..., 0], torch.zeros(2, 5))
        assert torch.allclose(s[..., 1:], torch.softmax(f @ t[1:].T / 8 ** 0.5, -1), atol=1e-6)
    assert rein_module.token_similarity is library


def _record(label_value, **extra):
    """A record with the fields the checker reads, signed as quick_run signs its records."""
    loss, miou, ratio = label_value
    record = dict(options={}, rein={"scale_init": 1e-3}, sink=True, seed=0, steps=50, loss=[loss] * 10,
                  miou={"gta": miou + 5, "cityscapes": miou}, source_miou=miou + 5, target_mean=miou,
                  final_delta_ratio=ratio, final_scale=1e-3, **extra)
    record["signature"] = run_signature(record)
    return record


def test_check_experiment_accepts_a_conclusion_that_agrees_and_explains_one_that_does_not():
    runs = {"a": _record((1.0, 20.0, 0.001)), "b": _record((2.0, 20.4, 0.5))}
    assert check_experiment(runs, {"final_loss": "b", "delta_ratio": "b"})
    # mIoU within a point: either the larger one or "no clear difference" is right
    assert check_experiment(runs, {"target_miou": "no clear difference"})
    assert check_experiment(runs, {"target_miou": "b"})
    with pytest.raises(CheckFailed, match=r"largest\['final_loss'\] = 'a' does not agree with your runs"):
        check_experiment(runs, {"final_loss": "a"})
    with pytest.raises(CheckFailed, match="not one of your runs"):
        check_experiment(runs, {"final_loss": "c"})


def test_check_experiment_refuses_edited_missing_or_mismatched_runs():
    runs = {"a": _record((1.0, 20.0, 0.001)), "b": _record((2.0, 20.4, 0.5))}
    edited = dict(runs, b={**runs["b"], "target_mean": 90.0})
    with pytest.raises(CheckFailed, match="do not match its signature"):
        check_experiment(edited, {"final_loss": "b"})
    with pytest.raises(CheckFailed, match="no run yet"):
        check_experiment({"a": runs["a"], "b": None}, {"final_loss": "b"})
    with pytest.raises(CheckFailed, match=r"expected a run with scale_init=1\.0"):
        check_experiment(runs, {"final_loss": "b"}, variants={"a": {"scale_init": 1e-3}, "b": {"scale_init": 1.0}})
    with pytest.raises(CheckFailed, match="at least 100"):
        check_experiment(runs, {"final_loss": "b"}, min_steps=100)
