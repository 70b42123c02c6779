from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "edm_reference"


@pytest.fixture
def edm_fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"EDM reference fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def distill_configs(monkeypatch) -> list:
    """The DistillConfig each ``elign mlff distill`` builds, recorded by a stand-in Distiller that trains nothing."""
    import elign.mlff.distill as distill_module

    seen: list = []

    class Recording:
        def __init__(self, config, callbacks=()):
            seen.append(config)

        def train(self, stop_event=None):
            return {}

    monkeypatch.setattr(distill_module, "Distiller", Recording)
    return seen
