"""pytest settings for the notebook checks (nbval).

nbval makes every cell of a notebook one test item, and the cells of a notebook share one
kernel, so they must run in order in the same pytest-xdist worker. xdist's default "load"
scheduling hands items to workers one by one, which splits a notebook across workers (its
later cells then fail with NameError). Schedule whole files per worker instead, as
``--dist loadfile`` would, so that ``pytest -n 2 --nbval-lax notebooks/*.ipynb`` works as is.
"""
import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    return LoadFileScheduling(config, log)
