"""Fixtures for the reliability suite (crash, faults, bad input, secrets).

Uses the lead's ``db`` fixture (tests/conftest.py): a real SQLite file per test, key file beside it.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
