"""Trading data stays with its owner: the database, its WAL / shared-memory / write-gate files and the log file
are created 0600 (as the key file is), and a looser file found at open is tightened."""
from __future__ import annotations

import logging
import os
import sqlite3
import stat

import pytest
from sqlalchemy import text

from db import Database, logmask


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def usual_umask():
    """The common 022 umask, under which files made with default modes come out 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_database_when_created_by_a_process_then_db_wal_shm_and_gate_files_are_0600(tmp_path):
    path = tmp_path / "new.db"
    db = Database(path, key_file=tmp_path / "k")  # what the UI does when it is the first to open the database
    with db.write() as s:
        s.execute(text("INSERT INTO audit_log (ts_utc, actor, action, details) VALUES ('2024-01-01', 't', 'a', '')"))
    files = [path, *(tmp_path / f"new.db{suffix}" for suffix in ("-wal", "-shm", "-wturn", "-wgate"))]
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}


def test_database_when_existing_files_are_0644_then_open_tightens_them_to_0600_and_logs_it(tmp_path, caplog):
    path = tmp_path / "old.db"
    older = sqlite3.connect(path)  # an older release's database, still open: its -wal and -shm exist
    try:
        older.execute("PRAGMA journal_mode=WAL")
        older.execute("CREATE TABLE t(a)")
        older.execute("INSERT INTO t VALUES (1)")
        older.commit()
        files = [path, tmp_path / "old.db-wal", tmp_path / "old.db-shm"]
        assert [mode(f) for f in files] == [0o644] * 3
        with caplog.at_level(logging.WARNING, logger="db.engine"):
            Database(path, key_file=tmp_path / "k")
        assert [mode(f) for f in files] == [0o600] * 3
        assert sum("was open to group/other users (mode 644); set to 600" in r.getMessage()
                   for r in caplog.records) == 3
    finally:
        older.close()


@pytest.mark.parametrize("existing", [False, True])
def test_log_file_when_opened_by_the_masking_handler_then_0600(tmp_path, existing):
    log_path = tmp_path / "svc.log"
    if existing:
        log_path.write_text("earlier run\n")
        os.chmod(log_path, 0o644)
    handler = logmask.PrivateFileHandler(str(log_path))
    try:
        handler.emit(logging.makeLogRecord({"msg": "hello"}))
    finally:
        handler.close()
    assert mode(log_path) == 0o600
    assert log_path.read_text().endswith("hello\n")
