import threading

from sqlalchemy import event, text

from db import Database
from db.engine import make_engine, read_session, write_session
from db.migrations import LATEST, current_version, migrate


def test_engine_sets_wal_busy_timeout_and_foreign_keys(tmp_path):
    eng = make_engine(tmp_path / "x.db", busy_timeout_ms=6000)
    with eng.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 6000
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_writers_begin_immediate_and_readers_deferred(tmp_path):
    eng = make_engine(tmp_path / "x.db")
    seen = []
    event.listen(eng, "before_cursor_execute", lambda conn, cur, stmt, *a: seen.append(stmt))
    with write_session(eng) as s:
        s.execute(text("CREATE TABLE t(a)"))
    with read_session(eng) as s:
        s.execute(text("SELECT * FROM t")).all()
    assert seen[0] == "BEGIN IMMEDIATE"
    assert "BEGIN" in seen and seen[seen.index("SELECT * FROM t") - 1] == "BEGIN"


def test_reader_is_not_blocked_by_an_open_writer(tmp_path):
    eng = make_engine(tmp_path / "x.db")
    with write_session(eng) as s:
        s.execute(text("CREATE TABLE t(a)"))
        s.execute(text("INSERT INTO t VALUES (1)"))
    other = make_engine(tmp_path / "x.db", busy_timeout_ms=5000)
    started, release = threading.Event(), threading.Event()

    def writer():
        with write_session(eng) as s:
            s.execute(text("INSERT INTO t VALUES (2)"))
            started.set()
            release.wait(5)

    th = threading.Thread(target=writer)
    th.start()
    started.wait(5)
    with read_session(other) as s:  # WAL: the snapshot read does not wait for the writer
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 1
    release.set()
    th.join()
    with read_session(other) as s:
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 2


def test_migrate_is_idempotent_and_versioned(tmp_path):
    d = Database(tmp_path / "m.db", key_file=tmp_path / "k")
    assert migrate(d.engine) == LATEST
    with d.engine.connect() as c:
        assert current_version(c) == LATEST
        tables = {r[0] for r in c.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
    for t in ("accounts", "order_intents", "order_events", "broker_orders", "positions", "latest_prices",
              "pnl_snapshots", "risk_events", "option_chain_sessions", "service_heartbeat", "audit_log",
              "strategies", "strategy_legs", "strategy_runs", "executions", "instruments", "control_commands"):
        assert t in tables
