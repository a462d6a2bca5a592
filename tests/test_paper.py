"""reinlite.course.paper: the transcribed numbers are self-consistent and gaps are explicit."""
import pytest

from reinlite.course import paper


@pytest.mark.parametrize("backbone", sorted(paper.GTA5_TO_CBM))
def test_every_average_is_the_mean_of_its_three_targets(backbone):
    for method, row in paper.GTA5_TO_CBM[backbone].items():
        mean = sum(row[t] for t in paper.TARGETS) / 3
        assert abs(mean - row["avg"]) < 0.1, (backbone, method)   # the paper averages unrounded values


def test_what_is_not_transcribed_says_so_and_the_rest_is_in_the_table():
    for backbone, method in paper.MISSING:
        assert method not in paper.GTA5_TO_CBM[backbone]
    table = paper.markdown_table()
    assert "| MAE-L | full | not transcribed |" in table
    frozen = paper.GTA5_TO_CBM["MAE-L"]["frozen"]
    assert f"| MAE-L | frozen | {frozen['cityscapes']:.1f} | {frozen['bdd100k']:.1f} |" in table


def test_exact_counts_round_to_what_the_paper_reports():
    for key, exact in paper.REIN_PARAMS.items():
        assert round(exact / 1e6, 2) == paper.REIN_PARAMS_PAPER_M[key]
