"""Browser tests: `panel serve elign_studio` in a subprocess, Debian's Chromium driven by Playwright.

The served app is pointed at a temporary data folder holding a tiny checkpoint, scores with the
synthetic force field, and aligns with the real FED-GRPO trainer on that tiny model.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from elign_studio.serving import CHROMIUM, CHROMIUM_ARGS, free_port, serve_command

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def make_assets(folder: Path) -> Path:
    """A tiny backbone and 'aligned' model in an ELIGN_ASSETS layout."""
    from elign.checkpoints import save_checkpoint
    from elign.testing import tiny_model

    for name, seed in (("backbone", 0), ("aligned", 1)):
        model, config = tiny_model(seed=seed)
        save_checkpoint(folder / name / "model.safetensors", model, config)
    return folder


def serve(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [*serve_command(port), "--num-procs", "1"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"panel serve exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).read(1)
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
    assets = make_assets(tmp / "assets")
    env = dict(
        os.environ,
        ELIGN_ASSETS=str(assets),
        ELIGN_STUDIO_DATA=str(tmp / "data"),
        ELIGN_STUDIO_FORCE_FIELD="synthetic",
        PYTHONPATH=str(ROOT),
    )
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    proc = serve(port, env, ARTIFACTS / "panel-serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/elign_studio", proc)
        yield f"http://127.0.0.1:{port}/elign_studio", tmp
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()
