"""The real service process (``python -m services``) at the edges of its life: start-up that must refuse, and
what a clean stop leaves behind."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import ServiceHeartbeat
from tests.foundation.test_one_exit_index import build_v1_database
from tests.harness import start_service, stop_service, wait_for
from tests.service.fixtures_orders import FAST, order_sim, sim_account  # noqa: F401 (order_sim: fixture)

ROOT = Path(__file__).resolve().parents[2]


def service_env(**extra) -> dict:
    env = dict(os.environ, **{"PYTHONPATH": str(ROOT), **extra})
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


COMPONENTS = ("risk", "market_data", "positions", "option_chain", "instruments")


@pytest.mark.parametrize("component", COMPONENTS)
def test_service_when_a_component_cannot_be_imported_then_exits_non_zero_at_once_with_the_import_error(
        tmp_path, component):
    """A copy of the code whose services/<component>.py fails to import (a name its import line asks for does
    not exist), started as the real ``python -m services``: it must exit with the ImportError, never trade on
    without that component. The copy is the code under test, unchanged but for that one line."""
    code = tmp_path / "code"
    code.mkdir()
    for part in ("config.py", "db", "broker", "services", "quant"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, code / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, code / part)
    module = code / "services" / f"{component}.py"
    source = module.read_text()
    anchor = "from __future__ import annotations\n"
    assert anchor in source
    module.write_text(source.replace(anchor, anchor + "from db.models import NoSuchModel  # broken on purpose\n", 1))
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "services", "--db", str(tmp_path / "x.db")], cwd=str(code),
                              env=service_env(PYTHONPATH=str(code)), capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:  # the old behaviour: it kept running without the component
        raise AssertionError(f"the service kept running without services.{component}: {exc.stderr!r}"[-3000:]) from None
    assert done.returncode != 0
    assert time.monotonic() - started < 20
    assert "ImportError: cannot import name 'NoSuchModel' from 'db.models'" in done.stderr, done.stderr[-3000:]
    assert f"services/{component}.py" in done.stderr  # the traceback points at the broken module
    assert not (tmp_path / "x.db").exists()  # it stopped before opening the database


def fast_env() -> dict:
    return service_env(**FAST, APP__SERVICE__POLLER_INTERVAL_S="1.0", APP__SERVICE__RISK_SWEEP_S="0.5",
                       APP__SERVICE__FUNDS_REFRESH_S="1.0")


def beats(db) -> dict[str, str]:
    with db.read() as s:
        return {b.component: b.status for b in s.scalars(select(ServiceHeartbeat))}


def test_service_when_stopped_cleanly_then_every_heartbeat_row_says_stopped(db, order_sim, tmp_path):
    sim_account(db, order_sim)  # a feed to connect to: market_data beats 'ok', not 'degraded'
    proc = start_service(db.path, tmp_path / "svc.log", fast_env())
    try:
        running = wait_for(lambda: (b := beats(db)).get("risk") == b.get("market_data") == "ok"
                           and b.get("dispatcher") == "ok" and b, 30)
        assert running, (tmp_path / "svc.out").read_text()[-3000:]
    finally:
        assert stop_service(proc) == 0
    after = beats(db)
    assert {"runner", "dispatcher", "poller", "reconciler", "account_sync", "risk", "market_data"} <= set(after)
    assert after == {c: "stopped" for c in after}


def test_service_when_it_creates_the_database_and_log_then_every_file_it_makes_is_0600(tmp_path):
    """Nothing exists before the service starts: every file below is the service's own creation."""
    old_umask = os.umask(0o022)  # the common umask: default-mode files would come out 0644
    try:
        db_path, log_path = tmp_path / "fresh.db", tmp_path / "svc.log"
        proc = start_service(db_path, log_path, fast_env())
    finally:
        os.umask(old_umask)
    sidecars = [Path(f"{db_path}{suffix}") for suffix in ("-wal", "-shm", "-wturn", "-wgate", ".service.lock")]
    try:
        started = wait_for(lambda: "AlgoMirror service started" in (log_path.read_text() if log_path.exists()
                                                                     else "") and all(p.exists() for p in sidecars), 30)
        assert started, (tmp_path / "svc.out").read_text()[-3000:]
        files = [db_path, log_path, *sidecars]
        assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o600" for f in files}
    finally:
        assert stop_service(proc) == 0


# The moment that hung the service: SIGTERM handled while the main thread, entering stop.wait(), holds the
# event's internal lock. Reproduced exactly by taking that lock around the signal, in a service whose run() is
# replaced by this probe (main() itself, its settings, lock and signal set-up are the real ones).
SIGNAL_PROBE = """
import os, signal, sys
import services.__main__ as m

def probe_run(settings, stop):
    with stop._cond:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecodes: the handler runs here, with the lock held
            pass
    print("stop set" if stop.wait(10) else "stop NOT set", flush=True)

m.run = probe_run
sys.exit(m.main(sys.argv[1:]))
"""


def test_sigterm_when_handled_while_the_main_thread_enters_its_wait_then_the_service_still_stops(tmp_path):
    try:
        done = subprocess.run([sys.executable, "-c", SIGNAL_PROBE, "--db", str(tmp_path / "s.db")], cwd=str(ROOT),
                              env=service_env(), capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the SIGTERM handler deadlocked on the stop event's lock") from None
    assert done.returncode == 0 and "stop set" in done.stdout, done.stderr[-3000:]


def _catches_sigterm(pid: int) -> bool:
    """The process has a handler for SIGTERM (its SigCgt mask in /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except FileNotFoundError:
        pass
    return False


def test_sigterm_when_sent_while_the_service_is_still_importing_then_it_stops_cleanly(tmp_path):
    """A launcher (the demo's supervisor, a test) that stops a service still starting must see a clean stop (0),
    not a process killed by the signal's default action (-15) before its handlers exist. The signal is sent as
    soon as the process catches it, which must be before it got anywhere (its instance lock file not made yet)."""
    db_path = tmp_path / "s.db"
    proc = subprocess.Popen([sys.executable, "-m", "services", "--db", str(db_path)], cwd=str(ROOT),
                            env=service_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: _catches_sigterm(proc.pid) or proc.poll() is not None, 30, 0.002)
        started = Path(str(db_path) + ".service.lock").exists()
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not started, "SIGTERM was only handled once the service had started up"
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
