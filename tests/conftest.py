"""Shared test setup: offline hubs, few threads, deterministic seeds, the one tiny config.

Tiers: ``pytest -m "not slow"`` (``make test-fast``) is the unit signal; tests marked
``@pytest.mark.slow`` run whole programs (training runs, sweeps, pretraining, DDP, otter
grading, notebook execution) and run with everything else in ``make test``.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# idle OpenMP threads sleep rather than spin: on a shared machine spinning threads wait for a
# core another job holds (docs/speed.md, "Threads on a shared machine"); set before torch starts
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
from tiny import make_tiny_config  # noqa: E402  (tests/tiny.py)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(tmp_path, **overrides) -> dict``: the tests' one tiny run config
    (tests/configs/tiny.json); see :func:`tiny.make_tiny_config`."""
    return make_tiny_config


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def one_thread():
    """Tiny models: one thread avoids waiting for a second core that another job holds.
    Test modules of small training runs opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
