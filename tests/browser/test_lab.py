"""The course in a real browser: JupyterLab as `make lab` starts it, in headless Chromium.

Run by ``make test-browser`` (which installs Debian's chromium / chromium-driver and the
``browser`` extra, and passes the Makefile's LAB_CMD); skipped otherwise, e.g. in ``make
test``. What a student meets is checked by looking at the page, not at the kernel:

- notebook 02's explorer, after Run All (from the Run menu), renders as live controls
  (ipywidgets sliders in the DOM, not the ``interactive(...)`` text of a missing widget
  manager), and a key press and a drag on its sliders each redraw its figure (the image's
  ``src`` changes);
- notebook 00, which does not set a matplotlib backend itself, shows its figures: every code
  cell whose committed version has a figure shows a decoded ``<img>`` in its outputs.

Screenshots go to $REINLITE_BROWSER_DIR (build/browser/): one per step, ``failure-*.png`` when a
step fails (its path is in the failure message), and the server's log in ``lab.log``. The lab
runs with autosave off and the test checks that the notebook files are left unchanged.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
EXPLORER_NB = "02_token_similarity.ipynb"  # token-picker explorer: 4 sliders, fastest with one
FIGURES_NB = "00_setup_and_dgss.ipynb"  # no `%matplotlib inline`: relies on the lab's kernels

LAB_START_S = 180  # server up and answering
KERNEL_S = 180  # kernel started and idle
RUN_ALL_S = 420  # Run All of one notebook in fast mode (~30 s alone on 2 cores)
REDRAW_S = 90  # a slider change redrawn

pytestmark = pytest.mark.skipif(
    os.environ.get("REINLITE_BROWSER_TEST") != "1",
    reason="real-browser test: run `make test-browser` (installs chromium and selenium)",
)


def _out_dir() -> Path:
    out = Path(os.environ.get("REINLITE_BROWSER_DIR", "build/browser"))
    out = out if out.is_absolute() else ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Lab:
    """A JupyterLab server started with LAB_CMD on 127.0.0.1, a free port and a token."""

    def __init__(self, out: Path, tmp: Path):
        cmd = os.environ.get("REINLITE_LAB_CMD")
        if not cmd:
            pytest.fail("REINLITE_LAB_CMD is not set: run the browser test with `make test-browser`")
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        # fresh lab state: settings (autosave off, no news toast), workspaces, runtime files
        settings = tmp / "settings"
        for plugin, values in {"docmanager-extension/plugin": {"autosave": False},
                               "apputils-extension/notification": {"fetchNews": "false",
                                                                   "checkForUpdates": False}}.items():
            path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
        self.argv = shlex.split(cmd) + ["--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                                        "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}"]
        self.log_path = out / "lab.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + LAB_START_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {self.proc.returncode} at start: {self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                if self.api("status") is not None:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {LAB_START_S} s: {self.log_tail()}")
            time.sleep(0.5)

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else {}

    def kernel_state(self, notebook: str) -> str | None:
        for session in self.api("sessions"):
            if session.get("path", "").endswith(notebook) and session.get("kernel"):
                return session["kernel"].get("execution_state")
        return None

    def close_sessions(self) -> None:
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")

    def log_tail(self, n: int = 30) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        return f"command {shlex.join(self.argv[:-1])} ...; last lines of {self.log_path}:\n" + "\n".join(lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server shuts its kernels down
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def out_dir():
    return _out_dir()


@pytest.fixture(scope="module")
def lab(out_dir):
    tmp = Path(tempfile.mkdtemp(prefix="reinlite-lab-"))
    server = Lab(out_dir, tmp)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def start_chromium(out: Path, profile: str):
    """Debian's headless chromium through its chromedriver (no Selenium Manager download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch anything
    browser = shutil.which("chromium") or pytest.fail("no chromium on PATH: apt-get install chromium")
    chromedriver = shutil.which("chromedriver") or pytest.fail("no chromedriver: apt-get install chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    service = Service(executable_path=chromedriver, log_output=str(out / "chromedriver.log"))
    return webdriver.Chrome(service=service, options=options)


@pytest.fixture(scope="module")
def driver(lab, out_dir):
    profile = tempfile.mkdtemp(prefix="reinlite-chromium-")  # a fresh --user-data-dir
    web = start_chromium(out_dir, profile)
    try:
        web.get(f"{lab.url}/lab?token={lab.token}")  # logs in (cookie) for the pages below
        yield web
    finally:
        web.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def notebooks_unchanged():
    """The page runs the committed notebooks; nothing may be written back to them."""
    before = {p.name: _digest(p) for p in NOTEBOOKS.glob("*.ipynb")}
    yield
    changed = [name for name, digest in before.items() if _digest(NOTEBOOKS / name) != digest]
    assert not changed, f"the browser test changed {changed} (autosave should be off)"


class Page:
    """Steps on one notebook page; a failing step saves a screenshot named in its message."""

    def __init__(self, driver, lab: Lab, out: Path, notebook: str):
        self.driver, self.lab, self.out, self.notebook = driver, lab, out, notebook
        self.tag = notebook.split("_")[0]
        self.source = json.loads((NOTEBOOKS / notebook).read_text())

    @contextlib.contextmanager
    def step(self, name: str):
        from selenium.common.exceptions import WebDriverException

        try:
            yield
        except (AssertionError, WebDriverException) as error:
            shot = self.out / f"failure-{self.tag}-{name}.png"
            with contextlib.suppress(WebDriverException):
                self.driver.save_screenshot(str(shot))
            message = getattr(error, "msg", None) or str(error)
            raise AssertionError(f"{self.notebook}: step '{name}' failed: {message}\n"
                                 f"screenshot: {shot}\nserver log: {self.lab.log_path}") from error

    def wait(self, condition, timeout: float, what: str):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(
            condition, message=f"timed out after {timeout:.0f} s waiting for {what}")

    def reveal(self, element) -> None:
        """Scroll ``element`` into the notebook's view and wait until it stays there: cells off
        screen have estimated heights until they render (content-visibility), so the page can
        still move after a scroll."""
        last = []

        def settled(_):
            top = self.js("""
                const e = arguments[0], r = e.getBoundingClientRect();
                const box = (e.closest('.jp-WindowedPanel-outer') || document.documentElement).getBoundingClientRect();
                const fits = r.height <= box.height;
                const shown = fits ? r.top >= box.top && r.bottom <= box.bottom
                                   : r.top >= box.top - 1 && r.top <= box.top + 60;
                if (!shown) { e.scrollIntoView({block: fits ? 'center' : 'start'}); return null; }
                return r.top;""", element)
            stable = top is not None and last and last[-1] == top
            last.append(top)
            return stable

        self.wait(settled, 20, "the element to scroll into view and stay")

    def shot(self, name: str, element=None) -> Path:
        """Screenshot of the page, with ``element`` scrolled into the view."""
        if element is not None:
            self.reveal(element)
        path = self.out / f"{self.tag}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def cells(self):
        """The page's cells, in notebook order (markdown cells included, as in the file)."""
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Notebook .jp-Cell")

    def open(self) -> None:
        workspace = f"browser-{self.tag}"
        with self.step("open"):
            self.driver.get(f"{self.lab.url}/lab/workspaces/{workspace}/tree/{self.notebook}?reset")
            n = len(self.source["cells"])
            self.wait(lambda d: len(self.cells()) == n, KERNEL_S, f"the notebook's {n} cells in the page")
            self.wait(lambda d: self.lab.kernel_state(self.notebook) == "idle", KERNEL_S, "an idle kernel")

    def menu(self, top: str, item: str) -> None:
        """Click ``top`` in the menu bar, then ``item`` in its menu (matched by their labels)."""
        from selenium.webdriver.common.by import By

        def label(css, text):
            return lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, css)
                                   if e.text.strip() == text and e.is_displayed()), None)

        self.wait(label(".lm-MenuBar-itemLabel", top), 30, f"'{top}' in the menu bar").click()
        self.wait(label(".lm-Menu-item .lm-Menu-itemLabel", item), 30, f"'{item}' in the {top} menu").click()

    def prompts(self) -> list[str | None]:
        """Each cell's input prompt ('[3]:', '[*]:', '[ ]:'); None for markdown cells and for code
        cells whose input is collapsed (the solution cells), which show an empty prompt."""
        return self.js("return [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')]"
                       ".map(c => { const p = c.querySelector('.jp-InputPrompt'); return (p && p.textContent) || null; })")

    def images(self, element=None) -> int:
        """Decoded images in the outputs of ``element`` (default: the whole notebook)."""
        return self.js("return [...(arguments[0] || document).querySelectorAll('.jp-OutputArea-output img')]"
                       ".filter(i => i.complete && i.naturalWidth > 0).length", element)

    def run_all(self) -> float:
        """Edit -> Clear Outputs of All Cells (so that nothing committed is left in the page),
        then Run -> Run All Cells; wait for every code cell to finish."""
        code = [i for i, c in enumerate(self.source["cells"]) if c["cell_type"] == "code"]
        with self.step("clear-outputs"):
            self.menu("Edit", "Clear Outputs of All Cells")
            self.wait(lambda d: self.images() == 0 and all(p is None or not re.search(r"\d|\*", p)
                                                           for p in self.prompts()),
                      30, "no output and no execution count left in the page")
        start = time.monotonic()
        with self.step("run-all"):
            self.menu("Run", "Run All Cells")

            def finished(_):
                shown = [p for i, p in enumerate(self.prompts()) if i in code and p is not None]
                if any("*" in p for p in shown):
                    return False
                return all(re.search(r"\[\d+\]", p) for p in shown) or self.errors()

            self.wait(finished, RUN_ALL_S, f"Run All of {len(code)} code cells")
            self.wait(lambda d: self.lab.kernel_state(self.notebook) == "idle", 60, "the kernel to be idle")
            errors = self.errors()
            check(not errors, "a cell raised an error:\n" + "\n---\n".join(errors))
        return time.monotonic() - start

    def errors(self) -> list[str]:
        texts = self.js("return [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output"
                        "[data-mime-type=\"application/vnd.jupyter.stderr\"]')].map(e => e.textContent)")
        return [t[-1500:] for t in texts if "Traceback (most recent call last)" in t or "Error" in t.split("\n")[0]]


