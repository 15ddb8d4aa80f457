"""Timed strategies (issue #15, Time) against the real service process (``python -m services``) and the simulator,
with both market clocks moved together (the service's APP__MARKET__CLOCK_OFFSET_S, the simulator's /_sim/clock):

* "09:20 NIFTY straddle (with a long wing), exit 15:10, on three accounts sized 1x/2x/3x": a service restarted
  just before 09:20 enters at 09:20 on every account, each leg placed once at the broker at lots x multiplier;
  a restart right after (inside the grace window) enters nothing again; at 15:10 every run of it is exited
  through the one exit path (reason time_exit), BUY exits before the SELL;
* on an NSE holiday nothing fires; a service that comes up long after the entry time (beyond the grace window)
  records the entry 'missed' with an alert and places nothing;
* a service SIGKILLed the moment the entry is committed (its orders queued or being sent) and restarted inside
  the grace window places each leg exactly once.
"""
from __future__ import annotations

import time
from collections import defaultdict
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from db import clock
from db.models import Execution, OrderIntent, StrategyRun, TimedFire
from db.order_fsm import LIVE, Status
from db.schedules import save_schedule, today_rows
from db.strategies import LegSpec, save_strategy
from db.vocab import TimedKind, TimedState
from simulator.testing import SimProcess
from tests.market_clock import offset_to
from tests.reliability.crash_harness import (CrashScenario, kill_service, service_env, start_service, stop_service,
                                             wait_for)

FAST = dict(APP__MARKET__SQUARE_OFF_CHECK_S="0.2", APP__SERVICE__FUNDS_REFRESH_S="1", APP__ALERTS__THROTTLE_S="0")
# the trader's example: a short straddle with a 30 % stop per leg (here with a long wing, so its exit is a SELL)
LEGS = [LegSpec("CE", "SELL", sl_mode="pct", sl_value=30.0), LegSpec("PE", "SELL", sl_mode="pct", sl_value=30.0),
        LegSpec("CE", "BUY", strike_mode="OTM", offset=2)]


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=67, args=["--frozen"]) as s:
        yield s


def _clocks(sim, ist: str) -> float:
    """Both clocks (this process's and the simulator's) at the IST instant ``ist`` now; returns the offset."""
    off = offset_to(ist)
    sim.set_clock(offset_s=off)
    clock.set_offset(timedelta(seconds=off))
    return off


def _start(sc: CrashScenario, offset_s: float, **env) -> None:
    sc.proc = start_service(sc.db.path, sc.log_path, service_env(APP__MARKET__CLOCK_OFFSET_S=repr(offset_s),
                                                                 **FAST, **env))


def _placed(sim, names) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for o in sim.orders():
        if o.get("account") in names and o.get("orderid"):
            out[o["account"]].append(o)
    return out


def _unsettled(db) -> list[tuple[int, str]]:
    with db.read() as s:
        return [(i.id, i.status) for i in s.scalars(select(OrderIntent).where(OrderIntent.status.in_(LIVE)))]


def _fires(db, sid) -> dict[str, TimedFire]:
    with db.read() as s:
        return {f.kind: f for f in s.scalars(select(TimedFire).where(TimedFire.strategy_id == sid))}


def _runs(db, sid) -> list[StrategyRun]:
    with db.read() as s:
        return list(s.scalars(select(StrategyRun).where(StrategyRun.strategy_id == sid).order_by(StrategyRun.id)))


