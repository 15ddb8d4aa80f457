"""One engine factory for both processes.

SQLite in WAL mode, synchronous=NORMAL, busy_timeout >= 5 s, foreign keys on. Every transaction opened
through this engine starts with ``BEGIN IMMEDIATE`` so a writer takes the write lock up front and never
hits a lock upgrade deadlock ("database is locked" mid-transaction). Reads are short transactions too.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
_engines: dict[tuple[str, int], Engine] = {}
_writer_locks: dict[int, threading.RLock] = {}


def make_engine(path: str | Path, busy_timeout_ms: int = 5000) -> Engine:
    """Create a new engine for the SQLite file at ``path`` (parent folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000, "isolation_level": None},
        pool_size=8,
        max_overflow=8,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # pysqlite's own transaction handling is off (isolation_level=None); we emit BEGIN ourselves.
        # Writers take the write lock up front; read-only sessions use a deferred BEGIN (WAL snapshot).
        readonly = conn.get_execution_options().get("algomirror_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def get_engine(path: str | Path, busy_timeout_ms: int = 5000) -> Engine:
    """Process-wide cached engine per database path (pages and service loops share one pool)."""
    key = (str(Path(path).resolve()), busy_timeout_ms)
    with _lock:
        if key not in _engines:
            _engines[key] = make_engine(path, busy_timeout_ms)
        return _engines[key]


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def writer_lock(engine: Engine) -> threading.RLock:
    """One writer at a time per process (design guide §16). Threads of one process queue on this lock, which
    hands over at once, instead of colliding on BEGIN IMMEDIATE and sleeping in SQLite's coarse busy-handler
    backoff (25-100 ms steps). Across processes, BEGIN IMMEDIATE + busy_timeout still serialize writers."""
    with _lock:
        return _writer_locks.setdefault(id(engine.pool), threading.RLock())


@contextlib.contextmanager
def write_session(engine: Engine):
    """A short write transaction (BEGIN IMMEDIATE ... COMMIT); rolls back on error.
    Never open a second write_session inside one on the same thread (it would wait on itself)."""
    with writer_lock(engine), Session(engine, expire_on_commit=False) as s:
        with s.begin():
            yield s


@contextlib.contextmanager
def read_session(engine: Engine):
    """A read-only session: deferred BEGIN, never takes the write lock."""
    with Session(engine.execution_options(algomirror_readonly=True), expire_on_commit=False) as s:
        yield s
