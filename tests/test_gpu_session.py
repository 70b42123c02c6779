"""scripts/gpu_session.sh, the one-call GPU session, run on CPU at tiny scale (slow: a 1000-step chain)."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from elign.data.dense import DenseDataset
from elign.io.export import read_npz

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_session_script_continues_the_relay_and_samples(tmp_path):
    import torch

    shipped = int(torch.load(ROOT / "assets" / "relay" / "state.pt", weights_only=True)["step"])
    data, out, run = tmp_path / "tiny.npz", tmp_path / "out", tmp_path / "runs" / "continued"
    DenseDataset.synthetic(200, seed=0).save(data)
    out.mkdir()
    env = {
        **os.environ,
        "OUT": str(out),
        "DATA": str(data),
        "DEVICE": "cpu",
        "SPEED_STEPS": "0",
        "PYTHON": sys.executable,
        "RUN": str(run),
        "OMP_NUM_THREADS": "1",
        "PRETRAIN_ARGS": f"--max-steps {shipped + 2} --threads 1",
    }
    done = subprocess.run(
        ["bash", "scripts/gpu_session.sh", "5", "3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr + done.stdout
    log = (out / "session.log").read_text()
    assert "resumed" in log and f"at step {shipped}" in log and f'"step": {shipped + 2}' in log
    with tarfile.open(out / "backbone.tar") as tar:
        assert sorted(tar.getnames()) == sorted(
            f"continued/{f}" for f in ("model.safetensors", "state.pt", "metrics.jsonl", "config.json")
        )
    molecules = read_npz(out / "samples.npz")
    assert len(molecules) == 3 and all(np.isfinite(x).all() for x, _, _ in molecules)
    assert {p["steps"] for _, _, p in molecules} == {1000}
