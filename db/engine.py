"""One engine factory and one way to write, for both processes.

SQLite in WAL mode, synchronous=NORMAL, busy_timeout >= 5 s, foreign keys on. Every transaction opened
through this engine starts with ``BEGIN IMMEDIATE`` so a writer takes the write lock up front and never
hits a lock upgrade deadlock ("database is locked" mid-transaction). Reads are short transactions too.
A ``Store`` (what ``db.Database`` writes and reads through) adds the process's writer lock and the
cross-process write gate, shared by every Store of the process on the same file (``WriteState``).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import threading
import time
import weakref
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from db.errors import DbLocked, classify

AUTOCHECKPOINT_PAGES = 1000  # SQLite's default: the commit that takes the WAL past this many pages checkpoints it
log = logging.getLogger("db.engine")
PRIVATE_MODE = 0o600  # owner read/write only: the database holds trading activity and encrypted keys
# What SQLite and the write gate keep beside the database (the service lock is created 0600 by its owner).
SIDE_FILES = ("-wal", "-shm", "-journal", "-wturn", "-wgate")


def make_private(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it, and tighten it and its side files when they exist
    with looser modes (made by an older release, or by hand).

    Why before: SQLite creates ``-wal`` and ``-shm`` with the mode of the database file, and creates the database
    itself with 0644 (less the umask). Changing the process umask instead would also change every file the
    libraries in the UI process create."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass
    for p in (path, *(Path(f"{path}{suffix}") for suffix in SIDE_FILES)):
        try:
            mode = p.stat().st_mode & 0o777
            if mode & 0o077:
                p.chmod(PRIVATE_MODE)
                log.warning("%s was open to group/other users (mode %o); set to %o", p, mode, PRIVATE_MODE)
        except FileNotFoundError:
            continue
        except OSError as exc:  # e.g. a file owned by another user: SQLite opens it as before
            log.warning("could not restrict %s to mode %o: %s", p, PRIVATE_MODE, exc)


def make_engine(path: str | Path, busy_timeout_ms: int = 5000, max_pages: int = 0) -> Engine:
    """Create a new engine for the SQLite file at ``path`` (parent folder created; the file is made 0600).
    ``max_pages`` > 0 caps the file's size (``PRAGMA max_page_count``): a write past it fails as disk full.
    Its connections follow the checkpoint option of the file's ``WriteState`` (see ``Store.own_checkpoints``);
    writes go through a ``Store``, which adds the writer lock and the write gate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_private(path)
    state = write_state(path)
    engine = create_engine(
        f"sqlite:///{path}",
        # cached_statements: sqlite3 keeps 128 prepared statements per connection by default; the one connection
        # every write runs on (Store.write) sees all of this process's write SQL, the flushes' and the poller's too
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000, "isolation_level": None,
                      "cached_statements": 512},
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
        if max_pages:
            cur.execute(f"PRAGMA max_page_count={int(max_pages)}")
        cur.close()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy):
        sync_autocheckpoint(dbapi_conn, record.info, state)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # pysqlite's own transaction handling is off (isolation_level=None); we emit BEGIN ourselves.
        # Writers take the write lock up front; read-only sessions use a deferred BEGIN (WAL snapshot).
        # On the driver's connection: through exec_driver_sql the BEGIN cost more Python than the statements of
        # a hot-path transaction (cursor wrapping, execute events, result setup; ~15 % of a one-statement write).
        # A failure (database locked past busy_timeout) raises sqlite3's error, which db.errors classifies.
        readonly = conn.get_execution_options().get("algomirror_readonly", False)
        conn.connection.driver_connection.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def sync_autocheckpoint(dbapi_conn, info: dict, state: WriteState) -> None:
    """Who checkpoints the WAL (see ``Store.own_checkpoints``), applied to a connection lazily: once per
    connection and change (``info`` is its pool record's)."""
    want = state.autocheckpoint
    if info.get("autocheckpoint") != want:
        dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={int(want)}")
        info["autocheckpoint"] = want


