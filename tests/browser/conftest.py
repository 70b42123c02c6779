"""Browser tests: `panel serve elign_studio` in a subprocess, Debian's Chromium driven by Playwright.

The served app is pointed at a temporary data folder holding a tiny checkpoint, scores with the
synthetic force field, and (until the real trainer is installed) aligns with a fake trainer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_assets(folder: Path) -> Path:
    """A tiny backbone and 'aligned' model in an ELIGN_ASSETS layout."""
    from elign.checkpoints import save_checkpoint
    from elign.testing import tiny_model

    for name, seed in (("backbone", 0), ("aligned", 1)):
        model, config = tiny_model(seed=seed)
        save_checkpoint(folder / name / "model.safetensors", model, config)
    return folder


def serve(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "panel",
        "serve",
        str(ROOT / "elign_studio"),
        "--port",
        str(port),
        "--address",
        "127.0.0.1",
        "--num-procs",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return proc


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
        PYTHONPATH=os.pathsep.join([str(ROOT), str(Path(__file__).parent)]),
    )
    try:
        import elign.rl.trainer  # noqa: F401
    except ImportError:
        env["ELIGN_STUDIO_TRAINER"] = "fake_trainer:FakeTrainer"
        env["ELIGN_STUDIO_CONFIG"] = "fake_trainer:make_config"
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
