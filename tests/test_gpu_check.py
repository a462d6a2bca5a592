"""`reinlite gpu-check`: the tiny CPU mode end to end (so the GPU script stays working),
its time budget, and the Table 8 comparison it writes from a GPU run's numbers."""
import json
import math

import pytest

from reinlite.experiments import gpu_check
from reinlite.cli import build_parser

IN_PROCESS = ("step_rein_bf16", "step_rein_fp32", "profile", "step_full_bf16", "step_full_fp32",
              "train", "slide")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    report = gpu_check.run_gpu_check(gpu_check.Settings(out=str(out), tiny=True, device="cpu"))
    return out, report


@pytest.mark.slow
def test_tiny_mode_writes_json_and_markdown(tiny):
    out, report = tiny
    on_disk = json.loads((out / "gpu_check.json").read_text())
    assert on_disk["format"] == "reinlite-gpu-check-v1" and on_disk["tiny"] is True
    assert on_disk["status"] == report["status"] == "ok", report["phases"]
    phases = on_disk["phases"]
    for name in ("build_rein", "build_full") + IN_PROCESS + ("ddp",):
        assert phases[name]["status"] == "ok", (name, phases[name])
    assert phases["compile"]["status"] == "skipped" and phases["compile"]["by_choice"]
    assert phases["train_cli"]["status"] == "skipped"  # not in the tiny default
    assert on_disk["paper"]["time_ratio"] == 0.85 and on_disk["paper"]["memory_ratio"] == 0.68
    assert on_disk["config"]["backbone"] == "vit_tiny_patch16_224"
    assert on_disk["total_s"] <= on_disk["settings"]["budget_s"]
    md = (out / "gpu_check.md").read_text()
    assert "| s / iteration, bf16 autocast |" in md and "| peak memory GiB, fp32 |" in md
    assert "9.5 h / 11.2 h = 0.85" in md and "10.0 / 14.7 GB = 0.68" in md
    for name in IN_PROCESS + ("ddp", "compile"):
        assert f"| {name} |" in md


@pytest.mark.slow
def test_tiny_mode_steps_losses_and_shares(tiny):
    _, report = tiny
    res = report["results"]
    for method in ("rein", "full"):
        for prec in ("bf16", "fp32"):
            r = res[f"step_{method}_{prec}"]
            assert r["steps"] == 3 and r["median_s"] > 0 and r["losses_finite"]
            assert r["peak_gib"] is None  # CUDA only
    assert report["ratios"]["measured"]["bf16"]["time"] > 0
    assert res["build_rein"]["trainable_params"] < res["build_full"]["trainable_params"]
    train = res["train"]
    assert train["steps"] == train["requested"] == 12 and train["amp"] == "bf16"
    assert all(math.isfinite(v) for v in train["losses"]) and train["falls"]
    prof = res["profile"]
    assert prof["msdeform_modules"] == 2  # the tiny pixel decoder's two layers
    assert 0 < prof["msdeform_sampling_share"] < 1 and 0 < prof["msdeform_forward_share"] < 1
    slide = res["slide"]["bf16"]
    assert slide["size"] == [64, 128] and slide["windows"] == 3 and slide["images_per_s"] > 0
    assert slide["pred_shape"] == [64, 128]
    ddp = res["ddp"]
    assert ddp["backend"] == "gloo" and ddp["world"] == 1 and ddp["all_reduce_ok"] and ddp["losses_finite"]


def test_phases_over_the_budget_are_skipped(tmp_path):
    report = gpu_check.run_gpu_check(gpu_check.Settings(out=str(tmp_path), tiny=True, device="cpu",
                                                        budget_s=1, phases=["step_rein_bf16", "slide"]))
    assert report["phases"]["build_rein"]["status"] == "skipped"
    assert "would exceed the 1 s total" in report["phases"]["build_rein"]["reason"]
    assert report["phases"]["step_rein_bf16"] == dict(status="skipped", reason="needs build_rein")
    assert report["phases"]["profile"]["by_choice"]  # not selected
    assert report["status"] == "partial"
    assert "| step_rein_bf16 | skipped | needs build_rein |" in (tmp_path / "gpu_check.md").read_text()