class WriteGate:
    """Cross-process writer gate taken before ``BEGIN IMMEDIATE``: fair hand-over between processes.

    Why: SQLite's busy handler re-tries a blocked ``BEGIN IMMEDIATE`` on a coarse schedule (1, 2, 5 ... 100 ms,
    then every 100 ms). A process that writes back to back frees the lock for only microseconds between
    transactions, so a waiter can miss every gap for longer than busy_timeout and get "database is locked".

    How: two ``flock`` files beside the database, a turnstile (``-wturn``) and the gate (``-wgate``). A writer
    takes the turnstile, then the gate, then lets the turnstile go. A waiter holds the turnstile while it waits
    for the gate, so the process that just committed cannot take the gate again ahead of it: writers of
    different processes alternate instead of one starving. The gate is polled every <= 0.2 ms and the
    turnstile every <= 1 ms, with jitter; the wait gives up after ``wait_s`` (a Store passes its busy_timeout;
    5 s, SQLite's busy_timeout floor here, when none is given). SQLite's own
    locking stays the second line for writers outside this code (migrations, the sqlite3 shell).

    ``flock`` belongs to an open file description, so the files are opened once per process (again after a
    fork) and one gate serves every Store of the process on the file (``WriteState``); threads of one process
    are serialized by the writer lock already, and ``depth`` makes a nested acquire on the holding thread
    harmless."""

    def __init__(self, path: str, wait_s: float = 5.0):
        self.paths = (f"{path}-wturn", f"{path}-wgate")
        self.wait_s = wait_s
        self._fds: tuple[int, int] = (-1, -1)
        self._pid = -1
        self._depth = 0

    def _files(self) -> tuple[int, int]:
        if self._pid != os.getpid():
            self._fds = tuple(os.open(p, os.O_RDWR | os.O_CREAT, 0o600) for p in self.paths)
            self._pid = os.getpid()
            self._depth = 0
        return self._fds

    def _take(self, fd: int, deadline: float | None, cap: float, wait_s: float) -> float | None:
        delay = 20e-6
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return deadline
            except BlockingIOError:
                now = time.monotonic()
                deadline = deadline or now + wait_s
                if now >= deadline:
                    raise DbLocked(f"database is locked: another process kept the write gate for over "
                                   f"{wait_s:g} s") from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, cap)

    def acquire(self, wait_s: float | None = None) -> None:
        if self._depth:
            self._depth += 1
            return
        wait_s = self.wait_s if wait_s is None else wait_s
        turn, gate = self._files()
        deadline = self._take(turn, None, 1e-3, wait_s)
        try:
            self._take(gate, deadline, 2e-4, wait_s)  # the next writer in line: poll finely
        finally:
            fcntl.flock(turn, fcntl.LOCK_UN)
        self._depth = 1

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fds[1], fcntl.LOCK_UN)

    def __del__(self):
        # Only this process's own descriptors: after a fork the inherited ones share the parent's lock.
        if self._pid == os.getpid():
            for fd in self._fds:
                os.close(fd)


class WriterLock:
    """The process's writer lock: re-entrant for its holder, and an URGENT writer (an order's claim and outcome, an
    exit) is handed the lock before every background writer that is waiting (price and P&L flushes, the poller,
    heartbeats, the reconciler). Why: those background transactions each hold the lock for up to a few tens of ms
    and come in bursts (the 1 s jobs fire together); behind a plain lock an exit or a webhook's entry queued behind
    all of them (82 ms seen), behind this one it waits for the transaction in progress at most. Background writers
    still alternate with each other first-come as before; urgent ones are rare and short, so nothing starves."""

    def __init__(self):
        # One mutex, a condition per kind of waiter: a release wakes ONE waiter, an urgent one if any waits. With one
        # condition and notify_all, every release woke every waiter (ten dispatch threads writing at once: nine
        # woke, took the GIL, found the lock taken and slept again, per transaction).
        self._mutex = threading.Lock()
        self._urgent_cv, self._background_cv = threading.Condition(self._mutex), threading.Condition(self._mutex)
        self._owner: int | None = None
        self._depth = 0
        self._urgent = 0  # urgent writers waiting

    def acquire(self, timeout: float, urgent: bool = False) -> bool:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return True
            if urgent:
                self._urgent += 1
            cv = self._urgent_cv if urgent else self._background_cv
            got = False
            try:  # wait_for tests the predicate before it waits: a free lock is taken at once
                got = cv.wait_for(lambda: self._owner is None and (urgent or not self._urgent), timeout)
                if got:
                    self._owner, self._depth = me, 1
                return got
            finally:
                if urgent:
                    self._urgent -= 1
                if not got:  # gave up, maybe after a release chose it: pass that wake-up on
                    self._wake_next()

    def _wake_next(self) -> None:
        """Under the mutex: wake the waiter next in line if the lock is free (an urgent one first)."""
        if self._owner is None:
            (self._urgent_cv if self._urgent else self._background_cv).notify()

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("the writer lock is released by a thread that does not hold it")
            self._depth -= 1
            if not self._depth:
                self._owner = None
                self._wake_next()


