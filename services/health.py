"""How the service reports on itself: heartbeat rows (one per component) and the service log the Health page
reads. The statements are db/health.py's."""
from __future__ import annotations

import json
import logging
import os

from db import Database
from db.health import append_log, insert_log, write_heartbeat

log = logging.getLogger("services")


def heartbeat(db: Database, component: str, status: str = "ok", details: dict | None = None) -> None:
    """Upsert the component's service_heartbeat row in a write transaction of its own."""
    details_json = json.dumps(details or {}, default=str)
    with db.write() as s:
        write_heartbeat(s, component, os.getpid(), status, details_json)


def service_log_in(s, component: str, level: str, message: str) -> None:
    """``service_log`` inside the caller's write transaction: the entry exists exactly when that transaction
    commits (old entries are trimmed by the next ``service_log``)."""
    getattr(log, level.lower(), log.info)("%s: %s", component, message)
    insert_log(s, component, level, message)


def service_log(db: Database, component: str, level: str, message: str, keep: int = 2000) -> None:
    """Record a warning/error for the health page (and the normal log). Messages must not contain keys."""
    getattr(log, level.lower(), log.info)("%s: %s", component, message)
    with db.write() as s:
        append_log(s, component, level, message, keep)
