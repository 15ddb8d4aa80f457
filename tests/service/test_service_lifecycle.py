"""The real service process (``python -m services``) at the edges of its life: start-up that must refuse, and
what a clean stop leaves behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.foundation.test_one_exit_index import build_v1_database

ROOT = Path(__file__).resolve().parents[2]


def service_env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    env.pop("APP__DB__PATH", None)
    return env


def run_service(db_path: Path, log_path: Path, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    """A service expected to exit on its own (a refused start)."""
    return subprocess.run([sys.executable, "-m", "services", "--db", str(db_path), "--log-file", str(log_path)],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=timeout)


def test_service_when_database_holds_two_live_exits_for_one_leg_then_refuses_to_start_naming_them(tmp_path):
    db_path = tmp_path / "dup.db"
    build_v1_database(db_path, [(7, "partially_filled", "B1"), (7, "placed", "B2")])
    done = run_service(db_path, tmp_path / "svc.log", service_env())
    assert done.returncode == 4, done.stderr[-3000:]
    for where in (done.stderr, (tmp_path / "svc.log").read_text()):
        assert "AlgoMirror service not started: cannot upgrade the database to schema version 2" in where
        assert "execution 7: intent 1 (account 1, partially_filled, broker order B1)" in where
    assert "Traceback" not in done.stderr
