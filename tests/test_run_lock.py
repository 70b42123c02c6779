"""One writer per run folder: a second process is refused in one line, a dead one's lock is taken over."""

import subprocess
import sys
import textwrap

import pytest

from elign.io.run_lock import RunFolderLocked, RunLock

HOLD = textwrap.dedent(
    """
    import sys, time
    from elign.io.run_lock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunFolderLocked, match=rf"in use by process {holder.pid} on .* stop that run first"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no cleanup ran, the lock file stays behind
        holder.wait()
    assert (tmp_path / "run.lock").exists()
    with RunLock(tmp_path) as lock:
        assert lock.acquire() is lock  # re-entrant within its holder
    with RunLock(tmp_path):  # released at the end of the block
        pass


def test_two_alignments_on_one_folder_do_not_interleave(tmp_path, capsys):
    holder = _holder(tmp_path)
    try:
        from elign.cli import main

        code = main(["align", "--preset", "cpu-demo", "--out", str(tmp_path), "--iterations", "1", "--device", "cpu"])
        assert code != 0 and "is in use by process" in capsys.readouterr().err
        assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_pretraining_holds_the_lock_while_it_writes(tmp_path):
    from elign.data.dense import DenseDataset
    from elign.training.pretrain import PretrainConfig, Pretrainer

    holder = _holder(tmp_path)
    try:
        cfg = PretrainConfig(out_dir=str(tmp_path), hidden=16, n_layers=2, timesteps=50, batch_size=8, max_steps=2)
        with pytest.raises(RunFolderLocked):
            Pretrainer(cfg, DenseDataset.synthetic(16, seed=1)).train()
        assert not (tmp_path / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    cfg = PretrainConfig(out_dir=str(tmp_path), hidden=16, n_layers=2, timesteps=50, batch_size=8, max_steps=2)
    assert Pretrainer(cfg, DenseDataset.synthetic(16, seed=1)).train()["step"] == 2
