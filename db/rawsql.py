"""Plain sqlite3 statements on a session's own connection, for the order hot paths.

Through SQLAlchemy's ORM one statement costs about 1 ms of CPU on a small VM (statement building, cache key,
ORM execute); the same SQL on the session's sqlite3 connection costs a few hundredths of that. The statements
run inside the caller's session transaction (``BEGIN IMMEDIATE`` already emitted by db/engine.py), so
atomicity is unchanged. Pending ORM changes in the session are flushed first. Values are written in the
formats SQLAlchemy itself uses on SQLite (DATETIME as 'YYYY-MM-DD HH:MM:SS.ffffff'), and Python-side column
defaults of the models are applied, so rows written here read back through the ORM exactly like ORM rows
(tests/foundation/test_rawsql.py compares them column by column).
"""
from __future__ import annotations

import sqlite3
from datetime import datetime
from functools import lru_cache

from sqlalchemy import DateTime, Table
from sqlalchemy.orm import Session


def sql_ts(d: datetime) -> str:
    """A naive UTC datetime in SQLAlchemy's SQLite DATETIME storage format (always with microseconds)."""
    return d.isoformat(" ", "microseconds")


def sql_value(v):
    return sql_ts(v) if isinstance(v, datetime) else v


def raw_cursor(s: Session) -> sqlite3.Cursor:
    """A cursor on the session's own connection, inside its transaction (pending ORM changes flushed first)."""
    if s.new or s.dirty or s.deleted:
        s.flush()
    return s.connection().connection.driver_connection.cursor()


@lru_cache(maxsize=None)
def _defaults(table: Table) -> tuple[dict, tuple[str, ...]]:
    """(scalar defaults, columns whose default is a callable) of a table; the callables must be DateTime
    columns (utcnow), the only kind the models use."""
    scalars, stamps = {}, []
    for c in table.columns:
        d = c.default
        if d is None or c.primary_key:
            continue
        if d.is_scalar:
            scalars[c.name] = d.arg
        elif d.is_callable and isinstance(c.type, DateTime):
            stamps.append(c.name)
        else:  # pragma: no cover - guards a future model change
            raise TypeError(f"{table.name}.{c.name}: default of a kind rawsql does not apply")
    return scalars, tuple(stamps)


def _check_columns(table: Table, columns: tuple[str, ...]) -> None:
    """Column names go into the SQL text, so only the table's own columns are accepted."""
    bad = [c for c in columns if c not in table.c]
    if bad:
        raise ValueError(f"not {table.name} columns: {bad}")


@lru_cache(maxsize=256)
def _insert_sql(table: Table, columns: tuple[str, ...]) -> str:
    _check_columns(table, columns)
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def insert_row(cur: sqlite3.Cursor, table: Table, values: dict, now: datetime) -> int:
    """INSERT one row with the model's Python-side defaults filled in (``now`` for the datetime ones); returns
    the new id."""
    scalars, stamps = _defaults(table)
    row = {**scalars, **{k: now for k in stamps}, **values}
    cols = tuple(row)
    cur.execute(_insert_sql(table, cols), [sql_value(row[c]) for c in cols])
    return cur.lastrowid


@lru_cache(maxsize=256)
def _update_sql(table: Table, columns: tuple[str, ...], where: str) -> str:
    _check_columns(table, columns)
    return f"UPDATE {table.name} SET {', '.join(f'{c} = ?' for c in columns)} WHERE {where}"


def update_rows(cur: sqlite3.Cursor, table: Table, values: dict, where: str, params: tuple = ()) -> int:
    """``UPDATE table SET <values> WHERE <where>`` (``where`` is fixed SQL text with ? placeholders, never
    built from data); returns the number of rows changed."""
    cur.execute(_update_sql(table, tuple(values), where), [*(sql_value(v) for v in values.values()), *params])
    return cur.rowcount


def insert_many(cur: sqlite3.Cursor, table: Table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """INSERT rows that give every column in ``columns`` (no defaults applied: the caller gives them)."""
    if rows:
        cur.executemany(_insert_sql(table, columns), [[sql_value(v) for v in r] for r in rows])


def update_many(cur: sqlite3.Cursor, table: Table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """``UPDATE table SET <columns> WHERE id = ?`` once per row; each row is the column values, then the id."""
    if rows:
        cur.executemany(_update_sql(table, columns, "id = ?"), [[sql_value(v) for v in r] for r in rows])


def select_in(cur: sqlite3.Cursor, sql: str, params: tuple, keys: list, chunk: int = 500):
    """Rows of ``sql`` (fixed text ending in ``IN``, placeholders for ``params`` before it) for ``keys``, in chunks
    that stay far below SQLite's limit on bound variables."""
    for i in range(0, len(keys), chunk):
        part = keys[i:i + chunk]
        yield from cur.execute(f"{sql} ({', '.join('?' * len(part))})", (*params, *part))
