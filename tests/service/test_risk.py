"""Risk manager: limits evaluated per tick, one idempotent exit path, exit retries."""
from __future__ import annotations

import json

from sqlalchemy import select

from db.intents import transition
from db.models import Execution, OrderIntent, RiskEvent, ServiceLog, StrategyRun
from services.risk import RiskManager
from tests.service.fixtures_md import account, ctx, make_ctx, make_run, md, tick  # noqa: F401

CE, PE, HEDGE = "NIFTY30DEC2526000CE", "NIFTY30DEC2526000PE", "NIFTY30DEC2526500CE"


class Wakes:
    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1


def _risk(ctx, md):
    wakes = Wakes()
    return RiskManager(ctx, md, wakes), wakes


def _exit_intents(db, run_id):
    with db.read() as s:
        return list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id, OrderIntent.purpose == "exit")
                              .order_by(OrderIntent.priority)))


def _events(db, run_id, kind=None):
    with db.read() as s:
        q = select(RiskEvent).where(RiskEvent.run_id == run_id)
        return list(s.scalars(q if kind is None else q.where(RiskEvent.event_type == kind)))


def _run(db, run_id):
    with db.read() as s:
        return s.get(StrategyRun, run_id)


def _short_straddle(db, acct, **limits):
    legs = [dict(symbol=CE, action="SELL", qty=65, entry=100.0), dict(symbol=HEDGE, action="BUY", qty=65, entry=20.0),
            dict(symbol=PE, action="SELL", qty=65, entry=100.0)]
    return make_run(db, acct, legs, **limits)


def test_exit_when_tick_breaches_max_loss_then_buy_exits_first_exactly_once(db, ctx, md, caplog):
    acct = account(db)
    run_id, ex_ids = _short_straddle(db, acct, max_loss=1000)
    risk, wakes = _risk(ctx, md)
    for sym in (CE, PE, HEDGE):
        tick(md, sym, {CE: 100.0, PE: 100.0, HEDGE: 20.0}[sym])
    risk.reload()
    assert not _exit_intents(db, run_id)

    tick(md, CE, 116.0)  # short CE loses 16 x 65 = 1040 > 1000
    tick(md, CE, 130.0)  # a second trigger: the run is already exiting
    assert risk.exit_run(run_id, "manual") == []  # a third trigger (the UI): no-op
    assert RiskManager(ctx, md, Wakes()).exit_run(run_id, "max_loss", -1000, -2000) == []  # another instance

    intents = _exit_intents(db, run_id)
    assert [(i.action, i.symbol, i.priority) for i in intents] == [("BUY", CE, 1), ("BUY", PE, 3),
                                                                   ("SELL", HEDGE, 22)]
    assert all(i.requested_qty == 65 and i.pricetype == "MARKET" and i.source == "risk" and i.status == "queued"
               and i.strategy_tag == "straddle" and i.product == "NRML" for i in intents)
    assert _run(db, run_id).status == "exiting" and _run(db, run_id).exit_reason == "max_loss"
    with db.read() as s:
        execs = {e.id: e for e in s.scalars(select(Execution).where(Execution.run_id == run_id))}
    assert all(e.status == "exiting" and e.exit_intent_id for e in execs.values())
    events = _events(db, run_id)
    assert len(events) == 1 and events[0].event_type == "max_loss" and events[0].action == "exit"
    assert events[0].threshold == -1000 and events[0].value == -1040
    assert sorted(json.loads(events[0].exit_order_ids)) == sorted(i.client_order_id for i in intents)
    assert events[0].ts_ist.endswith("IST")
    assert wakes.n == 1
    logged = [r.getMessage() for r in caplog.records if "exiting (max_loss" in r.getMessage()]
    assert len(logged) == 1 and f"{CE} SELL 65 @100.0 ltp 116.0 (" in logged[0]  # the prices it acted on


