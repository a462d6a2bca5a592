"""Student-facing checks: right answers pass, wrong ones explain themselves."""
import pytest
import torch

from reinlite.checks import CheckFailed, check_close, check_equal, check_function, check_shape
from reinlite.rein import token_similarity


def test_shape_mismatch_names_both_shapes_and_the_hint():
    with pytest.raises(CheckFailed, match=r"S: expected shape \(2, 3\), got \(3, 2\)\n  hint: Eq. 3"):
        check_shape(torch.zeros(3, 2), (2, 3), name="S", hint="token_similarity")


def test_close_reports_the_largest_difference_and_where():
    expected = torch.zeros(2, 3)
    wrong = expected.clone()
    wrong[1, 2] = 0.5
    with pytest.raises(CheckFailed, match=r"1 of 6 values differ; max difference 0.5 at index \(1, 2\)"):
        check_close(wrong, expected)
    assert check_close(expected + 1e-7, expected)


def test_missing_answer_and_nan_are_explained():
    with pytest.raises(CheckFailed, match="no answer yet"):
        check_close(None, torch.zeros(2))
    with pytest.raises(CheckFailed, match="NaN or inf"):
        check_close(torch.tensor([float("nan"), 0.0]), torch.zeros(2))


def test_equal_gives_the_offset_for_counts():
    with pytest.raises(CheckFailed, match=r"off by -1"):
        check_equal(2_990_080, 2_990_081, name="count", hint="rein_parameters")
    assert check_equal(2_990_081, 2_990_081)


def test_function_check_against_the_library():
    def without_scaling(f, t):  # a classic mistake: forgetting 1/sqrt(c)
        return torch.softmax(f @ t.T, dim=-1)

    args = [(torch.randn(1, 4, 16), torch.randn(5, 16))]
    assert check_function(lambda f, t: torch.softmax(f @ t.T / 4.0, -1), token_similarity, args)
    with pytest.raises(CheckFailed, match=r"(?s)without_scaling \(example 1\).*hint: Eq. 3"):
        check_function(without_scaling, token_similarity, args, hint="token_similarity")

    def unfinished(f, t):
        raise NotImplementedError

    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_function(unfinished, token_similarity, args)
