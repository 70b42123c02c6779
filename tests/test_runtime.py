"""Process-wide CPU settings: applied where glibc allows, skipped on request."""

import os
import sys

import pytest
import torch

from elign.runtime import set_threads, tune_malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_tuning_applies_on_linux(monkeypatch):
    monkeypatch.delenv("ELIGN_MALLOC_TUNING", raising=False)
    assert tune_malloc() is True


def test_malloc_tuning_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("ELIGN_MALLOC_TUNING", "0")
    assert tune_malloc() is False


@pytest.fixture
def restore_threads():
    import torch._inductor.config as inductor_config

    before = torch.get_num_threads(), inductor_config.compile_threads
    yield inductor_config
    torch.set_num_threads(before[0])
    inductor_config.compile_threads = before[1]


def test_set_threads_bounds_torch_and_the_compile_workers(monkeypatch, restore_threads):
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    restore_threads.compile_threads = 7
    set_threads(1)
    assert torch.get_num_threads() == 1
    assert restore_threads.compile_threads == 1
    assert os.environ["TORCHINDUCTOR_COMPILE_THREADS"] == "1"  # for a config imported later (a subprocess)


def test_set_threads_leaves_an_explicit_compile_thread_count(monkeypatch, restore_threads):
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "3")
    restore_threads.compile_threads = 3
    set_threads(1)
    assert restore_threads.compile_threads == 3
