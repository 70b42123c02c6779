"""Browser tests: `panel serve elign_studio` (or JupyterLab) in a subprocess, Debian's Chromium driven by
Playwright.

The app is pointed at a temporary data folder holding a tiny checkpoint, scores with the synthetic force
field, and aligns with the real FED-GRPO trainer on that tiny model. Pages may reach 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ARTIFACTS, offline_page

from elign_studio.serving import CHROMIUM, CHROMIUM_ARGS, free_port, serve_command

ROOT = Path(__file__).resolve().parents[2]


def make_assets(folder: Path) -> Path:
    """A tiny backbone and 'aligned' model in an ELIGN_ASSETS layout."""
    from elign.io.checkpoints import save_checkpoint
    from elign.testing import tiny_model

    for name, seed in (("backbone", 0), ("aligned", 1)):
        model, config = tiny_model(seed=seed)
        save_checkpoint(folder / name / "model.safetensors", model, config)
    return folder


def studio_env(tmp: Path) -> dict[str, str]:
    """The environment of a studio process: tiny assets, a temporary data folder, the synthetic force field."""
    return dict(
        os.environ,
        ELIGN_ASSETS=str(make_assets(tmp / "assets")),
        ELIGN_STUDIO_DATA=str(tmp / "data"),
        ELIGN_STUDIO_FORCE_FIELD="synthetic",
        PYTHONPATH=str(ROOT),
    )


def serve(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [*serve_command(port), "--num-procs", "1"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=60).read(1)  # a page built slowly is waited for, not asked again
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture(scope="session")
def studio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed")
    pytest.importorskip("playwright")
    tmp = tmp_path_factory.mktemp("studio")
    env = studio_env(tmp)
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    proc = serve(port, env, ARTIFACTS / "panel-serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/elign_studio", proc)
        yield f"http://127.0.0.1:{port}/elign_studio", tmp
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


STUDIO_CELL = "import panel as pn; pn.extension()\nfrom elign_studio import create_app\ncreate_app()"
OFFLINE_CELL = "from elign_studio.notebook import extension\nextension()\n" + STUDIO_CELL.split("\n", 1)[1]
INLINE_CELL = "import panel as pn; pn.extension(inline=True)\nfrom elign_studio import create_app\ncreate_app()"
NOTEBOOKS = {"studio.ipynb": STUDIO_CELL, "offline.ipynb": OFFLINE_CELL, "inline.ipynb": INLINE_CELL}  # name -> cell


@pytest.fixture(scope="session")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 (no token) serving notebooks whose one cell shows the studio (NOTEBOOKS); yields the
    URL of studio.ipynb (the others beside it)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium (/usr/bin/chromium) is not installed")
    pytest.importorskip("playwright")
    pytest.importorskip("jupyterlab")
    tmp = tmp_path_factory.mktemp("jupyter")
    env = studio_env(tmp)
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    notebooks = tmp / "notebooks"
    notebooks.mkdir()
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for name, source in NOTEBOOKS.items():
        cell = {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}
        notebook = {"cells": [cell], "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
        (notebooks / name).write_text(json.dumps(notebook))
    port = free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}"]
    cmd += ["--IdentityProvider.token=", f"--ServerApp.root_dir={notebooks}", "--LabApp.news_url=None"]
    cmd += ["--ServerApp.disable_check_xsrf=True"]  # the tests shut kernels down through the REST API
    cmd += ["--allow-root"] if os.geteuid() == 0 else []
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "jupyter-lab.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=notebooks, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/api", proc)
        yield f"http://127.0.0.1:{port}/lab/tree/studio.ipynb"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(studio_server, browser):
    """The studio opened in a fresh offline page (1400 x 1100, downloads kept), one per test module."""
    url, _ = studio_server
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    pg = offline_page(context)
    pg.goto(url)
    yield pg
    context.close()
