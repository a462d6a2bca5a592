"""Student-facing feedback: right answers pass, wrong ones explain themselves, hints come in tiers."""
import pytest
import torch

from reinlite.course import feedback
from reinlite.course.feedback import (HINTS, CheckFailed, check_cases, check_close, check_equal, check_function, check_shape,
                               hint, register_hint, try_check)
from reinlite.models.rein import token_similarity


def test_shape_mismatch_names_both_shapes_and_the_hint():
    with pytest.raises(CheckFailed, match=r"S: expected shape \(2, 3\), got \(3, 2\)\n  hint: Eq. 5"):
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
    with pytest.raises(CheckFailed, match=r"(?s)no answer yet \(got Ellipsis\).*hint: Eq. 12"):
        check_close(..., torch.zeros(2), hint="low_rank_tokens")
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
    with pytest.raises(CheckFailed, match=r"(?s)without_scaling \(example 1\).*hint: Eq. 5"):
        check_function(without_scaling, token_similarity, args, hint="token_similarity")

    def unfinished(f, t):
        raise NotImplementedError

    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_function(unfinished, token_similarity, args)


# ---------------------------------------------------------------- hints in tiers
def _unfinished(f, t):
    raise NotImplementedError


ARGS = [(torch.randn(1, 4, 16), torch.randn(5, 16))]


def test_a_failing_check_shows_the_idea_and_offers_the_code_but_never_prints_it():
    with pytest.raises(CheckFailed) as err:
        check_function(_unfinished, token_similarity, ARGS, hint="token_similarity")
    message = str(err.value)
    assert " ".join(HINTS["token_similarity"].idea.split()) in " ".join(message.split())
    assert HINTS["token_similarity"].code not in message
    assert "hint('token_similarity', 2)" in message


@pytest.mark.parametrize("key", sorted(HINTS))
def test_tier_one_is_an_idea_not_code(key):
    idea, code = HINTS[key]
    assert idea and code and idea != code
    for token in ("torch.", "@ ", ".sum(", "[...", "softmax(", "einsum", "lambda", "np.", "dim=", "reshape("):
        assert token not in idea, f"{key}: tier 1 reads like code ({token!r})"


def test_hint_prints_tier_one_then_tier_two_on_request(capsys):
    hint("drop_first_column")
    first = capsys.readouterr().out
    hint("drop_first_column", 2)
    second = capsys.readouterr().out
    flat = lambda text: " ".join(text.split())
    idea, code = HINTS["drop_first_column"]
    assert flat(idea) in flat(first) and flat(code) not in flat(first)
    assert flat(code) in flat(second) and "tier 2" in second
    with pytest.raises(KeyError, match="no hint called 'nope'; known: "):
        hint("nope")
    with pytest.raises(ValueError, match="tier must be 1"):
        hint("drop_first_column", 3)


def test_free_text_hints_are_shown_as_is_and_notebooks_can_register_their_own(monkeypatch):
    monkeypatch.setattr(feedback, "HINTS", dict(HINTS))
    with pytest.raises(CheckFailed, match=r"hint: think about the axes$"):
        check_shape(torch.zeros(2), (3,), hint="think about the axes")
    register_hint("my_exercise", "the idea", "the code")
    with pytest.raises(CheckFailed, match=r"(?s)hint: the idea\n.*hint\('my_exercise', 2\)"):
        check_shape(torch.zeros(2), (3,), hint="my_exercise")
    assert feedback.hint_text("my_exercise", 2) == "the code"
    assert register_hint("my_exercise", "the idea", "the code")          # same text again: fine
    with pytest.raises(ValueError, match="replace=True"):
        register_hint("my_exercise", "another idea")


def test_equal_without_reveal_never_prints_the_expected_value():
    with pytest.raises(CheckFailed) as err:
        check_equal(2_990_080, 2_990_081, name="count", hint="rein_parameters", reveal=False)
    assert "2,990,081" not in str(err.value) and "2990081" not in str(err.value)
    assert "too low" in str(err.value)
    assert check_equal(7, 7, reveal=False)


def test_try_check_prints_not_yet_and_the_idea(capsys):
    assert try_check(lambda: check_function(_unfinished, token_similarity, ARGS, hint="token_similarity")) is False
    assert try_check(lambda: check_close(torch.ones(2), torch.ones(2)), success="done") is True
    out = capsys.readouterr().out
    assert out.startswith("not yet: _unfinished: not implemented yet\n  hint: Eq. 5") and "\u2713 done" in out
    assert max(len(line) for line in out.splitlines()) <= 100          # wrapped for reading
    assert HINTS["token_similarity"].code not in out


def test_cases_compare_with_known_answers_and_explain_unfinished_work():
    def coverage(S):
        top = S.argmax(-1)
        return torch.bincount(top.flatten(), minlength=S.shape[-1]).double() / top.numel()

    S = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    cases = [((S,), [0.5, 0.25, 0.25]), ((S[2:],), [0.0, 0.5, 0.5])]
    assert check_cases(coverage, cases)
    with pytest.raises(CheckFailed, match=r"uniform \(case 1\): 3 of 3 values differ"):
        check_cases(lambda S: torch.full((3,), 1 / 3), cases, name="uniform")
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_cases(_unfinished_one, cases)


def _unfinished_one(S):
    raise NotImplementedError


def test_notebooks_00_to_05_use_known_hint_keys_and_never_print_tier_two():
    import re
    from pathlib import Path

    import nbformat

    for path in sorted((Path(__file__).parents[1] / "notebooks").glob("0[0-5]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        for key in re.findall(r'hint="([^"]+)"', code):
            assert key in HINTS, f"{path.name}: hint={key!r} is not a key of feedback.HINTS"
        assert not re.search(r"^\s*hint\(\s*['\"]\w+['\"]\s*,\s*2\s*\)", code, re.M), \
            f"{path.name}: a cell asks for tier 2 itself (Run All would print code-level hints)"
        for cell in nb.cells:
            if cell.cell_type == "code" and "solution" not in cell.metadata.get("tags", []):
                assert not re.search(r"^def my_\w+\(.*\):\n(?:.*\n)*?\s+return ", cell.source, re.M) or \
                    "NotImplementedError" in cell.source, f"{path.name}: an exercise stub holds an answer"
