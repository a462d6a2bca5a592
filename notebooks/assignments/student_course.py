#!/usr/bin/env python
"""The student edition of the course notebooks: the collapsed solution cells removed.

    python student_course.py --out dist/course ../0*.ipynb ../10_*.ipynb   # (make build does this)

The course notebooks solve their exercises in collapsed cells tagged ``solution`` (defining
``solution_*`` names). JupyterLab hides them, but GitHub, nbviewer and Colab show them, and
several of them are exactly the graded functions of assignments 1 and 2. The edition handed to
students therefore drops every cell tagged ``solution`` and, in the other code cells, every
statement that uses a ``solution_*`` name (the closing "notebook == reinlite" checks compare the
solutions with the library too); such a statement becomes ``pass`` with a comment, so loops and
blocks stay valid Python. Everything else (markdown, stubs, checks, outputs, the collapsed
answers to the questions) is kept. A notebook whose cell mentions a solution name but cannot be
parsed as Python is refused with an error naming the file and the cell, rather than shipped
half-stripped.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any

import nbformat

SOLUTION_TAG = "solution"
SOLUTION_PREFIX = "solution_"
NOTICE = ("*Student edition: the collapsed solution cells of this notebook were removed (built by "
          "`make assignments`; the full course is in the repository's `notebooks/`).*")
REMOVED = "pass  # a check of the removed solution (student edition)"


def is_solution_cell(cell: Any) -> bool:
    """A cell tagged ``solution`` (the course's collapsed solution cells)."""
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def _uses_solution(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id.startswith(SOLUTION_PREFIX) for n in ast.walk(node))


def remove_solution_statements(source: str, where: str = "cell") -> str:
    """``source`` with each statement that uses a ``solution_*`` name replaced by ``pass``.

    The outermost such statement inside each block is replaced (a statement containing a block
    whose only use is nested deeper is kept and its inner statement replaced). Raises ValueError
    naming ``where`` when ``source`` mentions a solution name but is not valid Python.
    """
    if SOLUTION_PREFIX not in source:
        return source
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"{where}: mentions {SOLUTION_PREFIX}* but is not plain Python ({err.msg}, "
                         f"line {err.lineno}); cannot strip it safely") from None
    lines = source.splitlines()
    spans: list[tuple[int, int, int]] = []      # (first line, last line, indent), 1-based

    blocks = ("body", "orelse", "finalbody", "handlers")

    def visit(body: list) -> None:
        for stmt in body:
            if not _uses_solution(stmt):
                continue
            header_uses = any(_uses_solution(node) for field, node in ast.iter_fields(stmt)
                              if field not in blocks and isinstance(node, ast.AST))
            nested = [getattr(stmt, field) for field in blocks if getattr(stmt, field, None)]
            if nested and not header_uses:
                for block in nested:
                    for item in block:
                        visit(item.body if isinstance(item, ast.ExceptHandler) else [item])
            else:
                spans.append((stmt.lineno, stmt.end_lineno, stmt.col_offset))

    visit(tree.body)
    for first, last, indent in sorted(spans, reverse=True):
        lines[first - 1:last] = [" " * indent + REMOVED]
    return "\n".join(lines) + ("\n" if source.endswith("\n") else "")


def student_edition(nb: Any, where: str = "notebook") -> Any:
    """A copy of ``nb`` without its solution cells and without statements using their names."""
    out = nbformat.from_dict(nbformat.v4.new_notebook())
    out.metadata = nb.metadata
    out.nbformat, out.nbformat_minor = nb.nbformat, nb.nbformat_minor
    notice = nbformat.v4.new_markdown_cell(NOTICE)
    notice.id = "student-edition-notice"
    cells = [notice]
    for index, cell in enumerate(nb.cells):
        if is_solution_cell(cell):
            continue
        if cell.cell_type == "code":
            cell = nbformat.from_dict(dict(cell))
            cell.source = remove_solution_statements(cell.source, f"{where}, cell {index}")
        cells.append(cell)
    out.cells = cells
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the student edition")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        edition = student_edition(nb, str(path))
        nbformat.validate(edition)
        nbformat.write(edition, args.out / path.name)
        dropped = sum(is_solution_cell(c) for c in nb.cells)
        print(f"{path.name}: {dropped} solution cell{'s' if dropped != 1 else ''} removed -> {args.out / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
