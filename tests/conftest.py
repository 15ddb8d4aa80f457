"""Shared fixtures: a real SQLite file per test (never a mock of our DB) and seed builders."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datetime import timedelta  # noqa: E402

from db import clock  # noqa: E402
from tests.builders import seed_instruments  # noqa: E402
from tests.market_clock import use_market_hours  # noqa: E402

# Every clock of the test session inside market hours (tests/market_clock.py), and the simulators' MIS gate on, as
# the real OpenAlgo server has it: a test placing MIS orders passes at any wall time.
MARKET_OFFSET_S = use_market_hours()


@pytest.fixture(autouse=True)
def _market_clock():
    """A test that moves this process's market clock gets the session's back afterwards."""
    yield
    clock.set_offset(timedelta(seconds=MARKET_OFFSET_S))


@pytest.fixture
def db(tmp_path):
    from db import Database
    return Database(tmp_path / "algomirror.db", key_file=tmp_path / "algomirror.key")


@pytest.fixture
def seeded_db(db):
    seed_instruments(db)
    return db


_REAL_MAIN = sys.modules.get("__main__")


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest leaves sys.modules['__main__'] pointing at the page script it ran. A later
    multiprocessing 'spawn' child would then re-run that page as its __main__ (and die), so restore it, before
    each test as well as after."""
    if _REAL_MAIN is not None:
        sys.modules["__main__"] = _REAL_MAIN
    yield
    if _REAL_MAIN is not None:
        sys.modules["__main__"] = _REAL_MAIN


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Point any code that loads settings from the environment at this test's own files."""
    if "APP__DB__PATH" not in os.environ:
        monkeypatch.setenv("APP__DB__PATH", str(tmp_path / "algomirror.db"))
