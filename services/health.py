"""How the service reports on itself: heartbeat rows (one per component) and the service log the Health page
reads."""
from __future__ import annotations

import json
import logging
import os

from sqlalchemy import delete, select

from db import Database
from db.models import ServiceLog, utcnow
from db.rawsql import insert_row, raw_cursor, sql_ts

log = logging.getLogger("services")

HEARTBEAT_SQL = ("INSERT INTO service_heartbeat (component, pid, status, last_beat, details_json) "
                 "VALUES (?, ?, ?, ?, ?) ON CONFLICT (component) DO UPDATE SET pid = excluded.pid, "
                 "status = excluded.status, last_beat = excluded.last_beat, details_json = excluded.details_json")


def heartbeat(db: Database, component: str, status: str = "ok", details: dict | None = None) -> None:
    """Upsert the component's service_heartbeat row: one plain statement (several components beat every few
    seconds, and each write holds the process's writer lock that a risk exit may be waiting for)."""
    details_json = json.dumps(details or {}, default=str)
    with db.write() as s:
        raw_cursor(s).execute(HEARTBEAT_SQL, (component, os.getpid(), status, sql_ts(utcnow()), details_json))


def service_log_in(s, component: str, level: str, message: str) -> None:
    """``service_log`` inside the caller's write transaction: the entry exists exactly when that transaction
    commits (old entries are trimmed by the next ``service_log``)."""
    getattr(log, level.lower(), log.info)("%s: %s", component, message)
    insert_row(raw_cursor(s), ServiceLog.__table__,
               dict(component=component[:32], level=level.upper()[:8], message=message[:1024]), utcnow())


def service_log(db: Database, component: str, level: str, message: str, keep: int = 2000) -> None:
    """Record a warning/error for the health page (and the normal log). Messages must not contain keys."""
    getattr(log, level.lower(), log.info)("%s: %s", component, message)
    with db.write() as s:
        s.add(ServiceLog(component=component, level=level.upper()[:8], message=message[:1024]))
        cutoff = s.scalar(select(ServiceLog.id).order_by(ServiceLog.id.desc()).offset(keep).limit(1))
        if cutoff:
            s.execute(delete(ServiceLog).where(ServiceLog.id <= cutoff))
