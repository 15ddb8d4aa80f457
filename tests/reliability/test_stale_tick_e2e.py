"""A paused service resumes with ticks buffered in its socket (SIGSTOP / SIGCONT of the REAL ``python -m services``):

* the price breached the max loss and recovered while it was stopped: no exit (the backlog is read as one, the risk
  manager sees only the newest tick per symbol);
* the breach still holds at resume: the exit happens, and its log line gives the price's real age (from the feed's
  timestamp), not "0.0 s old".

The simulator is frozen (no random walk): the only SBIN ticks are the ones the test makes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
from sqlalchemy import select

from db.models import LatestPrice, OrderIntent, ServiceHeartbeat, StrategyRun
from simulator.testing import SimProcess
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_md import make_run
from tests.service.fixtures_orders import sim_account

SBIN = ("SBIN", "NSE")
STOPPED_S = 6.0  # > LATE_TICK_S (2 s): the buffered ticks are dated by the feed


@pytest.fixture(scope="module")
def frozen_sim():
    with SimProcess(seed=41, args=["--frozen"]) as sim:
        yield sim


def _run(db, run_id: int) -> StrategyRun:
    with db.read() as s:
        return s.get(StrategyRun, run_id)


def _exits(db, run_id: int) -> list[OrderIntent]:
    with db.read() as s:
        return list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id, OrderIntent.purpose == "exit")))


def _ltp(db) -> float | None:
    with db.read() as s:
        p = s.get(LatestPrice, SBIN)
        return p.ltp if p else None


def _md(db) -> dict:
    with db.read() as s:
        hb = s.get(ServiceHeartbeat, "market_data")
        return json.loads(hb.details_json) if hb else {}


def _sent(sim) -> tuple[int, int]:
    st = sim.stats()
    return st["ticks_sent"], st["ws_dropped"]


@pytest.mark.timeout(120)
def test_paused_service_when_price_breached_and_recovered_meanwhile_then_no_exit_and_a_held_breach_exits(
        db, frozen_sim, tmp_path):
    sim = frozen_sim
    acct, _ = sim_account(db, sim, "stale", is_primary=True)
    sim.set_price(*SBIN, 1000.0)
    run_id, _ = make_run(db, acct, [dict(symbol="SBIN", exchange="NSE", action="BUY", qty=10, entry=1000.0)],
                         max_loss=500)  # exits at <= 950
    log_path = tmp_path / "svc.log"
    # No stall reconnect while the frozen market is quiet. The sweep (and its REST refresh of prices older than
    # risk_sweep_s) stays out of the way during the test: the ticks read at resume decide, not a REST quote.
    proc = start_service(db.path, log_path, service_env(APP__SERVICE__WS_STALL_SECONDS="120",
                                                        APP__SERVICE__RISK_SWEEP_S="60"))
    try:
        assert wait_for(lambda: _md(db).get("connected"), 30), (tmp_path / "svc.out").read_text()[-2000:]
        sim.set_price(*SBIN, 1001.0)
        assert wait_for(lambda: _run(db, run_id).pnl == 10.0, 15), "the risk manager never saw a live tick"

        # 1. Breach and recovery while the service is stopped.
        sent0, dropped0 = _sent(sim)
        os.kill(proc.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        path = [990.0, 960.0, 940.0, 930.0, 940.0, 970.0, 1000.0, 1002.0]
        sim.drive_path(*SBIN, path, interval_ms=200)
        assert wait_for(lambda: _sent(sim)[0] >= sent0 + len(path), 5)
        sent, dropped = _sent(sim)
        assert dropped == dropped0  # every frame was written to the stopped service's socket, none dropped
        time.sleep(max(0.0, STOPPED_S - (time.monotonic() - t_stop)))
        os.kill(proc.pid, signal.SIGCONT)
        assert wait_for(lambda: _ltp(db) == 1002.0, 10), _ltp(db)
        time.sleep(3.0)
        assert _exits(db, run_id) == [] and _run(db, run_id).status == "active"
        assert _md(db).get("coalesced", 0) >= len(path) - 1  # the backlog was read as one: 7 ticks superseded

        # 2. Control: the breach still holds at resume.
        os.kill(proc.pid, signal.SIGSTOP)
        sim.set_price(*SBIN, 940.0)
        assert _sent(sim)[0] > sent and _sent(sim)[1] == dropped
        time.sleep(STOPPED_S)
        os.kill(proc.pid, signal.SIGCONT)
        assert wait_for(lambda: _exits(db, run_id), 10), "a breach held at resume did not exit"
        assert _run(db, run_id).status in ("exiting", "exited")
        line = wait_for(lambda: next((x for x in log_path.read_text().splitlines() if "exiting (max_loss" in x), 0), 5)
        age = re.search(r"SBIN BUY 10 @1000\.0 ltp 940\.0 \(([\d.]+) s old\)", line)
        assert age and float(age.group(1)) >= STOPPED_S - 1.5, line  # its real age, not "0.0 s old"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        assert stop_service(proc) == 0
