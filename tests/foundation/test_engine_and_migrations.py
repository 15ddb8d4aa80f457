import os
import sqlite3
import threading

import pytest

from sqlalchemy import event, text

from db import Database
from db.engine import Store
from db.migrations import LATEST, current_version, migrate


def test_engine_sets_wal_busy_timeout_and_foreign_keys(tmp_path):
    eng = Store(tmp_path / "x.db", busy_timeout_ms=6000).engine
    with eng.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 6000
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_writers_begin_immediate_and_readers_deferred(tmp_path):
    st = Store(tmp_path / "x.db")
    seen = []
    # what SQLite itself was given (the BEGIN goes to the driver's connection, past SQLAlchemy's cursor events)
    event.listen(st.engine, "connect", lambda dbapi_conn, _rec: dbapi_conn.set_trace_callback(seen.append))
    with st.write() as s:
        s.execute(text("CREATE TABLE t(a)"))
    with st.read() as s:
        s.execute(text("SELECT * FROM t")).all()
    seen = [stmt for stmt in seen if not stmt.startswith("PRAGMA")]  # the per-connection settings
    assert seen[0] == "BEGIN IMMEDIATE"
    assert "BEGIN" in seen and seen[seen.index("SELECT * FROM t") - 1] == "BEGIN"


def test_reader_is_not_blocked_by_an_open_writer(tmp_path):
    st = Store(tmp_path / "x.db")
    with st.write() as s:
        s.execute(text("CREATE TABLE t(a)"))
        s.execute(text("INSERT INTO t VALUES (1)"))
    other = Store(tmp_path / "x.db", busy_timeout_ms=5000)
    started, release = threading.Event(), threading.Event()

    def writer():
        with st.write() as s:
            s.execute(text("INSERT INTO t VALUES (2)"))
            started.set()
            release.wait(5)

    th = threading.Thread(target=writer)
    th.start()
    started.wait(5)
    with other.read() as s:  # WAL: the snapshot read does not wait for the writer
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 1
    release.set()
    th.join()
    with other.read() as s:
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 2


