"""The package's folders are its architecture: the core imports no course or experiment code,
and no module grows past 500 lines."""
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reinlite"
CORE = ["reinlite", "reinlite.config", "reinlite.config_checks", "reinlite.weights", "reinlite.viz",
        "reinlite.models.segmentor", "reinlite.models.baselines", "reinlite.engine.train",
        "reinlite.engine.evaluate", "reinlite.engine.demo", "reinlite.engine.step", "reinlite.data.pipeline",
        "reinlite.data.kinds", "reinlite.data.hf", "reinlite.data.pairs"]


def test_core_imports_no_course_or_experiment_code():
    code = ("import importlib, sys\n"
            f"for m in {CORE!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('reinlite.course', 'reinlite.experiments'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout.strip()
    assert out == "[]", f"the core pulled in: {out}"


def test_no_module_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_top_level_shows_the_architecture():
    names = {p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", "."))}
    assert {"models", "engine", "data", "course", "experiments", "weights", "config.py"} <= names
