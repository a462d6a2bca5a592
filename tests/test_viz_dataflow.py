"""reinlite.course.figures.rein_dataflow_figure: the data-flow figure of notebook 00 is drawn by code."""
from reinlite.course import figures as viz


def test_dataflow_figure_names_every_stage_and_saves(tmp_path):
    fig = viz.rein_dataflow_figure(num_blocks=5, path=tmp_path / "flow.png")
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for stage in ("block 1", "Rein 1", "Rein 3", "Rein L", "pixel decoder", "Mask2Former",
                  "queries [m, Q]", "max | mean | last", "7, 11, 15, 23"):
        assert stage in texts, stage
    assert (tmp_path / "flow.png").stat().st_size > 10_000
