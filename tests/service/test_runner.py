"""The service process: single instance, clean SIGTERM, and the whole order path end to end."""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.commands import enqueue_control
from db.models import ControlCommand, Execution, Instrument, ServiceHeartbeat, StrategyRun
from services.runner import InstanceLock
from tests.harness import start_service as harness_start
from tests.harness import stop_service
from tests.service.fixtures_orders import (  # noqa: F401
    FAST, add_intent, intent, make_strategy_run, order_sim, placed_at_sim, sim_account, wait_for)

ROOT = Path(__file__).resolve().parents[2]


def start_service(db_path: Path, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, **FAST, APP__SERVICE__POLLER_INTERVAL_S="1.0", APP__SERVICE__RISK_SWEEP_S="0.5",
               APP__SERVICE__FUNDS_REFRESH_S="1.0", PYTHONPATH=str(ROOT))
    env.pop("APP__DB__PATH", None)
    return harness_start(db_path, log_path, env)


def beat(db, component: str):
    with db.read() as s:
        return s.get(ServiceHeartbeat, component)


def test_second_instance_when_first_running_then_refuses_and_sigterm_stops_cleanly(db, order_sim, tmp_path):
    sim_account(db, order_sim)
    first = start_service(db.path, tmp_path / "svc.log")
    try:
        assert wait_for(lambda: beat(db, "dispatcher") is not None, 20), (tmp_path / "svc.out").read_text()[-2000:]
        second = subprocess.run([sys.executable, "-m", "services", "--db", str(db.path)], cwd=str(ROOT),
                                env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                                timeout=30)
        assert second.returncode != 0
        assert f"pid {first.pid}" in second.stderr and "already runs" in second.stderr
        assert first.poll() is None  # the first one is untouched
    finally:
        rc = stop_service(first)
    assert rc == 0
    assert beat(db, "runner").status == "stopped" and beat(db, "dispatcher").status == "stopped"
    lock = InstanceLock(db.path)
    lock.acquire()  # released on shutdown
    lock.release()


def test_service_when_strategy_executed_then_entered_and_manual_exit_command_exits(db, order_sim, tmp_path):
    acct, name = sim_account(db, order_sim)
    proc = start_service(db.path, tmp_path / "svc.log")
    try:
        assert wait_for(lambda: beat(db, "dispatcher") is not None, 20)
        run_id, ids = make_strategy_run(db, acct, [dict(symbol="SBIN", action="BUY", qty=2),
                                                   dict(symbol="INFY", action="SELL", qty=1)])
        assert wait_for(lambda: run_status(db, run_id) == "active", 10), (tmp_path / "svc.log").read_text()[-3000:]
        queued = add_intent(db, acct, pricetype="LIMIT", price=1.0, status="denied")  # never dispatched
        cmd = enqueue_control(db, "exit_run", {"run_id": run_id})
        assert wait_for(lambda: run_status(db, run_id) == "exited", 10), (tmp_path / "svc.log").read_text()[-3000:]
        assert command(db, cmd).status == "done"
        with db.read() as s:
            execs = list(s.scalars(select(Execution).where(Execution.run_id == run_id)))
        assert all(e.status == "exited" and e.exit_price for e in execs)
        assert len(placed_at_sim(order_sim, name)) == 4  # 2 entries + 2 exits, nothing twice
        assert intent(db, queued).status == "denied"
        hb = beat(db, "poller")
        assert hb is not None and hb.status in ("ok", "starting")
    finally:
        assert stop_service(proc) == 0
    assert "job wal_checkpoint failed" not in (tmp_path / "svc.log").read_text()  # the service's own checkpoints


def test_cancel_command_when_intent_queued_or_resting_then_cancelled(db, order_sim, tmp_path):
    acct, _ = sim_account(db, order_sim)
    proc = start_service(db.path, tmp_path / "svc.log")
    try:
        assert wait_for(lambda: beat(db, "dispatcher") is not None, 20)
        resting = add_intent(db, acct, pricetype="LIMIT", price=1.0)
        assert wait_for(lambda: intent(db, resting).status == "placed", 5)
        cmd = enqueue_control(db, "cancel_intent", {"intent_id": resting})
        assert wait_for(lambda: intent(db, resting).status == "cancelled", 10)
        assert command(db, cmd).status == "done"
        bad = enqueue_control(db, "cancel_intent", {"intent_id": resting})
        assert wait_for(lambda: command(db, bad).status == "failed", 5)
        refresh = enqueue_control(db, "refresh_account", {"account_id": acct})
        assert wait_for(lambda: command(db, refresh).status == "done", 5)
    finally:
        assert stop_service(proc) == 0


def run_status(db, run_id: int) -> str:
    with db.read() as s:
        return s.get(StrategyRun, run_id).status


def command(db, cid: int) -> ControlCommand:
    with db.read() as s:
        return s.get(ControlCommand, cid)


def test_first_account_when_added_after_start_then_reload_loads_symbol_master_and_feed(db, order_sim, tmp_path):
    """No account at start: nothing to load. Adding one + reload_accounts (what the Accounts page does) must load
    the symbol master and connect the feed promptly (not after the 30 s reconnect cap)."""
    proc = start_service(db.path, tmp_path / "svc.log")
    try:
        assert wait_for(lambda: beat(db, "dispatcher") is not None, 20)
        time.sleep(1.5)  # let the idle feed loop spin a few times first
        acct, name = sim_account(db, order_sim)
        cmd = enqueue_control(db, "reload_accounts", {})
        assert wait_for(lambda: command(db, cmd).status == "done", 20), (tmp_path / "svc.log").read_text()[-3000:]
        assert "symbol master loading" in command(db, cmd).result  # in a job of its own: control stays free

        def n_options():
            with db.read() as s:
                return s.scalar(select(func.count()).select_from(Instrument).where(Instrument.exchange == "NFO"))
        assert wait_for(lambda: n_options() > 0, 20)
        assert wait_for(lambda: "symbol master: " in (tmp_path / "svc.log").read_text(), 20)  # the job finished
        assert wait_for(lambda: json.loads(beat(db, "market_data").details_json or "{}").get("account") == name, 10)
        again = enqueue_control(db, "reload_accounts", {})
        assert wait_for(lambda: command(db, again).status == "done", 10)
        assert command(db, again).result == "broker clients reloaded"  # loaded once, not on every reload
    finally:
        assert stop_service(proc) == 0


SYS_TGKILL = {"x86_64": 234, "aarch64": 131}


@pytest.mark.skipif(os.uname().machine not in SYS_TGKILL, reason="tgkill's syscall number is known for x86_64/arm64")
def test_service_when_sigterm_lands_on_a_thread_other_than_main_then_it_still_stops_cleanly(db, order_sim, tmp_path):
    """The kernel hands a process's SIGTERM to any of its threads. Python runs the handler on the main thread,
    which must therefore wake on its own: blocked in a wait with no timeout, it never ran it (the old code)."""
    sim_account(db, order_sim)
    proc = start_service(db.path, tmp_path / "svc.log")
    try:
        assert wait_for(lambda: beat(db, "dispatcher") is not None, 20), (tmp_path / "svc.out").read_text()[-2000:]
        other = next(int(t) for t in sorted(os.listdir(f"/proc/{proc.pid}/task")) if int(t) != proc.pid)
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(SYS_TGKILL[os.uname().machine], proc.pid, other, signal.SIGTERM) == 0
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert beat(db, "runner").status == "stopped"
