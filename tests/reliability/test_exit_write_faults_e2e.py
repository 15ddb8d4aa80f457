"""A breach whose exit cannot be written: the real service process (``python -m services``) against the simulator.

Two faults on the exit write, each while a run is in breach:
* the write lock is held by another process past busy_timeout (our write gate and a plain ``BEGIN IMMEDIATE``);
* the database cannot grow (SQLITE_FULL, from ``PRAGMA max_page_count`` through ``APP__DB__MAX_PAGES``).

Each must end the same way: an ERROR and an alert (to an apprise JSON webhook on loopback) within 2 s of the
breach, no order while the fault lasts, and once the fault clears the exit is written and placed exactly once.
"""
from __future__ import annotations

import json
import sqlite3
import time

import pytest
from sqlalchemy import select, update

from db.models import Execution, OrderIntent, RiskEvent, ServiceHeartbeat, StrategyRun
from simulator.testing import SimProcess
from tests.harness import queue_runs
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_orders import placed_at_sim, sim_account

SYMBOL, QTY = "SBIN", 10


@pytest.fixture(scope="module")
def frozen_sim():
    with SimProcess(seed=41, args=["--frozen"]) as sim:
        yield sim


def _active_run(db, sim, tmp_path, webhook, **env):
    """An account with a filled 10 x SBIN BUY run under a ₹100 max loss, and the service running on it."""
    sim.set_price(SYMBOL, "NSE", 1000.0)
    acct, name = sim_account(db, sim, "fault", is_primary=True)
    [(run_id, _)] = queue_runs(db, [acct], [dict(symbol=SYMBOL, action="BUY", qty=QTY)], f"faults-{acct}")
    proc = start_service(db.path, tmp_path / "svc.log", service_env(
        APP__ALERTS__URLS=webhook.url, APP__ALERTS__THROTTLE_S="0", **env))
    entered = wait_for(lambda: _run(db, run_id).status == "active" and _entry(db, run_id), 30)
    assert entered, (tmp_path / "svc.out").read_text()[-3000:]
    with db.write() as s:
        s.execute(update(StrategyRun).where(StrategyRun.id == run_id).values(max_loss=100.0))
    assert wait_for(lambda: _risk_tracks(db, run_id), 10), "the risk manager never loaded the run"
    return proc, run_id, name, entered


def _run(db, run_id) -> StrategyRun:
    with db.read() as s:
        return s.get(StrategyRun, run_id)


def _entry(db, run_id) -> float | None:
    with db.read() as s:
        return s.scalar(select(Execution.entry_price).where(Execution.run_id == run_id, Execution.status == "entered"))


def _risk_tracks(db, run_id) -> bool:
    with db.read() as s:
        hb = s.get(ServiceHeartbeat, "risk")
        # max_loss is read on reload (every 1 s); the P&L persisted with it shows the run was evaluated since
        run = s.get(StrategyRun, run_id)
    return bool(hb and json.loads(hb.details_json).get("runs") == 1 and run.pnl is not None)


def _exits_at_sim(sim, name) -> list[dict]:
    return [o for o in placed_at_sim(sim, name) if o.get("action") == "SELL"]


def _exit_intents(db, run_id) -> list[OrderIntent]:
    with db.read() as s:
        return list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id, OrderIntent.purpose == "exit")))


def _assert_exited_once(db, sim, name, run_id, log_text):
    assert wait_for(lambda: _exits_at_sim(sim, name), 15), log_text()[-3000:]
    time.sleep(1.5)  # give a duplicate every chance to show up
    [order] = _exits_at_sim(sim, name)
    assert int(order["quantity"]) == QTY
    [intent] = _exit_intents(db, run_id)
    assert intent.broker_order_id == order["orderid"]
    with db.read() as s:
        events = list(s.scalars(select(RiskEvent).where(RiskEvent.run_id == run_id, RiskEvent.action == "exit")))
    assert [e.event_type for e in events] == ["max_loss"]


