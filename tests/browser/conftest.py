"""Browser tests: JupyterLab from the project's environment on 127.0.0.1 (a free port, a token), driven
by Playwright in Debian's headless Chromium, launched by path; no browser is downloaded.

Skipped, with the reason, when chromium or playwright is missing; ``SAMLLAVA_REQUIRE_BROWSER=1``
(``make test-browser``) turns the skip into a failure. ``SAMLLAVA_BROWSER_PROFILE`` (default ``tiny``)
picks the notebooks' profile; ``SAMLLAVA_SCREENSHOTS=DIR`` saves screenshots of the panels there
(``make screenshots`` writes the default profile's into figures/).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROFILE = os.environ.get("SAMLLAVA_BROWSER_PROFILE", "tiny")
SCREENSHOTS = os.environ.get("SAMLLAVA_SCREENSHOTS")
# the notebooks' parameters in the browser besides the profile; the explorer's data_roots (a user-style folder
# written by the lab fixture) are added in _prepare
NOTEBOOKS = {
    "explore_heatmaps.ipynb": {},
    "try_your_own_image.ipynb": {},
}
OWN = "own"  # the user-style folder, under the lab's root
# JupyterLab's news and update checks go to the internet: off, so the console has nothing to report
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False}
}


def chromium() -> str | None:
    return os.environ.get("SAMLLAVA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (it is in requirements.txt: make venv)"
    if chromium() is None:
        return "chromium not found on PATH (Debian: apt-get install -y chromium; .ci/run installs it)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = missing()
    for item in items:
        if Path(str(item.fspath)).parent != Path(__file__).parent:
            continue
        item.add_marker(pytest.mark.browser)
        if reason is not None:
            if os.environ.get("SAMLLAVA_REQUIRE_BROWSER") == "1":
                raise pytest.UsageError(f"browser tests required (SAMLLAVA_REQUIRE_BROWSER=1) but {reason}")
            item.add_marker(pytest.mark.skip(reason=f"browser test skipped: {reason}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare(root: Path) -> None:
    """The notebooks, with their parameters injected as papermill would (the explorer pointed at a user-style
    folder: photos of their own size, two categories, no masks), and JupyterLab's settings."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from tests.user_folder import write_user_folder

    own = write_user_folder(root / OWN)
    for name, params in NOTEBOOKS.items():
        if name == "explore_heatmaps.ipynb":
            params = {**params, "data_roots": {"own": str(own)}}
        nb = parameterize_notebook(load_notebook_node(str(ROOT / "notebooks" / name)), {"profile": PROFILE, **params})
        nbformat.write(nb, root / "work" / name)
    for name, value in LAB_SETTINGS.items():
        path = root / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


class Lab:
    def __init__(self, url: str, token: str, root: Path, process: subprocess.Popen, log: Path) -> None:
        self.url, self.token, self.root, self.process, self.log = url, token, root, process, log

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab from this interpreter's environment, serving a folder of parameterised notebooks."""
    root = tmp_path_factory.mktemp("lab")
    (root / "work").mkdir()
    _prepare(root)
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "SAMLLAVA_RESULTS_DIR": str(root / "results"),
        "SAMLLAVA_FIGURES_DIR": str(root / "figures"),
        "SAMLLAVA_CHECKPOINT_DIR": str(root / "checkpoints"),
        "SAMLLAVA_DATA_DIR": os.environ.get("SAMLLAVA_DATA_DIR") or str(root / "data"),
    }
    if PROFILE == "tiny":  # the panel's default trained model, built once here in a cache of the test's own
        env["SAMLLAVA_WEIGHTS_DIR"] = str(root / "weights")
        subprocess.run([sys.executable, "-m", "samllava", "train", "--profile", PROFILE, "--no-progress"], env=env,
                       check=True, capture_output=True)
    log = root / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root / 'work'}",
        f"--LabApp.user_settings_dir={root / 'settings'}",
        f"--LabApp.workspaces_dir={root / 'workspaces'}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.open_browser=False",
    ] + (["--allow-root"] if os.geteuid() == 0 else [])
    with open(log, "w") as out:
        process = subprocess.Popen(
            cmd, cwd=root / "work", env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer on {url} within 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Lab(url, token, root, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    profile_dir = tempfile.mkdtemp(prefix="samllava-chromium-")  # an empty user-data-dir
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile_dir,
            executable_path=chromium(),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile_dir, ignore_errors=True)


@pytest.fixture
def page(browser):
    """A new page whose console errors and uncaught exceptions are collected in ``page.errors``."""
    page = browser.new_page()
    page.errors = []
    page.on(
        "console", lambda msg: page.errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None
    )
    page.on("pageerror", lambda err: page.errors.append(f"uncaught: {err}"))
    yield page
    page.close()
