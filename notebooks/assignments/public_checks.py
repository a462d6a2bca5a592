"""``grader.check`` for the reinlite assignments: otter's checks, honestly worded.

A student's notebook carries only the *public* checks of each question; the autograder adds
hidden checks (the same comparisons on other seeds and shapes). Otter's own summary says
"All test cases passed!" when the public checks pass, which reads as a final verdict. This
module wraps :class:`otter.Notebook` so that the same results are shown as "public checks
passed", with a reminder that hidden checks run at grading. Nothing else changes: the checks,
the scores, the log and grading mode are otter's.

It ships next to every student notebook (the ``files:`` list of each master's assignment
config) and is imported by the notebook's first cell::

    from public_checks import Notebook
    grader = Notebook("a1_rein_layer.ipynb")
    grader.check("q1_token_similarity")
"""
from __future__ import annotations

import re
import sys
from typing import Any, Optional

import otter

__all__ = ["Notebook", "PublicCheckResult", "HIDDEN_NOTE"]

HIDDEN_NOTE = ("This is not your grade: after you submit, the autograder also runs hidden checks "
               "(the same comparisons on other seeds and shapes).")


def _reword_text(text: str, name: str) -> str:
    text = text.replace(f"{name} results: All test cases passed!",
                        f"{name}: all public checks passed. {HIDDEN_NOTE}")
    text = text.replace(f"{name} results:", f"{name} public checks:")
    return re.sub(rf"{re.escape(name)} - (\d+) (result|message):", r"public check \1 \2:", text)


def _reword_html(html: str, name: str) -> str:
    html = re.sub(r"</strong> passed! \S*</p>",
                  f"</strong>: all public checks passed.</p><p>{HIDDEN_NOTE}</p>", html, count=1)
    html = html.replace("</pre> results:</strong>", "</pre> public checks:</strong>")
    return re.sub(rf"{re.escape(name)} - (\d+)</pre> (result|message)",
                  r"public check \1</pre> \2", html)


class PublicCheckResult:
    """otter's result of one ``grader.check``, displayed as public checks (all data unchanged)."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)

    def __repr__(self) -> str:
        return _reword_text(repr(self.result), self.result.name)

    def _repr_html_(self) -> str:
        return _reword_html(self.result._repr_html_(), self.result.name)


class Notebook(otter.Notebook):
    """:class:`otter.Notebook` whose ``check`` results say "public checks"."""

    def check(self, question: str, global_env: Optional[dict[str, Any]] = None) -> Any:
        if global_env is None:  # otter finds the caller's globals by frame depth: pass them
            global_env = sys._getframe(1).f_globals
        result = super().check(question, global_env)
        return PublicCheckResult(result) if result is not None else None
