"""The otter-grader assignments: build, grade the solution (full marks), grade the blank
student version (zero, every check failing with a clean message), no solutions handed out.

One test per master so that pytest-xdist spreads them over workers. Each one runs
``otter assign`` (without its own solution run: grading the solution notebook below with the
autograder zip checks the same thing through the grading path) and then ``grade.py``, which
calls ``otter run`` on the solution and on the unfilled student notebook.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

otter = pytest.importorskip("otter", reason="otter-grader is not installed (pip install -e '.[assignments]')")
nbformat = pytest.importorskip("nbformat")

HERE = Path(__file__).resolve().parents[1] / "notebooks" / "assignments"
MASTERS = sorted(HERE.glob("a[0-9]*_*.ipynb"))
sys.path.insert(0, str(HERE))


def _env():
    env = dict(os.environ, REINLITE_FAST="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def _run(cmd, cwd, timeout=300):
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _solution_lines(master: Path) -> list[str]:
    """Substantial lines inside the master's solution blocks (code cells and markdown answers)."""
    nb = nbformat.read(master, as_version=4)
    lines, inside_block = [], False
    for cell in nb.cells:
        src = cell.source
        if cell.cell_type == "raw" and src.strip() in ("# BEGIN SOLUTION", "# END SOLUTION"):
            inside_block = src.strip() == "# BEGIN SOLUTION"
            continue
        if not inside_block:
            continue
        inside = cell.cell_type == "markdown"
        for line in src.splitlines():
            if line.strip().startswith("# BEGIN SOLUTION"):
                inside = True
                continue
            if line.strip().startswith("# END SOLUTION"):
                inside = False
                continue
            if inside and len(line.strip()) >= 16 and not line.strip().startswith("#"):
                lines.append(line.strip())
    return lines


def test_masters_exist():
    names = [m.stem for m in MASTERS]
    assert len(names) >= 2, names
    for master in MASTERS:
        nb = nbformat.read(master, as_version=4)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
            f"{master.name}: masters are stored without outputs"


def test_public_wording():
    from public_checks import _reword_html, _reword_text

    text = _reword_text("q1 results: All test cases passed!", "q1")
    assert "All test cases passed" not in text and "public checks" in text and "hidden" in text
    html = _reword_html("<p><strong><pre style='display: inline;'>q1</pre></strong> passed! 🎉</p>", "q1")
    assert "public checks passed" in html and "hidden" in html
    text = _reword_text("q1 results:\n    q1 - 1 result:\n        ❌ Test case failed", "q1")
    assert text.startswith("q1 public checks:") and "public check 1 result:" in text


@pytest.mark.slow
@pytest.mark.parametrize("master", MASTERS, ids=[m.stem for m in MASTERS])
def test_build_and_grade(master, tmp_path):
    name = master.stem
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "otter", "assign", "--no-run-tests", "--no-pdfs",
          str(master), str(dist / name)], cwd=HERE)
    student = dist / name / "student" / f"{name}.ipynb"
    solution = dist / name / "autograder" / f"{name}.ipynb"
    assert student.is_file() and solution.is_file()
    assert (dist / name / "student" / "public_checks.py").is_file()
    assert list((dist / name / "autograder").glob(f"{name}-autograder_*.zip"))

    # the student version: no solution code, public tests only
    student_nb = nbformat.read(student, as_version=4)
    student_text = "\n".join(c.source for c in student_nb.cells)
    leaked = [line for line in _solution_lines(master) if line in student_text]
    assert not leaked, f"solution lines in the student notebook: {leaked[:5]}"
    tests = student_nb.metadata["otter"]["tests"]
    assert tests and all("hidden=True" not in source for source in tests.values())

    # grade the solution and the untouched student notebook
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    (submissions / "solution.ipynb").write_bytes(solution.read_bytes())
    (submissions / "blank.ipynb").write_bytes(student.read_bytes())
    out = tmp_path / "grades"
    _run([sys.executable, str(HERE / "grade.py"), name, str(submissions), "--dist", str(dist),
          "--out", str(out)], cwd=HERE, timeout=600)

    def results(which):
        data = json.loads((out / name / which / "results.json").read_text())
        return {t["name"]: t for t in data["tests"] if "score" in t}

    solved = results("solution")
    assert solved and all(t["score"] == t["max_score"] > 0 for t in solved.values()), \
        {k: (t["score"], t["max_score"], t.get("output", "")[-800:]) for k, t in solved.items()}

    blank = results("blank")
    assert set(blank) == set(solved)
    for question, t in blank.items():
        assert t["score"] == 0, (question, t["output"][-800:])
        output = t["output"]
        failed = output.count("Test case failed")
        clean = len(re.findall(r"^\s*(CheckFailed|AssertionError): ", output, flags=re.M))
        assert failed >= 1 and clean == failed, f"{question}: a check crashed instead of failing cleanly:\n{output}"


@pytest.mark.slow
def test_hidden_checks_catch_what_public_checks_miss(tmp_path):
    """An answer hard-coded for the public example's shape, or one that calls the library,
    passes the public check of a1's first question and fails its hidden check."""
    import torch
    from otter.test_files.exception_test import ExceptionTestFile

    master = HERE / "a1_rein_layer.ipynb"
    _run([sys.executable, "-m", "otter", "assign", "--no-run-tests", "--no-pdfs", str(master),
          str(tmp_path / "a1")], cwd=HERE)
    nb = nbformat.read(tmp_path / "a1" / "autograder" / "a1_rein_layer.ipynb", as_version=4)
    tests = ExceptionTestFile.from_string(nb.metadata["otter"]["tests"]["q1_token_similarity"], "q1")

    def hard_coded(features, tokens):  # sqrt(8): right only for the public example's c = 8
        return (features @ tokens.T / 8 ** 0.5).softmax(-1)

    notebook = {}  # answers defined as in a notebook: at top level, in one namespace
    exec("import reinlite.models.rein as library\n"
         "def borrowed(features, tokens):\n    return library.token_similarity(features, tokens)\n"
         "def imported(features, tokens):\n    from reinlite.models.rein import token_similarity as ts\n"
         "    return ts(features, tokens)\n", notebook)

    for answer in (hard_coded, notebook["borrowed"], notebook["imported"]):
        tests.run({"token_similarity": answer, "torch": torch})
        verdicts = {r.test_case.hidden: r.passed for r in tests.test_case_results}
        assert verdicts == {False: True, True: False}, (answer.__name__, [r.message for r in tests.test_case_results])