@pytest.mark.timeout(120)
def test_exit_write_blocked_past_busy_timeout_then_alarm_within_2s_and_exit_once_after_release(
        db, frozen_sim, webhook, tmp_path):
    proc, run_id, name, entry = _active_run(db, frozen_sim, tmp_path, webhook)
    log_text = (tmp_path / "svc.log").read_text
    try:
        gate = db.store.gate
        gate.acquire()  # as another AlgoMirror process would (the UI), and ...
        raw = sqlite3.connect(db.path, isolation_level=None, timeout=1)
        raw.execute("BEGIN IMMEDIATE")  # ... as a writer outside our gate would (the sqlite3 shell)
        try:
            t0 = time.monotonic()
            frozen_sim.set_price(SYMBOL, "NSE", entry - 25)  # P&L -250 <= -100
            alarm = wait_for(lambda: webhook.matching(f"EXIT NOT WRITTEN: run {run_id}"), 10)
            assert alarm, f"no alert: {webhook.received}"
            assert alarm[0][0] - t0 < 2.0, f"alert after {alarm[0][0] - t0:.2f} s"
            assert "EXIT NOT WRITTEN" in log_text() and f"run {run_id}" in log_text()
            time.sleep(6.0)  # past busy_timeout (5 s): every attempt so far has timed out
            assert _exits_at_sim(frozen_sim, name) == [] and _run(db, run_id).status == "active"
        finally:
            raw.rollback()
            raw.close()
            gate.release()
        _assert_exited_once(db, frozen_sim, name, run_id, log_text)
        assert wait_for(lambda: webhook.matching(f"run {run_id}: max_loss exit written"), 5), webhook.received
    finally:
        assert stop_service(proc) == 0


def _fill_up(path):
    """From a connection without the cap: take every free page and grow the file past the service's cap, and make
    an intent insert need new pages. (max_page_count refuses only a write that needs a page beyond the cap; on a
    real full disk every commit fails, since the WAL cannot grow. On this small database the exit's rows would fit
    in pages that still have room, so the trigger gives its INSERT what every write on a full disk has: a need
    for space.)"""
    con = sqlite3.connect(path, isolation_level=None, timeout=10)
    con.execute("CREATE TABLE IF NOT EXISTS test_padding (b BLOB)")
    con.execute("INSERT INTO test_padding VALUES (zeroblob(5000000))")
    con.execute("CREATE TRIGGER test_full AFTER INSERT ON order_intents BEGIN "
                "INSERT INTO test_padding VALUES (zeroblob(200000)); END")
    con.close()


def _free_space(path):
    con = sqlite3.connect(path, isolation_level=None, timeout=10)
    con.execute("DROP TRIGGER test_full")
    con.execute("DELETE FROM test_padding")
    con.close()


@pytest.mark.timeout(120)
def test_disk_full_when_breached_then_alarm_and_exit_once_after_space_returns(db, frozen_sim, webhook, tmp_path):
    # the cap leaves room for a normal session (~4 MB); _fill_up then takes all of it
    with db.read() as s:
        pages = s.connection().exec_driver_sql("PRAGMA page_count").scalar()
    proc, run_id, name, entry = _active_run(db, frozen_sim, tmp_path, webhook, APP__DB__MAX_PAGES=str(pages + 1000))
    log_text = (tmp_path / "svc.log").read_text
    try:
        _fill_up(db.path)
        t0 = time.monotonic()
        frozen_sim.set_price(SYMBOL, "NSE", entry - 25)
        alarm = wait_for(lambda: webhook.matching(f"EXIT NOT WRITTEN: run {run_id}"), 10)
        assert alarm, f"no alert: {webhook.received}"
        assert alarm[0][0] - t0 < 2.0 and "disk full: nothing was written" in alarm[0][1]["message"]
        time.sleep(3.0)  # several retries, all refused for space
        assert _exits_at_sim(frozen_sim, name) == [] and _run(db, run_id).status == "active"
        assert "disk full" in log_text()
        _free_space(db.path)
        _assert_exited_once(db, frozen_sim, name, run_id, log_text)
    finally:
        assert stop_service(proc) == 0
