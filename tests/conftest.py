"""Shared test setup: offline hubs, few threads, deterministic seeds, the one tiny config.

Tiers: ``pytest -m "not slow"`` (``make test-fast``) is the unit signal; tests marked
``@pytest.mark.slow`` run whole programs (training runs, sweeps, pretraining, DDP, otter
grading, notebook execution) and run with everything else in ``make test``.
"""
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# idle OpenMP threads sleep rather than spin: on a shared machine spinning threads wait for a
# core another job holds (docs/speed.md, "Threads on a shared machine"); set before torch starts
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

#: the one tiny run configuration of the tests: a 4-block, 32-wide ViT on 32 x 32 random crops
TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "tiny.json"


def make_tiny_config(tmp_path=None, **overrides) -> dict:
    """The tiny config (tests/configs/tiny.json) as a dict, ready for ``load_config``.

    ``tmp_path``: the run goes to ``tmp_path / "run"`` (no ``out_dir`` when None).
    ``overrides``: top-level keys; a dict is merged into that section key by key
    (``optim={"iters": 2}`` keeps the other optim keys), anything else replaces it
    (``out_dir=...``, ``seed=1``)."""
    cfg = json.loads(TINY_CONFIG.read_text())
    if tmp_path is not None:
        cfg["out_dir"] = str(Path(tmp_path) / "run")
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(tmp_path, **overrides) -> dict``: see :func:`make_tiny_config`."""
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