def test_migrate_is_idempotent_and_versioned(tmp_path):
    d = Database(tmp_path / "m.db", key_file=tmp_path / "k")
    assert migrate(d.store) == LATEST
    with d.engine.connect() as c:
        assert current_version(c) == LATEST
        tables = {r[0] for r in c.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
    for t in ("accounts", "order_intents", "order_events", "broker_orders", "positions", "latest_prices",
              "pnl_snapshots", "risk_events", "option_chain_sessions", "service_heartbeat", "audit_log",
              "strategies", "strategy_legs", "strategy_runs", "executions", "instruments", "control_commands"):
        assert t in tables


def _hold_write(path, held, release):
    with Store(path, busy_timeout_ms=5000).write() as s:
        s.execute(text("INSERT INTO t VALUES (99)"))
        held.set()
        release.wait(30)


def _writer_in_other_process(path, timeout_ms, out):
    try:
        with Store(path, busy_timeout_ms=timeout_ms).write() as s:
            s.execute(text("INSERT INTO t VALUES (7)"))
        out.put("ok")
    except Exception as exc:  # noqa: BLE001 - the message is the assertion
        out.put(f"{type(exc).__name__}: {exc}")


def _held_by_another_process(tmp_path):
    """A table t, and a spawned process holding a write transaction (so the write gate) until ``release``."""
    import multiprocessing as mp
    path = tmp_path / "g.db"
    eng = Store(path)
    with eng.write() as s:
        s.execute(text("CREATE TABLE t(a)"))
    ctx = mp.get_context("spawn")
    held, release, out = ctx.Event(), ctx.Event(), ctx.Queue()
    holder = ctx.Process(target=_hold_write, args=(str(path), held, release))
    holder.start()
    assert held.wait(30)
    return path, eng, ctx, release, out, holder


def test_write_gate_when_another_process_holds_it_then_writer_waits_and_then_commits(tmp_path):
    path, eng, ctx, release, out, holder = _held_by_another_process(tmp_path)
    waiter = ctx.Process(target=_writer_in_other_process, args=(str(path), 20000, out))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and out.empty()  # still waiting at the gate: nothing written, no error
    release.set()
    assert out.get(timeout=30) == "ok"
    holder.join(10)
    waiter.join(10)
    with eng.read() as s:
        assert sorted(r[0] for r in s.execute(text("SELECT a FROM t"))) == [7, 99]


def test_write_gate_when_held_past_the_busy_timeout_then_clear_locked_error_and_nothing_written(tmp_path):
    path, eng, ctx, release, out, holder = _held_by_another_process(tmp_path)
    try:
        waiter = ctx.Process(target=_writer_in_other_process, args=(str(path), 300, out))
        waiter.start()
        msg = out.get(timeout=30)
    finally:
        release.set()
        holder.join(10)
    assert msg.startswith("DbLocked: database busy: nothing was written") and "write gate" in msg
    with eng.read() as s:
        assert [r[0] for r in s.execute(text("SELECT a FROM t"))] == [99]


def test_database_open_when_another_process_writes_then_up_to_date_opens_without_writing_and_migration_is_gated(
        tmp_path, monkeypatch):
    """Found in CI: the UI's writer process died at start with "database is locked" while the service's writer
    wrote back to back: migrate() took BEGIN IMMEDIATE outside the write gate, on SQLite's coarse busy handler."""
    import sqlite3

    import db.migrations as m
    Database(tmp_path / "g.db", key_file=tmp_path / "k")  # the first start migrates
    path, eng, ctx, release, out, holder = _held_by_another_process(tmp_path)  # holds the gate and the write lock
    try:
        d = Database(path, busy_timeout_ms=300, key_file=tmp_path / "k")  # up to date: opens, writes nothing
        with d.read() as s:
            assert s.scalar(text("SELECT max(version) FROM schema_version")) == LATEST
        monkeypatch.setattr(m, "MIGRATIONS", [*m.MIGRATIONS, lambda conn: None])  # a newer release's step
        monkeypatch.setattr(m, "LATEST", LATEST + 1)
        with pytest.raises(sqlite3.OperationalError, match="write gate"):  # waits in line like any writer
            m.migrate(Store(path, busy_timeout_ms=300))
    finally:
        release.set()
        holder.join(10)
    assert m.migrate(Store(path)) == LATEST + 1  # once the writer is done, it runs


def test_write_gate_nested_write_on_the_same_thread_does_not_release_the_outer_gate(tmp_path):
    gate = Store(tmp_path / "n.db").gate
    gate.acquire()
    gate.acquire()
    gate.release()
    import fcntl
    other = os.open(gate.paths[1], os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):  # the outer hold still owns the gate
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        gate.release()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # now free
    finally:
        os.close(other)


def test_own_checkpoints_when_the_service_takes_them_over_then_commits_stop_checkpointing_and_the_timer_job_does(
        tmp_path):
    from db import Database
    from db.models import ServiceLog
    db, other = Database(tmp_path / "svc.db"), Database(tmp_path / "ui.db")

    def autocheckpoint(d) -> int:
        with d.read() as s:
            return s.connection().exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()

    assert autocheckpoint(db) == autocheckpoint(other) == 1000  # SQLite's default until a process takes over
    db.own_checkpoints()
    assert autocheckpoint(db) == 0 and autocheckpoint(other) == 1000  # pooled connections follow; others do not
    def write_lots(d) -> tuple[int, int]:
        """(database file size before, after) one commit that takes the WAL well past 1,000 pages"""
        before = d.path.stat().st_size
        with d.write() as s:
            s.add_all(ServiceLog(component="t", level="INFO", message="x" * 500) for _ in range(8000))
        return before, d.path.stat().st_size

    before, after = write_lots(other)
    assert after > before  # default: that commit checkpointed, copying the pages into the database file
    before, after = write_lots(db)
    assert after == before  # taken over: the commit left the pages in the WAL
    busy, frames, done = db.checkpoint()
    assert busy == 0 and frames > 1000 and done == frames and db.path.stat().st_size > after


def _driver(s):
    return s.connection().connection.driver_connection


def test_writes_of_a_store_run_on_one_connection_while_reads_hold_others(tmp_path):
    # SQLite drops a connection's page cache when another connection wrote since its last transaction: writes
    # taking the pool's connections in turn found every cache stale (a risk exit re-read each page it touched)
    st = Store(tmp_path / "x.db")
    with st.write() as s:
        s.execute(text("CREATE TABLE t(a)"))
        first = _driver(s)
    with st.read() as r:  # a reader holds a connection meanwhile (the pool would hand the next write another)
        r.execute(text("SELECT * FROM t")).all()
        with st.write() as s:
            s.execute(text("INSERT INTO t VALUES (1)"))
            assert _driver(s) is first
            assert _driver(r) is not first
    with st.read() as r:
        assert r.execute(text("SELECT a FROM t")).scalars().all() == [1]


def test_a_failed_write_rolls_back_and_the_next_write_starts_on_a_fresh_connection(tmp_path):
    st = Store(tmp_path / "x.db")
    with st.write() as s:
        s.execute(text("CREATE TABLE t(a)"))
        first = _driver(s)
    with pytest.raises(ZeroDivisionError), st.write() as s:
        s.execute(text("INSERT INTO t VALUES (1)"))
        _ = 1 / 0
    with st.write() as s:
        assert _driver(s) is not first
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):  # the failed one is not reused
            first.execute("SELECT 1")
        s.execute(text("INSERT INTO t VALUES (2)"))
    with st.read() as r:
        assert r.execute(text("SELECT a FROM t")).scalars().all() == [2]


