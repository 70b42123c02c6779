from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "edm_reference"


@pytest.fixture
def edm_fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"EDM reference fixtures not found at {FIXTURES}")
    return FIXTURES
