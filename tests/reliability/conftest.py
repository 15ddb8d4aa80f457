"""Fixtures for the reliability suite (crash, faults, bad input, secrets).

Uses the lead's ``db`` fixture (tests/conftest.py): a real SQLite file per test, key file beside it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.alert_hook import Webhook

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def webhook():
    """A JSON webhook on loopback for the service's apprise alerts (APP__ALERTS__URLS=webhook.url)."""
    hook = Webhook()
    yield hook
    hook.close()
