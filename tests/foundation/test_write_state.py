"""Write state (writer lock, write gate, checkpoint option) belongs to the database file as this process sees it:
every Database / Store of the process on one file shares it, whatever object or spelling of the path it came
through, and it is found by path, never by the id() of an engine."""
from __future__ import annotations

import gc
import re
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from config import key_file_for, load_settings
from db import Database
from db.engine import Store, write_state
from db.errors import DbLocked

ROOT = Path(__file__).resolve().parents[2]


def _table(db: Database) -> None:
    with db.write() as s:
        s.execute(text("CREATE TABLE IF NOT EXISTS t(who TEXT, n INT)"))


def test_two_databases_on_one_file_when_threads_write_through_each_then_no_lock_error_and_every_row_lands(tmp_path):
    # Different busy timeouts: the objects cannot have been handed one cached engine.
    one = Database(tmp_path / "w.db", key_file=tmp_path / "k")
    two = Database(tmp_path / "w.db", busy_timeout_ms=6000, key_file=tmp_path / "k")
    _table(one)
    errors: list[BaseException] = []
    per_thread = 150

    def writer(db: Database, who: str) -> None:
        try:
            for n in range(per_thread):
                with db.write() as s:
                    s.execute(text("INSERT INTO t VALUES (:w, :n)"), {"w": who, "n": n})
                    if n % 10 == 0:
                        time.sleep(0.002)  # a transaction that holds the lock a while
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(db, who)) for db, who in ((one, "one"), (two, "two"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads), "writers still running after 60 s: deadlocked"
    assert errors == []
    with two.read() as s:
        counts = dict(s.execute(text("SELECT who, count(*) FROM t GROUP BY who")).all())
    assert counts == {"one": per_thread, "two": per_thread}
    assert one.store.state is two.store.state  # one writer lock, one gate, one checkpoint option


def test_write_when_a_thread_of_this_process_holds_the_file_through_another_database_then_waits_on_the_writer_lock(
        tmp_path):
    """Fails when each object has a gate of its own: the waiter then polls a second flock on the gate file and is
    told that "another process kept the write gate", though the holder is a thread of its own process."""
    one = Database(tmp_path / "w.db", key_file=tmp_path / "k")
    two = Database(tmp_path / "w.db", busy_timeout_ms=6000, key_file=tmp_path / "k")
    _table(one)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with one.write() as s:
            s.execute(text("INSERT INTO t VALUES ('one', 1)"))
            held.set()
            release.wait(10)

    th = threading.Thread(target=holder)
    th.start()
    try:
        assert held.wait(10)
        with pytest.raises(DbLocked) as err:
            with two.write(wait_s=0.3) as s:
                s.execute(text("INSERT INTO t VALUES ('two', 1)"))
    finally:
        release.set()
        th.join(10)
    assert "writer lock" in str(err.value) and "another process" not in str(err.value)
    with two.write() as s:  # handed over once the holder is done
        s.execute(text("INSERT INTO t VALUES ('two', 2)"))
    with one.read() as s:
        assert sorted(s.execute(text("SELECT who, n FROM t")).all()) == [("one", 1), ("two", 2)]


def test_own_checkpoints_when_taken_over_through_one_database_then_every_database_of_the_process_on_that_file_follows(
        tmp_path):
    one = Database(tmp_path / "c.db", key_file=tmp_path / "k")
    two = Database(tmp_path / "c.db", busy_timeout_ms=6000, key_file=tmp_path / "k")
    elsewhere = Database(tmp_path / "other.db", key_file=tmp_path / "k")

    def autocheckpoint(d: Database) -> int:
        with d.read() as s:
            return s.connection().exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()

    one.own_checkpoints()
    assert (autocheckpoint(one), autocheckpoint(two), autocheckpoint(elsewhere)) == (0, 0, 1000)


def test_write_state_when_stores_are_dropped_and_recreated_then_state_follows_the_path_not_an_object_id(tmp_path):
    source = (ROOT / "db" / "engine.py").read_text()
    assert not re.search(r"(?<!`)\bid\(", source), "db/engine.py keys something by id()"
    kept = Store(tmp_path / "kept.db")
    kept_state = kept.state
    for n in range(20):  # engines and pools dropped and recreated: ids get reused
        path = tmp_path / f"{n % 2}.db"
        st = Store(path)
        same_file = Store(tmp_path / "sub" / ".." / path.name, busy_timeout_ms=6000)  # another spelling
        assert st.state is same_file.state is write_state(path)
        assert st.state is not kept_state
        assert st.gate.paths == (f"{path.resolve()}-wturn", f"{path.resolve()}-wgate")
        del st, same_file
        gc.collect()
    assert write_state(tmp_path / "kept.db") is kept_state and kept.gate is kept_state.gate


def test_key_file_default_when_not_configured_then_settings_and_both_database_constructors_agree(tmp_path):
    path = tmp_path / "k.db"
    settings = load_settings({"APP__DB__PATH": str(path)})
    assert settings.key_file == key_file_for(path) == tmp_path / "algomirror.key"
    assert Database.from_settings(settings).key_file == settings.key_file
    assert Database(path).key_file == settings.key_file
    assert (tmp_path / "algomirror.key").exists()
    custom = load_settings({"APP__DB__PATH": str(path), "APP__SECRETS__KEY_FILE": str(tmp_path / "mine.key")})
    assert custom.key_file == Database.from_settings(custom).key_file == tmp_path / "mine.key"


def test_key_file_default_when_searched_for_then_decided_in_one_place():
    where = [p.relative_to(ROOT).as_posix() for d in ("db", "services", "pages", "ui") for p in (ROOT / d).rglob("*.py")
             if '"algomirror.key"' in p.read_text()]
    where += ["app.py"] if '"algomirror.key"' in (ROOT / "app.py").read_text() else []
    assert where == [] and (ROOT / "config.py").read_text().count('with_name("algomirror.key")') == 1