def check(condition, message: str) -> None:
    """Like assert, with only ``message`` in the failure (no rewritten-expression diff)."""
    if not condition:
        raise AssertionError(message)


def _explorer_index(source) -> int:
    for i, cell in enumerate(source["cells"]):
        if cell["cell_type"] == "code" and "interact(" in "".join(cell["source"]):
            return i
    raise AssertionError("no explorer (a cell calling widgets.interact) in the notebook")


def _img_src(cell) -> str | None:
    from selenium.webdriver.common.by import By

    imgs = cell.find_elements(By.CSS_SELECTOR, ".widget-output img")
    return imgs[-1].get_attribute("src") if imgs else None


def _readouts(cell) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in cell.find_elements(By.CSS_SELECTOR, ".widget-slider .widget-readout")]


def test_explorer_is_live(driver, lab, out_dir):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page = Page(driver, lab, out_dir, EXPLORER_NB)
    page.open()
    seconds = page.run_all()
    print(f"{EXPLORER_NB}: Run All in the page took {seconds:.0f} s")
    index = _explorer_index(page.source)
    with page.step("widget"):
        cell = page.cells()[index]
        area = cell.find_element(By.CSS_SELECTOR, ".jp-Cell-outputArea")
        page.reveal(area)

        def rendered(_):
            if cell.find_elements(By.CSS_SELECTOR, ".widget-interact .widget-slider .noUi-handle"):
                return "live"
            return "text" if "interactive(children" in area.text else None

        state = page.wait(rendered, 60, "the explorer's output: live sliders (or its text fallback)")
        check(state == "live", (
            "the explorer shows its text fallback, not live controls: is the widget manager "
            "(jupyterlab_widgets) installed where the lab looks for extensions? " + area.text[:200]))
        sliders = cell.find_elements(By.CSS_SELECTOR, ".widget-interact .widget-slider")
        check(len(sliders) >= 2, f"expected the explorer's sliders, found {len(sliders)}")
        page.wait(lambda d: _img_src(cell), REDRAW_S, "the explorer's first figure")
    explorer = cell.find_element(By.CSS_SELECTOR, ".widget-interact")
    page.shot("explorer-after-run-all", explorer)

    with page.step("key"):  # focus the last slider's handle (column), press the right arrow
        before_src, before_values = _img_src(cell), _readouts(cell)
        handle = sliders[-1].find_element(By.CSS_SELECTOR, ".noUi-handle")
        page.js("arguments[0].focus()", handle)
        handle.send_keys(Keys.ARROW_RIGHT)
        page.wait(lambda d: _readouts(cell) != before_values, 30, "the slider's readout to change on a key")
        page.wait(lambda d: _img_src(cell) not in (None, before_src), REDRAW_S, "the figure to redraw after a key")
    page.shot("explorer-after-key", explorer)

    with page.step("drag"):  # drag the first slider's handle (scene) to the right
        before_src, before_values = _img_src(cell), _readouts(cell)
        handle = sliders[0].find_element(By.CSS_SELECTOR, ".noUi-handle")
        width = sliders[0].find_element(By.CSS_SELECTOR, ".noUi-target").size["width"]
        ActionChains(driver).click_and_hold(handle).move_by_offset(max(width // 2, 20), 0).release().perform()
        page.wait(lambda d: _readouts(cell) != before_values, 30, "the slider's readout to change on a drag")
        page.wait(lambda d: _img_src(cell) not in (None, before_src), REDRAW_S, "the figure to redraw after a drag")
    page.shot("explorer-after-drag", explorer)
    lab.close_sessions()


def test_figures_show(driver, lab, out_dir):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By

    page = Page(driver, lab, out_dir, FIGURES_NB)
    page.open()
    seconds = page.run_all()
    print(f"{FIGURES_NB}: Run All in the page took {seconds:.0f} s")
    explorer = _explorer_index(page.source)
    wanted = [i for i, c in enumerate(page.source["cells"]) if i != explorer and c["cell_type"] == "code"
              and any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
    assert wanted, f"{FIGURES_NB} has no committed figure to look for"
    with page.step("figures"):
        cells = page.cells()
        missing = lambda: [i for i in wanted if not page.images(cells[i])]  # noqa: E731
        with contextlib.suppress(TimeoutException):  # images decode within a moment of the run
            page.wait(lambda d: not missing(), 20, "the figures to decode")
        check(not missing(), (
            f"cells {missing()} show no figure in the page, though their committed versions have one "
            f"(of {wanted}); the lab's kernels need an inline matplotlib backend (LAB_ENV in the Makefile)"))
    for i in wanted[:3]:
        page.shot(f"figure-cell{i}", cells[i].find_element(By.CSS_SELECTOR, ".jp-OutputArea-output img"))
    print(f"{FIGURES_NB}: {page.images()} figures in the page, cells {wanted} checked")
    lab.close_sessions()
