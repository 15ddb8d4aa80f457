"""Versioned schema migration, run at start by both processes (idempotent, serialized by BEGIN IMMEDIATE).

Version 1 creates every table from db/models.py. A later change appends a function to MIGRATIONS; each
runs once, in order, inside one write transaction, and records its number in schema_version.
"""
from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.engine import Engine

from db.models import Base, SchemaVersion


def _v1(conn: Connection) -> None:
    Base.metadata.create_all(conn)


MIGRATIONS = [_v1]
LATEST = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    has = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").first()
    if not has:
        return 0
    return conn.execute(select(SchemaVersion.version).order_by(SchemaVersion.version.desc())).scalar() or 0


def migrate(engine: Engine) -> int:
    """Bring the database to LATEST; returns the version. Safe when two processes start at once."""
    with engine.begin() as conn:  # BEGIN IMMEDIATE: the second process waits, then sees the new version
        version = current_version(conn)
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            step(conn)
            conn.execute(SchemaVersion.__table__.insert().values(version=number))
            version = number
    return version