class WriteState:
    """What every ``Store`` (so every ``Database``) of this process on one database file shares: the writer lock,
    the write gate and who checkpoints the WAL.

    Why shared, and found by path: the UI keeps one Database per settings, the service may be handed one, tests
    open several on one file. With a lock and a gate per object, threads of this process would meet only at the
    gate, as if they were other processes: each holding its own ``flock`` open file description on the gate
    file, polling for it instead of the lock's immediate hand-over, and told "another process kept the write
    gate" when a thread of their own held it. A lock per object around one shared gate would be worse: the
    gate's nesting count belongs to the holding thread, so a second thread would walk straight in and collide
    with the first on BEGIN IMMEDIATE. The key is the resolved path, not an ``id()``: an id is reused by a new
    engine once the old one is collected, and two spellings of one file must share. The registry holds states
    weakly: one lives as long as a Store or an engine on its file does, and its gate files are closed with it."""

    def __init__(self, path: str):
        self.path = path
        self.lock = WriterLock()
        self.gate = WriteGate(path)
        self.autocheckpoint = AUTOCHECKPOINT_PAGES  # 0 once this process checkpoints the WAL itself


_lock = threading.Lock()
_states: weakref.WeakValueDictionary[str, WriteState] = weakref.WeakValueDictionary()


def write_state(path: str | Path) -> WriteState:
    """The process-wide write state of the database file at ``path`` (created on first use)."""
    key = str(Path(path).resolve())
    with _lock:
        state = _states.get(key)
        if state is None:
            state = _states[key] = WriteState(key)
        return state


@contextlib.contextmanager
def translated():
    """Database faults leave as the db.errors ladder (DbLocked, DbFull, DbUnavailable), whichever layer raised
    them (raw cursor, ORM, gate); anything else passes through unchanged."""
    try:
        yield
    except Exception as exc:
        err = classify(exc)
        if err is None or err is exc:
            raise
        raise err from exc


