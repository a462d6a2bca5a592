"""`reinlite bench` on a tiny configuration: the output's structure (timings are not asserted)."""
import json
import os

import pytest

from reinlite.experiments import costs as bench
from reinlite.cli import main


@pytest.mark.slow
def test_bench_tiny_in_process_writes_tables_and_json(tmp_path, capsys):
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    rc = main(["bench", "--tiny", "--in-process", "--repeats", "1", "--steps", "1", "--warmup", "0",
               "--json", str(out_json), "--markdown", str(out_md), "--figure", str(tmp_path / "b.png")])
    assert rc == 0
    report = json.loads(out_json.read_text())
    assert list(report["step"]) == list(bench.METHODS)
    for method, r in report["step"].items():
        assert r["median_s"] > 0 and r["cpu_s"] > 0 and r["wall_s"] > 0
        assert r["peak_bytes"] >= r["static_bytes"] > 0
        assert (r["trainable"] == 0) == (method in ("frozen", "frozen+bwd"))
    assert set(report["backbone"]) == {"rein", "frozen+bwd", "full"}
    s = report["summary"]
    for key in ("rein_layer_overhead_step", "rein_layer_overhead_backbone", "rein_vs_full_time",
                "rein_vs_full_peak_memory", "rein_vs_frozen_step", "rein_vs_full_time_backbone",
                "frozen_vs_full_time", "frozen_vs_full_peak_memory"):
        assert isinstance(s[key], float)
    assert set(s["met"]) == set(s["targets"])
    assert report["counts"]["DINOv2-S"]["rein"] == 684_033 and report["counts"]["DINOv2-S"]["frozen"] == 0
    text = capsys.readouterr().out
    for needle in ("| method | trainable (backbone) |", "Rein step / full fine-tuning step", "| DINOv2-S |"):
        assert needle in text
    assert out_md.read_text().startswith("### Training step")
    assert (tmp_path / "b.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_fresh_process_measurement():
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(bench.MMAP_THRESHOLD))
    spec = dict(method="lora", cfg=bench.tiny_config(), steps=1, warmup=0, amp="bf16", part="step", threads=1)
    r = bench._spawn(spec, env)
    assert r["method"] == "lora" and r["amp"] == "bf16" and len(r["times"]) == 1
    assert r["trainable"] == 4 * 8 * (32 + 96)  # L * r * (c + 3c)
    assert r["peak_extra_bytes"] > 0


def test_unknown_method_is_a_clear_error(capsys):
    assert main(["bench", "--tiny", "--methods", "rein", "prefix"]) == 2
    assert "unknown bench method 'prefix'" in capsys.readouterr().err