def test_leg_price_when_last_tick_is_older_than_the_fill_then_fill_price_until_a_newer_tick():
    from services.pnl import Leg, fill_seen_at, leg_price, run_pnl

    leg = Leg(1, 1, CE, "NFO", "SELL", 65, "NRML", "entered", 142.65, None, fill_seen=50.0)
    assert leg_price(leg, (147.5, 47.1)) == 142.65  # the print before our fill: stale
    assert leg_price(leg, (147.5, 50.0)) == 147.5 and leg_price(leg, (150.0, 51.0)) == 150.0
    assert leg_price(leg, None) is None  # the fill alone never values a leg
    assert run_pnl([leg], lambda *_: (147.5, 47.1)) == (0.0, 0.0)
    assert run_pnl([leg], lambda *_: (147.5, 50.5)) == (0.0, -(147.5 - 142.65) * 65)
    # an 'entered' row's updated_at (wall) mapped onto the monotonic clock; other statuses never hold ticks back
    assert fill_seen_at("entered", 1_000.0, clock_now=200.0, wall_now=1_003.0) == 197.0
    assert fill_seen_at("entered", 1_010.0, clock_now=200.0, wall_now=1_003.0) == 200.0  # wall clock stepped back
    assert fill_seen_at("exiting", 1_000.0, 200.0, 1_003.0) == fill_seen_at("entered", None, 200.0, 1_003.0) == float("-inf")


def test_no_exit_when_the_only_loss_is_a_print_from_before_the_entry_fill(db, ctx, md, caplog):
    """The browser e2e's spurious exit: the wing's last tick, seconds older than the fill and 4 points away from it,
    valued a just-entered run at -578 against a -500 limit. A tick newer than the fill counts as before."""
    tick(md, CE, 104.0)  # the market before we trade; we then fill at 100 (SELL CE) and 20 (BUY HEDGE)
    tick(md, HEDGE, 20.0)
    run_id, _ = make_run(db, account(db), [dict(symbol=CE, action="SELL", qty=65, entry=100.0),
                                           dict(symbol=HEDGE, action="BUY", qty=65, entry=20.0)], max_loss=200)
    risk, _ = _risk(ctx, md)
    risk.reload()
    risk.sweep()
    assert not _exit_intents(db, run_id)
    assert risk.run_state(run_id).pnl == 0.0  # -260 on the stale print
    tick(md, HEDGE, 20.0)  # a newer tick of the other leg: CE stays at its fill
    assert not _exit_intents(db, run_id)
    tick(md, CE, 104.0)  # the same price, now printed after our fill: a real loss of 260 > 200
    assert [i.symbol for i in _exit_intents(db, run_id)] == [CE, HEDGE]
    assert _events(db, run_id)[0].value == -260.0


def test_no_exit_when_loss_is_inside_limit(db, ctx, md):
    run_id, _ = _short_straddle(db, account(db), max_loss=1000)
    risk, _ = _risk(ctx, md)
    for sym, px in ((CE, 110.0), (PE, 100.0), (HEDGE, 20.0)):
        tick(md, sym, px)
    risk.reload()
    risk.sweep()
    assert not _exit_intents(db, run_id)
    assert _run(db, run_id).pnl == -650  # persisted by the sweep


def test_trailing_stop_ratchets_and_exits_below_stop(db, ctx, md):
    run_id, _ = make_run(db, account(db), [dict(symbol=CE, action="BUY", qty=1, entry=1000.0)], trailing_sl=400)
    risk, wakes = _risk(ctx, md)
    tick(md, CE, 1000.0)
    risk.reload()
    for ltp in (1000.0, 1500.0, 2200.0, 1900.0):  # pnl 0 -> 500 -> 1200 -> 900
        tick(md, CE, ltp)
    st = risk.run_state(run_id)
    assert (st.peak, st.stop, st.pnl) == (1200.0, 800.0, 900.0)
    assert not _exit_intents(db, run_id)
    risk.sweep()
    assert (_run(db, run_id).tsl_peak, _run(db, run_id).tsl_stop) == (1200.0, 800.0)

    tick(md, CE, 1790.0)  # pnl 790 <= stop 800
    intents = _exit_intents(db, run_id)
    assert [(i.action, i.priority) for i in intents] == [("SELL", 21)]
    ev = _events(db, run_id)[0]
    assert (ev.event_type, ev.threshold, ev.value) == ("trailing_sl", 800.0, 790.0)
    assert _run(db, run_id).tsl_peak == 1200.0 and wakes.n == 1


