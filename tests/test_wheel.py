"""The package outside the repository: a wheel built from the project carries the shipped models, and an
installation of it samples with its defaults and serves the studio from wherever it is run."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel, installed (without dependencies: they are this environment's) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp.glob("elign-*.whl")
    target = tmp / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return wheel, target


def _run(target: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(cwd)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_carries_the_shipped_models(installed):
    import zipfile

    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in ("backbone", "aligned"):
        inside = f"elign/shipped/{model}/model.safetensors"
        assert inside in names
        shipped = (ROOT / "assets" / model / "model.safetensors").read_bytes()
        assert zipfile.ZipFile(wheel).read(inside) == shipped
    assert "elign/data/qm9_reference.json" in names and "elign_studio/static/3Dmol-min.js" in names


def test_an_installed_package_samples_with_its_defaults_outside_the_repository(installed, tmp_path):
    _, target = installed
    where = _run(target, tmp_path, "-c", "import elign, elign.io.assets as a; print(elign.__file__, a.assets_dir())")
    assert where.returncode == 0, where.stderr
    assert str(target) in where.stdout and str(ROOT) not in where.stdout  # the installed copy, not this checkout
    out = tmp_path / "s.npz"
    done = _run(target, tmp_path, "-m", "elign.cli", "sample", "--num", "2", "--steps", "5", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file()
    aligned = _run(target, tmp_path, "-m", "elign.cli", "sample", "--checkpoint", "aligned", "--num", "1", "--steps",
                   "3", "--out", str(tmp_path / "a.npz"))  # fmt: skip
    assert aligned.returncode == 0, aligned.stderr[-2000:]


def test_elign_studio_serves_the_installed_app_outside_the_repository(installed, tmp_path):
    import time
    import urllib.request

    from elign_studio.serving import free_port

    _, target = installed
    port = free_port()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "elign.cli", "studio", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the server it starts goes with it
    )
    try:
        deadline, page = time.time() + 120, ""
        while time.time() < deadline and not page:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/elign_studio", timeout=30).read().decode()
            except OSError:
                time.sleep(1)
        assert "<html" in page.lower() and "bokeh" in page.lower()
        proc.terminate()  # the command became the server (exec): stopping it stops the server, none is left behind
        proc.wait(timeout=30)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/elign_studio", timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
