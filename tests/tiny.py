"""The tests' one tiny run configuration (tests/configs/tiny.json): a 4-block, 32-wide ViT on
32 x 32 random crops, trained for a few steps in well under a second.

Test modules take it from the ``tiny_config`` fixture (tests/conftest.py) or import
:func:`make_tiny_config` from here (``from tiny import make_tiny_config``).
"""
import json
from pathlib import Path

TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "tiny.json"


def make_tiny_config(tmp_path=None, **overrides) -> dict:
    """The tiny config as a dict, ready for ``reinlite.config.load_config``.

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
