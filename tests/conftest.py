from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


@pytest.fixture(autouse=True, scope="session")
def _cache_outside_the_repository(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs of `check` in tests keep their result cache in a scratch folder,
    never in the checkout (tests/test_cache.py sets its own)."""
    os.environ["GACCLINT_CACHE_DIR"] = str(tmp_path_factory.mktemp("gacclint_cache"))


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
