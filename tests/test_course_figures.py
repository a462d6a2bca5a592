"""The notebooks' training-log figure reads a real log.jsonl, with and without Rein's diagnostics."""
import json

import pytest

from reinlite.course.figures import read_training_log, training_log_figure
from reinlite.weights import WEIGHTS_DIR


def test_shipped_course_run_log_has_reins_diagnostics():
    lines = read_training_log(WEIGHTS_DIR / "course_run.log.jsonl")
    assert lines[0]["step"] == 1 and lines[-1]["step"] == 600
    assert all({"loss", "lr", "rein_scale", "rein_delta_ratio", "query_cosine"} <= set(e) for e in lines)
    fig = training_log_figure(lines)
    assert len(fig.axes) == 4


def test_baseline_log_draws_three_panels(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(dict(step=k, lr=1e-3 / k, loss=10.0 / k, grad_norm=1.0)) + "\n"
                            for k in (1, 2, 3)))
    assert len(training_log_figure(path).axes) == 3
    with pytest.raises(FileNotFoundError, match="no training log"):
        read_training_log(tmp_path / "missing.jsonl")
