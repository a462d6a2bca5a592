"""The notebooks' figures: the training-log figure reads a real log.jsonl, with and without Rein's
diagnostics; panel titles are wrapped to their panel instead of running into the next one."""
import json

import numpy as np
import pytest

from reinlite.course.figures import _wrap, read_training_log, show_images, similarity_maps, training_log_figure
from reinlite.weights import WEIGHTS_DIR


def test_shipped_course_run_log_has_reins_diagnostics():
    lines = read_training_log(WEIGHTS_DIR / "course_run.log.jsonl")
    assert lines[0]["step"] == 1 and lines[-1]["step"] == 600
    assert all({"loss", "lr", "rein_scale", "rein_delta_ratio", "query_cosine"} <= set(e) for e in lines)
    fig = training_log_figure(lines, scale_init=1e-3)
    assert len(fig.axes) == 4
    scale_line = fig.axes[3].get_lines()[0]
    assert scale_line.get_xdata()[0] == 0 and scale_line.get_ydata()[0] == pytest.approx(1e-3)
    assert scale_line.get_ydata()[-1] == pytest.approx(abs(lines[-1]["rein_scale"]))


def test_baseline_log_says_it_has_no_rein_diagnostics(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(dict(step=k, lr=1e-3 / k, loss=10.0 / k, grad_norm=1.0)) + "\n"
                            for k in (1, 2, 3)))
    fig = training_log_figure(path)
    assert "no Rein diagnostics" in fig.axes[3].texts[0].get_text()
    assert not fig.axes[3].get_lines()
    with pytest.raises(FileNotFoundError, match="no training log"):
        read_training_log(tmp_path / "missing.jsonl")


def test_a_broken_log_line_is_named(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss"\n')
    with pytest.raises(ValueError, match=r"log.jsonl, line 2: not a JSON object"):
        read_training_log(path)


def test_long_titles_wrap_to_their_panel():
    title = "token = mean vegetation feature (scene 0)"
    assert "\n" in _wrap(title, 2.0) and _wrap(title, 2.0).replace("\n", " ") == title
    assert _wrap("draw 0", 2.0) == "draw 0"
    image = np.zeros((16, 32, 3), np.uint8)
    fig = similarity_maps(image, np.random.rand(3, 8), grid=(2, 4), titles=[title] * 3, ncols=3, size=2.0)
    assert all("\n" in ax.get_title() for ax in fig.axes[:3])
    short = show_images([image] * 2, size=1.6).get_size_inches()[1]
    titled = show_images([image] * 2, titles=["a", "b"], size=1.6).get_size_inches()[1]
    assert titled > short            # room for the title line above each row