@pytest.mark.timeout(300)
def test_timed_strategy_when_entry_and_exit_times_come_then_entered_once_on_each_account_and_exited_buy_first(
        sim, tmp_path, webhook):
    day = clock.today_ist().isoformat()  # the session's trading day (tests/market_clock.py)
    sc = CrashScenario(sim, tmp_path, accounts=3)
    a1, a2, a3 = list(sc.names)
    names = set(sc.names.values())
    alerts = dict(APP__ALERTS__URLS=webhook.url)
    _start(sc, _clocks(sim, f"{day} 09:10:00"), **alerts)
    try:
        expiry = sc.wait_ready()
        sid = save_strategy(sc.db, "nifty 0920", "NIFTY", "NSE_INDEX", expiry, LEGS)
        save_schedule(sc.db, sid, "09:20", "15:10", [[a1, 1], [a2, 2], [a3, 3]])
        time.sleep(1.0)  # a few checks at 09:10: nothing is due
        assert _fires(sc.db, sid) == {} and not _placed(sim, names)
    finally:
        assert stop_service(sc.proc) == 0

    # a restart just before the time: the entry fires at 09:20:00
    off = _clocks(sim, f"{day} 09:19:45")
    _start(sc, off, **alerts)
    try:
        assert wait_for(lambda: TimedKind.ENTRY in _fires(sc.db, sid), 40), sc.tail()
        entry = _fires(sc.db, sid)[TimedKind.ENTRY]
        assert entry.status == TimedState.ENTERED, entry.error
        runs = _runs(sc.db, sid)
        assert sorted((r.account_id, r.multiplier) for r in runs) == [(a1, 1), (a2, 2), (a3, 3)]
        assert wait_for(lambda: sc.runs_in([r.id for r in runs], ("active",)), 60), sc.tail()
        placed = _placed(sim, names)
        assert all(o["timestamp"] >= f"{day} 09:20:00" for os_ in placed.values() for o in os_), placed
        for acct, mult in ((a1, 1), (a2, 2), (a3, 3)):
            got = [(o["action"], o["symbol"][-2:], int(o["quantity"])) for o in placed[sc.names[acct]]]
            assert got[0] == ("BUY", "CE", 65 * mult)  # the hedge first
            assert sorted(got) == sorted([("BUY", "CE", 65 * mult), ("SELL", "CE", 65 * mult),
                                          ("SELL", "PE", 65 * mult)]), got  # each leg once
        assert wait_for(lambda: webhook.matching("nifty 0920: timed entry 09:20 IST queued run(s)"), 10), \
            webhook.received
        with sc.db.read() as s:  # the legs' own stops were copied onto the runs, as Execute does
            stops = {(e.action, e.sl_mode, e.sl_value) for e in s.scalars(select(Execution))}
        assert stops == {("SELL", "pct", 30.0), ("BUY", "", None)}, stops
    finally:
        assert stop_service(sc.proc) == 0

    # a restart right after firing, inside the grace window: nothing enters again
    count = sum(len(v) for v in _placed(sim, names).values())
    _start(sc, off, **alerts)
    try:
        assert wait_for(lambda: sc.runs_in([r.id for r in runs], ("active",)), 20)
        time.sleep(3.0)  # 15 checks
        assert sum(len(v) for v in _placed(sim, names).values()) == count
        assert len(_runs(sc.db, sid)) == 3 and list(_fires(sc.db, sid)) == [TimedKind.ENTRY]
    finally:
        assert stop_service(sc.proc) == 0

    # 15:10: every run of it exits through the one exit path, the BUY exits (closing the shorts) first
    _start(sc, _clocks(sim, f"{day} 15:09:52"), **alerts)
    try:
        assert wait_for(lambda: sc.runs_in([r.id for r in runs], ("exited",)), 60), sc.tail()
        assert all(r.exit_reason == "time_exit" for r in _runs(sc.db, sid))
        assert _fires(sc.db, sid)[TimedKind.EXIT].status == TimedState.EXITED
        placed = _placed(sim, names)
        for acct, mult in ((a1, 1), (a2, 2), (a3, 3)):
            exits = placed[sc.names[acct]][3:]
            assert all(o["timestamp"] >= f"{day} 15:10:00" for o in exits), exits
            got = [(o["action"], o["symbol"][-2:], int(o["quantity"])) for o in exits]
            assert sorted(got[:2]) == [("BUY", "CE", 65 * mult), ("BUY", "PE", 65 * mult)], got
            assert got[2:] == [("SELL", "CE", 65 * mult)], got
        assert wait_for(lambda: webhook.matching("nifty 0920: timed exit 15:10 IST"), 10), webhook.received
        [row] = today_rows(sc.db, date.fromisoformat(day))
        assert row["state"] == TimedState.EXITED and row["run_ids"] == ", ".join(str(r.id) for r in runs)
    finally:
        assert stop_service(sc.proc) == 0


