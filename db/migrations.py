"""Versioned schema migration, run at start by both processes (idempotent; an up-to-date database is only read).

Version 1 creates every table from db/models.py. A later change appends a function to MIGRATIONS; each
runs once, in order, inside one write transaction, and records its number in schema_version.
"""
from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.engine import Engine

from db.engine import gated
from db.models import Base, OrderIntent, SchemaVersion


def _v1(conn: Connection) -> None:
    Base.metadata.create_all(conn)


def _v2(conn: Connection) -> None:
    """The one-live-exit-per-leg index also covers a partially filled exit (it can still fill)."""
    conn.exec_driver_sql("DROP INDEX IF EXISTS uq_one_inflight_exit")
    next(i for i in OrderIntent.__table__.indexes if i.name == "uq_one_inflight_exit").create(conn)


MIGRATIONS = [_v1, _v2]
LATEST = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    has = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").first()
    if not has:
        return 0
    return conn.execute(select(SchemaVersion.version).order_by(SchemaVersion.version.desc())).scalar() or 0


def migrate(engine: Engine) -> int:
    """Bring the database to LATEST; returns the version. Safe when two processes start at once.

    An up-to-date database (every start but the first) is only read: no write transaction. Otherwise the
    migration runs under the same write gate as every other writer. Found in CI: a UI process starting while the
    service wrote back to back waited in SQLite's coarse busy handler for a gap, never found one within
    busy_timeout, and died at start with "database is locked" (the gate exists to prevent exactly that)."""
    with engine.execution_options(algomirror_readonly=True).connect() as conn:
        version = current_version(conn)
    if version >= LATEST:
        return version
    with gated(engine), engine.begin() as conn:  # BEGIN IMMEDIATE: the second process waits, then sees the new version
        version = current_version(conn)
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            step(conn)
            conn.execute(SchemaVersion.__table__.insert().values(version=number))
            version = number
    return version
