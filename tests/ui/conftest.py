"""Fixtures for UI tests: a real SQLite file under tmp_path, wired through the same env vars the app reads."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import streamlit as st
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from db import Database  # noqa: E402


@pytest.fixture
def db(tmp_path, monkeypatch) -> Database:
    path = tmp_path / "ui.db"
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("APP__DB__PATH", str(path))
    monkeypatch.setenv("APP__SECRETS__FERNET_KEY", key)
    st.cache_data.clear()
    st.cache_resource.clear()
    return Database(path, 5000, tmp_path / "ui.key", key)