def test_a_write_inside_a_write_on_the_same_thread_does_not_share_its_connection(tmp_path):
    st = Store(tmp_path / "x.db")
    with st.write() as s:
        s.execute(text("CREATE TABLE t(a)"))
    with st.write() as outer:
        outer.execute(text("INSERT INTO t VALUES (1)"))
        # the inner one is on a pool connection: it waits for the outer's lock (a bounded wait) instead of
        # joining and committing the outer's transaction
        with pytest.raises(Exception, match="locked"), st.write(wait_s=0.2) as inner:
            inner.execute(text("INSERT INTO t VALUES (2)"))
    with st.read() as r:
        assert r.execute(text("SELECT a FROM t")).scalars().all() == [1]


def test_own_checkpoints_reaches_the_write_connection_made_before_it(tmp_path):
    from db.models import ServiceLog
    db = Database(tmp_path / "svc.db")
    with db.write() as s:  # the writer connection exists from here on
        s.add(ServiceLog(component="t", level="INFO", message="first"))
    db.own_checkpoints()
    before = db.path.stat().st_size
    with db.write() as s:
        assert s.connection().exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        s.add_all(ServiceLog(component="t", level="INFO", message="x" * 500) for _ in range(8000))
    assert db.path.stat().st_size == before  # that commit left its pages in the WAL


def test_migrate_when_the_database_is_at_version_15_then_it_gains_the_order_intents_indexes(tmp_path):
    from db.commands import OrderRequest, enqueue_order
    from db.intents import next_queued_view
    from tests.builders import make_account, seed_instruments
    d = Database(tmp_path / "m.db", key_file=tmp_path / "k")
    seed_instruments(d)
    acct = make_account(d)
    iid, _ = enqueue_order(d, OrderRequest(acct, "SBIN", "NSE", "BUY", 1), "before-upgrade")
    with d.engine.begin() as c:  # as version 15 left it
        c.exec_driver_sql("DROP INDEX ix_order_intents_queue")
        for index in ("ix_order_intents_updated_at", "ix_order_intents_account_status", "ix_order_intents_modifying"):
            c.exec_driver_sql(f"DROP INDEX {index}")
        c.exec_driver_sql("DELETE FROM schema_version WHERE version > 15")
    d.engine.dispose()
    d = Database(tmp_path / "m.db", key_file=tmp_path / "k")
    with d.engine.connect() as c:
        assert current_version(c) == LATEST
        sql = c.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'ix_order_intents_queue'").scalar()
        made = dict(c.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE name IN ('ix_order_intents_updated_at', "
                                      "'ix_order_intents_account_status', 'ix_order_intents_modifying')").all())
    assert "account_id, priority, created_at, id" in sql and "status = 'queued'" in sql
    assert "(updated_at)" in made["ix_order_intents_updated_at"]
    assert "(account_id, status)" in made["ix_order_intents_account_status"]
    assert "convert_state = 'modifying'" in made["ix_order_intents_modifying"]
    with d.read() as s:
        assert next_queued_view(s, acct).id == iid  # the rows queued before the upgrade are in it