@pytest.mark.timeout(240)
def test_timed_entry_when_a_holiday_then_nothing_and_when_the_service_is_up_beyond_the_grace_then_missed_and_alert(
        sim, tmp_path, webhook):
    holiday, monday = "2026-10-02", "2026-10-05"  # Gandhi Jayanti (a Friday) in the XBOM calendar
    assert not clock.is_trading_day(date.fromisoformat(holiday))
    sc = CrashScenario(sim, tmp_path, accounts=1)
    [acct] = list(sc.names)
    alerts = dict(APP__ALERTS__URLS=webhook.url)
    _start(sc, _clocks(sim, f"{holiday} 09:10:00"), **alerts)
    try:
        expiry = sc.wait_ready()
        sid = save_strategy(sc.db, "holiday straddle", "NIFTY", "NSE_INDEX", expiry, LEGS[:2])
        save_schedule(sc.db, sid, "09:20", "15:10", [[acct, 1]])
    finally:
        assert stop_service(sc.proc) == 0
    _start(sc, _clocks(sim, f"{holiday} 09:19:55"), **alerts)
    try:
        time.sleep(10.0)  # 09:19:55 -> 09:20:05 on the holiday: 50 checks
        assert _fires(sc.db, sid) == {} and not _placed(sim, set(sc.names.values()))
        [row] = today_rows(sc.db, date.fromisoformat(holiday))
        assert row["state"] == TimedState.HOLIDAY
    finally:
        assert stop_service(sc.proc) == 0

    # the next trading day the service comes up at 09:25, beyond the 60 s grace: missed, alerted, nothing placed
    _start(sc, _clocks(sim, f"{monday} 09:25:00"), **alerts)
    try:
        assert wait_for(lambda: TimedKind.ENTRY in _fires(sc.db, sid), 30), sc.tail()
        entry = _fires(sc.db, sid)[TimedKind.ENTRY]
        assert entry.status == TimedState.MISSED and "late" in entry.error and "grace 60 s" in entry.error
        assert wait_for(lambda: webhook.matching("holiday straddle: not entered"), 10), webhook.received
        time.sleep(1.0)
        assert not _placed(sim, set(sc.names.values())) and _runs(sc.db, sid) == []
    finally:
        assert stop_service(sc.proc) == 0


@pytest.mark.timeout(240)
def test_timed_entry_when_the_service_is_killed_as_it_fires_then_after_the_restart_each_leg_placed_exactly_once(
        sim, tmp_path):
    day = clock.today_ist().isoformat()
    sc = CrashScenario(sim, tmp_path, accounts=2)
    a1, a2 = list(sc.names)
    names = set(sc.names.values())
    _start(sc, _clocks(sim, f"{day} 11:00:00"))
    try:
        expiry = sc.wait_ready()
        sid = save_strategy(sc.db, "killed at 1105", "NIFTY", "NSE_INDEX", expiry, LEGS)
        save_schedule(sc.db, sid, "11:05", "", [[a1, 1], [a2, 2]])
    finally:
        assert stop_service(sc.proc) == 0
    off = _clocks(sim, f"{day} 11:04:50")
    _start(sc, off)
    # SIGKILL the moment the entry's row (and with it the runs and their queued orders) is committed: the
    # dispatcher may be sending the first orders right then
    assert wait_for(lambda: TimedKind.ENTRY in _fires(sc.db, sid), 40, 0.005), sc.tail()
    kill_service(sc.proc)
    _start(sc, off)  # 11:05:0x: still inside the grace window
    try:
        runs = _runs(sc.db, sid)
        assert len(runs) == 2 and _fires(sc.db, sid)[TimedKind.ENTRY].status == TimedState.ENTERED
        assert wait_for(lambda: sc.runs_in([r.id for r in runs], ("active",)), 60), sc.tail()
        # every intent settled: an order the kill caught between its 'sent' commit and its POST never reached
        # the broker, and placeorder is never retried blindly, so it is settled 'rejected (never placed)'
        assert wait_for(lambda: not _unsettled(sc.db), 60), _unsettled(sc.db)
        time.sleep(2.0)  # 10 more checks after the restart
        placed = _placed(sim, names)
        with sc.db.read() as s:
            intents = list(s.scalars(select(OrderIntent).where(OrderIntent.run_id.in_([r.id for r in runs]))))
        for acct, mult in ((a1, 1), (a2, 2)):
            mine = [i for i in intents if i.account_id == acct]
            assert sorted((i.action, i.symbol[-2:], i.requested_qty) for i in mine) == sorted(
                [("BUY", "CE", 65 * mult), ("SELL", "CE", 65 * mult), ("SELL", "PE", 65 * mult)])
            at_broker = sorted((o["action"], o["symbol"], int(o["quantity"])) for o in placed[sc.names[acct]])
            # each leg at most once at the broker, and exactly the legs whose intents say they reached it
            assert at_broker == sorted((i.action, i.symbol, i.requested_qty) for i in mine
                                       if i.status == Status.FILLED), (at_broker, [(i.id, i.status) for i in mine])
            assert all(i.status == Status.FILLED or "never placed" in i.status_reason for i in mine), \
                [(i.id, i.status, i.status_reason) for i in mine]
        assert sum(i.status == Status.FILLED for i in intents) >= 4  # the kill catches at most one POST per account
        assert len(_runs(sc.db, sid)) == 2 and len(_fires(sc.db, sid)) == 1
    finally:
        assert stop_service(sc.proc) == 0