def test_unknown_phase_and_no_gpu_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown gpu-check phase"):
        gpu_check.run_gpu_check(gpu_check.Settings(out=str(tmp_path), tiny=True, phases=["warp"]))
    with pytest.raises(ValueError, match="--tiny"):
        gpu_check.run_gpu_check(gpu_check.Settings(out=str(tmp_path), device="cpu"))


def test_cli_subcommand():
    args = build_parser().parse_args(["gpu-check", "--out", "x", "--tiny", "--phases", "train", "slide"])
    assert args.tiny and args.phases == ["train", "slide"] and args.compile is None
    assert args.command == "gpu-check" and args.func == "reinlite.experiments.gpu_check:run_cli"  # the CLI table


def test_table_8_comparison_from_gpu_numbers():
    """What a GPU run writes: ratios and hours next to the paper's (numbers made up)."""
    step = lambda med, peak: dict(median_s=med, hours_40k=round(med * 40000 / 3600, 2), peak_gib=peak,
                                  steps=20, warmup=5, truncated=False, losses_finite=True)
    res = {"step_rein_bf16": step(0.30, 9.0), "step_full_bf16": step(0.40, 15.0),
           "step_rein_fp32": step(0.60, 12.0), "step_full_fp32": step(0.75, 20.0),
           "compile": dict(compile_s=80.0, median_s=0.25)}
    report = dict(meta=dict(gpu="NVIDIA H200", torch="2.x"), tiny=False, total_s=400.0,
                  settings=dict(budget_s=480.0), results=res,
                  config=dict(backbone="vit_large_patch14_dinov2", crop=[512, 512], batch_size=4,
                              rein=dict(num_tokens=100, rank=16), num_points=12544),
                  phases={k: dict(status="ok", seconds=10.0) for k in res})
    gpu_check.summarise(report, dict(rein=dict(bf16=res["step_rein_bf16"], fp32=res["step_rein_fp32"]),
                                     full=dict(bf16=res["step_full_bf16"], fp32=res["step_full_fp32"])))
    assert report["ratios"]["measured"] == dict(bf16=dict(time=0.75, memory=0.6), fp32=dict(time=0.8, memory=0.6))
    assert report["status"] == "ok"
    md = gpu_check.format_markdown(report)
    assert "| s / iteration, bf16 autocast | 0.300 | 0.400 | 0.75 | 9.5 h / 11.2 h = 0.85 |" in md
    assert "| peak memory GiB, bf16 autocast | 9.00 | 15.00 | 0.60 | 10.0 / 14.7 GB = 0.68 |" in md
    assert "| hours for 40k iterations, bf16 autocast | 3.3 | 4.4 | | |" in md
    assert "| s / iteration, bf16 + torch.compile | 0.250 |" in md
    assert "NVIDIA H200" in md


@pytest.mark.slow
def test_a_child_over_its_budget_is_ended_with_its_own_children(tmp_path):
    """torchrun's worker must not outlive a timed-out torchrun: the whole session is ended."""
    import os
    import sys
    import time

    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    for cap in (3, 10):  # 3 s is plenty for the child to start its grandchild; 10 on a slow machine
        res = gpu_check.run_child([sys.executable, "-c", code], cap, tmp_path / "none.json", "the sleeper")
        if pid_file.is_file():
            break
    assert res["status"] == "skipped" and f"did not finish within its {cap} s budget" in res["reason"]
    pid = int(pid_file.read_text())

    def dead():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # killed but not yet reaped (a zombie) counts as ended
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    for _ in range(50):
        if dead():
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"grandchild {pid} still alive")


def test_a_phase_cut_short_makes_the_run_partial():
    report = dict(phases=dict(train=dict(status="ok", truncated=True), compile=dict(
        status="skipped", by_choice=True)))
    gpu_check.summarise(report, dict(rein={}, full={}))
    assert report["status"] == "partial"
    report["phases"]["train"] = dict(status="ok")
    gpu_check.summarise(report, dict(rein={}, full={}))
    assert report["status"] == "ok"
    report["phases"]["slide"] = dict(status="failed", error="boom")
    gpu_check.summarise(report, dict(rein={}, full={}))
    assert report["status"] == "failed"
