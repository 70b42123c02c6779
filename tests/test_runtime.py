"""Process-wide CPU settings: applied where glibc allows, skipped on request."""

import sys

import pytest

from elign.runtime import tune_malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_tuning_applies_on_linux(monkeypatch):
    monkeypatch.delenv("ELIGN_MALLOC_TUNING", raising=False)
    assert tune_malloc() is True


def test_malloc_tuning_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("ELIGN_MALLOC_TUNING", "0")
    assert tune_malloc() is False