class Store:
    """One database file as this process uses it: an engine of its own and the file's shared ``WriteState``.
    Every write transaction of ours goes through ``write()`` (or ``gated()`` for the migrations)."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000, max_pages: int = 0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_ms / 1000
        self.engine = make_engine(self.path, busy_timeout_ms, max_pages)
        self.state = write_state(self.path)
        # The connection every write transaction of this Store runs on, kept checked out (pid, Connection), and
        # whether a write is on it now. Only touched under the writer lock. See ``write``.
        self._writer: tuple[int, Connection] | None = None
        self._writing = False

    @property
    def gate(self) -> WriteGate:
        return self.state.gate

    @contextlib.contextmanager
    def gated(self, wait_s: float | None = None, urgent: bool = False):
        """What every write transaction is taken under: the process's writer lock (threads), then the
        cross-process write gate. BEGIN IMMEDIATE comes after, inside. Both waits give up after ``wait_s``
        (default: the busy_timeout) with DbLocked: a thread must never queue without bound behind writers that
        are themselves stuck at the gate (the market-data thread among them would evaluate no tick meanwhile).

        Why a writer lock besides the gate: threads of one process queue on it, and it hands over at once,
        instead of colliding on BEGIN IMMEDIATE and sleeping in SQLite's busy-handler backoff (25-100 ms
        steps); design guide §16. ``urgent``: order and exit writes, handed the lock ahead of background writers
        (``WriterLock``)."""
        wait = self.busy_timeout_s if wait_s is None else wait_s
        lock, gate = self.state.lock, self.state.gate
        if not lock.acquire(wait, urgent):
            raise DbLocked(f"database is locked: other writers of this process held the writer lock for over "
                           f"{wait:g} s")
        try:
            gate.acquire(wait)
            try:
                yield
            finally:
                gate.release()
        finally:
            lock.release()

    @contextlib.contextmanager
    def write(self, wait_s: float | None = None, urgent: bool = False):
        """A short write transaction (BEGIN IMMEDIATE ... COMMIT) under ``gated``; rolls back on error.
        Never open a second write inside one on the same thread. ``urgent``: see ``WriterLock``."""
        with translated(), self.gated(wait_s, urgent):
            conn = self._writer_connection()
            if conn is None:  # a write inside a write on this thread (the writer lock is re-entrant)
                with Session(self.engine, expire_on_commit=False) as s, s.begin():
                    yield s
                return
            self._writing = True
            done = False
            try:
                with Session(bind=conn, expire_on_commit=False) as s, s.begin():
                    yield s
                done = True
            finally:
                self._writing = False
                if not done:  # whatever failed, the next write starts on a fresh connection
                    self._drop_writer(conn)

    def _writer_connection(self) -> Connection | None:
        """The write transactions' own connection (made on first use, again after a fork or a failed write).

        Why one connection: SQLite discards a connection's whole page cache when its next transaction finds the
        database changed by ANOTHER connection. Writes spread over the pool's connections (taken in turn) so
        found every cache stale, and re-read each page they touched: ~0.17 ms more for a risk exit's transaction
        in a quiet process (0.36 -> 0.53 ms), more in a busy one. On one connection, serialised by the writer
        lock already, a write finds the pages the previous writes of this process left, unless another process
        wrote in between. Reads keep the pool (they run beside the writes and beside each other)."""
        if self._writing:
            return None
        pid = os.getpid()
        if self._writer is not None:
            owner, conn = self._writer
            if owner == pid and not conn.closed and not conn.invalidated:
                sync_autocheckpoint(conn.connection.driver_connection, conn.connection.info, self.state)
                return conn
            self._writer = None
            if owner == pid:
                self._drop_writer(conn)
            else:  # after a fork: the parent's connection is never used, closed or collected (a close would
                self._forked_from = conn  # roll back through the SQLite handle the parent may be using)
        conn = self.engine.connect()  # the pool's checkout event applies the checkpoint option
        self._writer = (pid, conn)
        return conn

    def _drop_writer(self, conn: Connection) -> None:
        if self._writer is not None and self._writer[1] is conn:
            self._writer = None
        try:
            conn.invalidate()  # closed for good, not handed back to the pool in an unknown state
        except Exception:  # noqa: BLE001 - already unusable: nothing more to release
            log.debug("closing the writer connection failed", exc_info=True)

    @contextlib.contextmanager
    def read(self):
        """A read-only session: deferred BEGIN, never takes the write lock."""
        with translated(), Session(self.engine.execution_options(algomirror_readonly=True),
                                   expire_on_commit=False) as s:
            yield s

    def own_checkpoints(self) -> None:
        """From now on this process checkpoints the WAL itself, with ``checkpoint()`` on a timer: its
        connections to this file stop doing it inside a commit. SQLite's automatic checkpoint runs in whichever
        commit takes the WAL past 1,000 pages, copying those pages into the database file and syncing it
        (10-30 ms here): when that commit was a risk exit, the exit waited for it. The service calls this; other
        processes keep the automatic checkpoint."""
        self.state.autocheckpoint = 0

    def checkpoint(self) -> tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own: copies what it can without waiting for
        readers or writers (neither waits for it either). Returns SQLite's (busy, WAL frames, frames
        checkpointed)."""
        raw = self.engine.raw_connection()
        try:
            return tuple(raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        finally:
            raw.close()
