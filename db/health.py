"""The service's reports on itself: service_heartbeat (one row per component) and service_log (recent warnings and
errors), as the service writes them. The Health page reads them through db/repo.py."""
from __future__ import annotations

from sqlalchemy import delete, select

from db.models import ServiceLog, utcnow
from db.rawsql import insert_row, raw_cursor, sql_ts

# A plain statement: several components beat every few seconds, and each write holds the process's writer lock
# that a risk exit may be waiting for.
HEARTBEAT_SQL = ("INSERT INTO service_heartbeat (component, pid, status, last_beat, details_json) "
                 "VALUES (?, ?, ?, ?, ?) ON CONFLICT (component) DO UPDATE SET pid = excluded.pid, "
                 "status = excluded.status, last_beat = excluded.last_beat, details_json = excluded.details_json")


def write_heartbeat(s, component: str, pid: int, status: str, details_json: str) -> None:
    """Upsert the component's service_heartbeat row, stamped now (UTC). Returns nothing."""
    raw_cursor(s).execute(HEARTBEAT_SQL, (component, pid, status, sql_ts(utcnow()), details_json))


def insert_log(s, component: str, level: str, message: str) -> None:
    """One service_log row in the caller's transaction, on a plain statement (fields cut to the column widths,
    level upper-cased); no trimming. Returns nothing."""
    insert_row(raw_cursor(s), ServiceLog.__table__,
               dict(component=component[:32], level=level.upper()[:8], message=message[:1024]), utcnow())


def append_log(s, component: str, level: str, message: str, keep: int) -> None:
    """One service_log row (ORM), then every row older than the newest ``keep`` deleted. Returns nothing."""
    s.add(ServiceLog(component=component, level=level.upper()[:8], message=message[:1024]))
    cutoff = s.scalar(select(ServiceLog.id).order_by(ServiceLog.id.desc()).offset(keep).limit(1))
    if cutoff:
        s.execute(delete(ServiceLog).where(ServiceLog.id <= cutoff))