def test_trailing_peak_starts_at_zero_so_an_early_loss_of_tsl_exits(db, ctx, md):
    run_id, _ = make_run(db, account(db), [dict(symbol=CE, action="BUY", qty=10, entry=100.0)], trailing_sl=400)
    risk, _ = _risk(ctx, md)
    tick(md, CE, 100.0)
    risk.reload()
    tick(md, CE, 61.0)  # pnl -390 > stop -400
    assert not _exit_intents(db, run_id)
    tick(md, CE, 60.0)  # pnl -400 <= -400
    assert _events(db, run_id)[0].event_type == "trailing_sl"


def test_trailing_state_is_per_run(db, ctx, md):
    acct = account(db)
    first, _ = make_run(db, acct, [dict(symbol=CE, action="BUY", qty=1, entry=100.0)], trailing_sl=50)
    second, _ = make_run(db, acct, [dict(symbol=CE, action="BUY", qty=1, entry=300.0)], trailing_sl=50)
    risk, _ = _risk(ctx, md)
    tick(md, CE, 290.0)
    risk.reload()
    tick(md, CE, 300.0)
    assert risk.run_state(first).peak == 200.0 and risk.run_state(first).stop == 150.0
    assert risk.run_state(second).peak == 0.0 and risk.run_state(second).stop == -50.0


def test_exit_when_max_profit_reached(db, ctx, md):
    run_id, _ = _short_straddle(db, account(db), max_profit=2000, max_loss=5000)
    risk, _ = _risk(ctx, md)
    for sym, px in ((CE, 100.0), (PE, 100.0), (HEDGE, 20.0)):
        tick(md, sym, px)
    risk.reload()
    tick(md, CE, 80.0)
    tick(md, PE, 90.0)  # 20x65 + 10x65 = 1950
    assert not _exit_intents(db, run_id)
    tick(md, HEDGE, 20.8)  # + 0.8 x 65 = 52 -> 2002
    ev = _events(db, run_id)
    assert len(ev) == 1 and ev[0].event_type == "max_profit" and ev[0].threshold == 2000
    assert len(_exit_intents(db, run_id)) == 3


def test_zero_price_tick_never_triggers_an_exit(db, ctx, md):
    run_id, _ = make_run(db, account(db), [dict(symbol=CE, action="BUY", qty=65, entry=100.0)], max_loss=1000)
    risk, _ = _risk(ctx, md)
    tick(md, CE, 100.0)
    risk.reload()
    for bad in (0, 0.0, None, -5):
        tick(md, CE, bad)
    risk.sweep()
    assert not _exit_intents(db, run_id)
    assert md.last_price(CE, "NFO")[0] == 100.0
    assert md.status()["zero_ticks"] == 4


def test_runs_without_entered_legs_are_not_watched(db, ctx, md):
    run_id, _ = make_run(db, account(db), [dict(symbol=CE, action="SELL", qty=65, entry=None, status="pending")],
                         max_loss=1, status="entering")
    risk, _ = _risk(ctx, md)
    risk.reload()
    tick(md, CE, 1000.0)
    assert risk.run_state(run_id) is None and not _exit_intents(db, run_id)
    assert md.held_by("risk") == set()


def test_exit_cancels_queued_entries_of_an_entering_run(db, ctx, md):
    acct = account(db)
    run_id, (done, pending) = make_run(db, acct, [dict(symbol=CE, action="SELL", qty=65, entry=100.0),
                                                  dict(symbol=PE, action="SELL", qty=65, entry=None,
                                                       status="pending")], status="entering", max_loss=100)
    with db.write() as s:
        s.add(OrderIntent(client_order_id="entry-pe", account_id=acct, run_id=run_id, execution_id=pending,
                          purpose="entry", symbol=PE, exchange="NFO", action="SELL", requested_qty=65))
    risk, _ = _risk(ctx, md)
    risk.reload()
    tick(md, CE, 102.0)  # -130
    with db.read() as s:
        entry = s.scalar(select(OrderIntent).where(OrderIntent.client_order_id == "entry-pe"))
        assert entry.status == "cancelled"
        assert s.get(Execution, pending).status == "failed"
    assert [i.symbol for i in _exit_intents(db, run_id)] == [CE]


