"""Page plumbing (the only place that builds the Database): settings, cached Database, page header.

Every page starts with ``db, settings, health = init_page("Title")``: it shows the service-down banner when
the heartbeat is stale or absent; pages disable order entry when ``health["orders_ok"]`` is False
(service or dispatcher down).
"""
from __future__ import annotations

import streamlit as st

from config import load_settings
from db import Database
from db import repo
from db.accounts import AccountError
from db.commands import CommandError
from db.errors import DbError
from db.order_fsm import Status
from ui.widgets import health_badge, service_banner


# What a form shows as its message (never a traceback): bad input, and a database that could not take the write
# ("disk full: nothing was written", "database busy: nothing was written, try again").
USER_ERRORS = (CommandError, AccountError, DbError)
# Badge colours of order statuses (ui.widgets.status_chip): green filled, blue working, orange outcome unknown,
# red refused, gray not yet sent or withdrawn.
ORDER_COLORS = {Status.FILLED: "green", Status.PLACED: "blue", Status.PARTIALLY_FILLED: "blue",
                Status.QUEUED: "gray", Status.CLAIMED: "gray", Status.SENT: "orange", Status.UNKNOWN: "orange",
                Status.REJECTED: "red", Status.DENIED: "red", Status.CANCELLED: "gray"}


@st.cache_resource(show_spinner=False)
def _database(path: str, busy_timeout_ms: int, key_file: str, fernet_key: str, max_pages: int) -> Database:
    return Database(path, busy_timeout_ms, key_file, fernet_key, max_pages)


def get_settings():
    return load_settings()


def get_db(settings=None) -> Database:
    """One Database per process and DB path (the path is part of the key, so tests can switch files)."""
    s = settings or get_settings()
    return _database(s.db.path, s.db.busy_timeout_ms, str(s.key_file), s.secrets.fernet_key, s.db.max_pages)


def init_page(title: str, icon: str = ""):
    settings = get_settings()
    db = get_db(settings)
    health = repo.service_state(db, settings.ui.service_stale_s)
    service_banner(health)
    health_badge(health)
    st.title(f"{icon} {title}".strip())
    return db, settings, health
