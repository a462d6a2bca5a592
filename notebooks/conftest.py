"""pytest settings for the notebook checks (nbval).

Scheduling. nbval makes every cell of a notebook one test item, and the cells of a notebook
share one kernel, so they must run in order in the same pytest-xdist worker. xdist's default
"load" scheduling hands items to workers one by one, which splits a notebook across workers
(its later cells then fail with NameError). Schedule whole files per worker instead, as
``--dist loadfile`` would, so that ``pytest -n 2 --nbval-lax notebooks/*.ipynb`` works as is.

Figures. After the last cell of each notebook one more item, ``<notebook>::figures``, counts
the ``image/png`` outputs that the cells drew in this run and fails when the notebook drew
none while the file nbval read (the committed notebook, on a fresh clone) has some. `make
test-notebooks` runs nbval in the environment `make lab` gives its kernels (LAB_ENV in the
Makefile: an inline matplotlib backend), so this is the check that a student who opens the
notebook in JupyterLab sees its figures; with ``MPLBACKEND=Agg`` a notebook that does not
switch the backend itself draws nothing, and fails here. The summary lists the counts.
"""
from __future__ import annotations

import os

import pytest

IMAGE_MIME = "image/png"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    return LoadFileScheduling(config, log)


def count_images(outputs) -> int:
    """Number of outputs in ``outputs`` (nbformat outputs or nbval's) that carry a PNG."""
    return sum(1 for out in outputs or () if IMAGE_MIME in (out.get("data") or {}))


class NotebookFiguresError(AssertionError):
    """A notebook whose committed version has figures drew none in this run."""


class FiguresItem(pytest.Item):
    """Checks, after a notebook's cells ran, that it drew figures if its committed file has."""

    def __init__(self, *, cells, **kwargs):
        super().__init__(**kwargs)
        self.cells = cells  # nbval's IPyNbCell items of this notebook, in order

    def runtest(self):
        ran = [c for c in self.cells if c.test_outputs is not None or c.options.get("skip")]
        if len(ran) < len(self.cells):
            pytest.skip(f"only {len(ran)} of the notebook's {len(self.cells)} code cells ran")
        committed = [count_images(c.cell.get("outputs")) for c in self.cells]
        drawn = [count_images(c.test_outputs) for c in self.cells]
        self.user_properties.append(("figures", (sum(drawn), sum(committed))))
        if sum(committed) and not sum(drawn):
            missing = [c.cell_num for c, want, got in zip(self.cells, committed, drawn) if want and not got]
            raise NotebookFiguresError(
                f"{self.path.name} drew no figure in this run, but its committed version has "
                f"{sum(committed)} (code cells {missing}). The kernel ran with "
                f"MPLBACKEND={os.environ.get('MPLBACKEND')!r}: under `make lab` a student would see "
                "no figure either. Kernels need an inline backend (LAB_ENV in the Makefile), and "
                "a notebook must not switch it off (matplotlib.use('Agg'))."
            )

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, NotebookFiguresError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"{self.path.name}::figures"


def pytest_collection_modifyitems(session, config, items):
    """Insert a FiguresItem after the last cell of every notebook nbval collected."""
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: nothing to add
        return
    out, cells = [], []
    for index, item in enumerate(items):
        out.append(item)
        if not isinstance(item, IPyNbCell):
            continue
        cells.append(item)
        following = items[index + 1] if index + 1 < len(items) else None
        if following is None or getattr(following, "parent", None) is not item.parent:
            out.append(FiguresItem.from_parent(item.parent, name="figures", cells=cells))
            cells = []
    items[:] = out


def pytest_terminal_summary(terminalreporter):
    counts = []
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        for key, value in getattr(report, "user_properties", ()):
            if key == "figures":
                counts.append((report.nodeid.split("::")[0].rsplit("/", 1)[-1], value))
    if counts:
        parts = [f"{name.split('_')[0]} {drawn}/{committed}" for name, (drawn, committed) in sorted(counts)]
        terminalreporter.write_line("figures drawn / committed per notebook: " + ", ".join(parts))