def _fail_exit(db, intent_id):
    with db.write() as s:
        assert transition(s, intent_id, "queued", "denied", "dispatcher", "test: broker refused")


def test_failed_exit_is_retried_then_flagged_once(db, md):
    ctx = make_ctx(db, exit_retries=2)
    run_id, (ex_id,) = make_run(db, account(db), [dict(symbol=CE, action="SELL", qty=65, entry=100.0)])
    risk, wakes = _risk(ctx, md)
    tick(md, CE, 100.0)
    risk.reload()
    [first] = risk.exit_run(run_id, "manual")
    for attempt in (1, 2):
        _fail_exit(db, _exit_intents(db, run_id)[-1].id if attempt == 1 else _latest_exit(db, ex_id))
        risk.sweep()
        with db.read() as s:
            assert s.get(Execution, ex_id).exit_attempts == attempt
        assert len(_exit_intents(db, run_id)) == attempt + 1
    _fail_exit(db, _latest_exit(db, ex_id))
    risk.sweep()
    risk.sweep()
    assert len(_exit_intents(db, run_id)) == 3  # no more retries
    flagged = _events(db, run_id, "exit_failed")
    assert len(flagged) == 1 and CE in flagged[0].message
    with db.read() as s:
        logs = list(s.scalars(select(ServiceLog).where(ServiceLog.level == "ERROR")))
    assert len(logs) == 1 and "EXIT FAILED" in logs[0].message
    assert wakes.n == 3  # the exit and two retries


def _latest_exit(db, ex_id):
    with db.read() as s:
        return s.get(Execution, ex_id).exit_intent_id


def test_leg_filled_after_exit_started_gets_its_exit(db, ctx, md):
    run_id, (a, b) = make_run(db, account(db), [dict(symbol=CE, action="SELL", qty=65, entry=100.0),
                                                dict(symbol=PE, action="SELL", qty=65, entry=None,
                                                     status="pending")])
    risk, _ = _risk(ctx, md)
    risk.exit_run(run_id, "manual")
    with db.write() as s:  # the poller records the late entry fill
        ex = s.get(Execution, b)
        ex.status, ex.entry_price = "entered", 95.0
    risk.sweep()
    assert sorted(i.symbol for i in _exit_intents(db, run_id)) == sorted([CE, PE])


def test_late_tick_when_read_from_a_backlog_then_no_exit_on_its_own_and_its_real_age_is_logged(db, ctx, md, caplog):
    """A breaching tick dated 30 s ago by the feed (read after a pause) is not the price now: the tick path does
    not exit on it. The sweep asks REST for a fresh quote first; here REST is down, so it acts on the last price
    it has, and the exit log line shows that price's real age."""
    import time

    import datetime as dt

    run_id, _ = _short_straddle(db, account(db), max_loss=1000)
    with db.write() as s:  # entered two minutes ago: a 30 s old tick is newer than the fills (services/pnl.py)
        for ex in s.scalars(select(Execution).where(Execution.run_id == run_id)):
            ex.updated_at = ex.updated_at - dt.timedelta(minutes=2)
    risk, _ = _risk(ctx, md)
    for sym in (CE, PE, HEDGE):
        tick(md, sym, {CE: 100.0, PE: 100.0, HEDGE: 20.0}[sym])
    risk.reload()
    tick(md, CE, 116.0, timestamp=int((time.time() - 30) * 1000))  # -1040 against a 1000 limit, 30 s old
    assert not _exit_intents(db, run_id)
    risk.sweep()  # REST quotes fail (no broker at this address): the last known price decides
    assert [i.symbol for i in _exit_intents(db, run_id)][:1] == [CE]
    [line] = [r.getMessage() for r in caplog.records if "exiting (max_loss" in r.getMessage()]
    age = float(line.split(f"{CE} SELL 65 @100.0 ltp 116.0 (")[1].split(" s old")[0])
    assert 29.5 < age < 35, line
