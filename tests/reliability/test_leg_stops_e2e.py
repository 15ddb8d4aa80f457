"""Per-leg stops, re-entry and leg actions against the real service process (``python -m services``) and the
simulator: a short straddle whose CE leg has a 30 % stop-loss exits only that leg (the PE leg stays live, the risk
event names the leg), re-enters it once when the price comes back (a restart in between does not repeat it), a
trailing stop on the PE leg follows its best price; close_leg / roll_leg / modify_order act through control
commands (a roll sends its BUY first) and the run's own max loss still exits whatever is left."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from db.accounts import api_key_for
from db.commands import OrderRequest, enqueue_control, enqueue_order
from db.intents import new_client_order_id
from db.models import ControlCommand, Execution, OrderIntent, RiskEvent, StrategyRun
from db.strategies import LegSpec, execute_strategy, save_strategy
from simulator.testing import SimProcess
from tests.builders import fresh_row
from tests.reliability.crash_harness import CrashScenario, stop_service, wait_for


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=71, args=["--frozen"]) as s:
        yield s


def _execs(db, run_id) -> list[Execution]:
    with db.read() as s:
        return list(s.scalars(select(Execution).where(Execution.run_id == run_id).order_by(Execution.id)))


def _run(db, run_id) -> StrategyRun:
    with db.read() as s:
        return s.get(StrategyRun, run_id)


def _events(db, run_id, kind) -> list[RiskEvent]:
    with db.read() as s:
        return list(s.scalars(select(RiskEvent).where(RiskEvent.run_id == run_id, RiskEvent.event_type == kind)))


def _sent(sim, name) -> list[tuple[str, str, int]]:
    """(action, symbol, quantity) of every order the account sent to the simulator, in order."""
    return [(o["action"], o["symbol"], int(o["quantity"])) for o in sim.orders()
            if o.get("account") == name and o.get("orderid")]


def _entered(db, run_id, n) -> bool:
    return sum(e.status == "entered" for e in _execs(db, run_id)) == n


def _straddle(sc, sim, expiry, name, ce: LegSpec, pe: LegSpec, **limits) -> tuple[int, str, str]:
    sid = save_strategy(sc.db, name, "NIFTY", "NSE_INDEX", expiry, [ce, pe], **limits)
    _, [run_id] = execute_strategy(sc.db, sid, list(sc.names))
    assert wait_for(lambda: _entered(sc.db, run_id, 2), 30, 0.1), sc.tail()
    ce_sym, pe_sym = (e.symbol for e in _execs(sc.db, run_id))
    return run_id, ce_sym, pe_sym


@pytest.mark.timeout(180)
def test_straddle_when_the_ce_stop_hits_then_only_ce_exits_and_reenters_once_after_the_price_returns(sim, tmp_path):
    sc = CrashScenario(sim, tmp_path, accounts=1)
    [name] = sc.names.values()
    sc.start()
    try:
        expiry = sc.wait_ready()
        run_id, ce, pe = _straddle(
            sc, sim, expiry, "legs straddle",
            LegSpec("CE", "SELL", sl_mode="pct", sl_value=30, reentry_count=1, reentry_wait=True),
            LegSpec("PE", "SELL", trail_points=8))
        ce_entry, pe_entry = (e.entry_price for e in _execs(sc.db, run_id))
        sim.set_price(ce, "NFO", round(ce_entry * 1.2, 1))  # inside the stop
        sim.set_price(pe, "NFO", pe_entry)
        time.sleep(1.5)
        assert [a for a, *_ in _sent(sim, name)] == ["SELL", "SELL"]
        sim.set_price(ce, "NFO", round(ce_entry * 1.32, 1))
        assert wait_for(lambda: [e.status for e in _execs(sc.db, run_id)][:2] == ["exited", "entered"], 30, 0.1), \
            sc.tail()
        [ev] = _events(sc.db, run_id, "leg_sl")
        assert ev.threshold == pytest.approx(ce_entry * 1.3, abs=0.01) and "leg 1" in ev.message and ce in ev.message
        assert _run(sc.db, run_id).status == "active"
        assert _sent(sim, name)[2:] == [("BUY", ce, 65)]  # only the CE leg closed
        waiting = [e for e in _execs(sc.db, run_id) if e.status == "pending"]
        assert [(w.attempt, w.entry_intent_id) for w in waiting] == [(1, None)]

        # the PE leg's trailing stop (8 points) follows its best (lowest) price
        best = round(pe_entry - 20, 1)
        sim.set_price(pe, "NFO", best)
        time.sleep(1.0)
        sim.set_price(pe, "NFO", round(best + 5, 1))
        time.sleep(1.0)
        assert not _events(sc.db, run_id, "leg_trailing")
        sim.set_price(pe, "NFO", round(best + 9, 1))
        assert wait_for(lambda: _events(sc.db, run_id, "leg_trailing"), 20, 0.1), (
            [(e.symbol, e.status, e.entry_price, e.leg_best) for e in _execs(sc.db, run_id)], best, sc.tail())
        [tr] = _events(sc.db, run_id, "leg_trailing")
        assert tr.threshold == pytest.approx(best + 8, abs=0.01) and "leg 2" in tr.message
        assert wait_for(lambda: ("BUY", pe, 65) in _sent(sim, name), 20, 0.1)
        assert wait_for(lambda: [e.status for e in _execs(sc.db, run_id)][:2] == ["exited", "exited"], 20, 0.1)
        assert _run(sc.db, run_id).status == "active"  # the CE leg's re-entry is still waiting
        sc.kill()  # SIGKILL with the re-entry waiting: it lives in the database, not in memory
        sim.set_price(ce, "NFO", round(ce_entry * 0.98, 1))  # back at (below) the first entry while down
        sc.start()
        assert wait_for(lambda: _entered(sc.db, run_id, 1), 40, 0.1), sc.tail()
        sc.kill()  # and again, right after the re-entry
        sc.start()
        time.sleep(3.0)
        reentries = [o for o in _sent(sim, name)[4:] if o[1] == ce]
        assert reentries == [("SELL", ce, 65)], _sent(sim, name)
        with sc.db.read() as s:
            [intent] = s.scalars(select(OrderIntent).where(OrderIntent.client_order_id.like(f"re-{run_id}-%"))).all()
        assert intent.client_order_id == f"re-{run_id}-1-1-{waiting[0].id}" and intent.purpose == "entry"
        assert len(_events(sc.db, run_id, "leg_reentry")) == 1

        assert _run(sc.db, run_id).status == "active"  # the re-entered CE leg is held
    finally:
        stop_service(sc.proc)


@pytest.mark.timeout(180)
def test_leg_actions_when_commanded_then_roll_buys_first_close_leaves_the_rest_and_max_loss_exits_it(sim, tmp_path):
    sc = CrashScenario(sim, tmp_path, accounts=1)
    [name] = sc.names.values()
    sc.start()
    try:
        expiry = sc.wait_ready()
        run_id, ce, pe = _straddle(sc, sim, expiry, "legs actions", LegSpec("CE", "SELL"), LegSpec("PE", "SELL"),
                                   max_loss=3000)
        for e in _execs(sc.db, run_id):
            sim.set_price(e.symbol, "NFO", e.entry_price)
        n0 = len(_sent(sim, name))
        cid = enqueue_control(sc.db, "roll_leg", {"run_id": run_id, "leg_no": 1, "offset": 1})
        assert wait_for(lambda: fresh_row(sc.db, ControlCommand, cid).status != "queued", 30, 0.1), sc.tail()
        assert fresh_row(sc.db, ControlCommand, cid).status == "done", fresh_row(sc.db, ControlCommand, cid).result
        assert wait_for(lambda: len(_sent(sim, name)) >= n0 + 2, 30, 0.1)
        rolled = _sent(sim, name)[n0:]
        new_ce = rolled[1][1]
        assert rolled == [("BUY", ce, 65), ("SELL", new_ce, 65)] and new_ce != ce  # the BUY first
        assert wait_for(lambda: _entered(sc.db, run_id, 2), 30, 0.1), sc.tail()
        assert "rolled to" in _events(sc.db, run_id, "roll_leg")[0].message

        cid = enqueue_control(sc.db, "close_leg", {"run_id": run_id, "leg_no": 2})
        assert wait_for(lambda: fresh_row(sc.db, ControlCommand, cid).status == "done", 30, 0.1), sc.tail()
        assert wait_for(lambda: ("BUY", pe, 65) in _sent(sim, name), 20, 0.1)
        assert wait_for(lambda: _entered(sc.db, run_id, 1), 20, 0.1)
        assert _run(sc.db, run_id).status == "active"

        # the run's own max loss still applies to what is left (the closed legs count at their exit prices)
        [held] = [e for e in _execs(sc.db, run_id) if e.status == "entered"]
        sim.set_price(new_ce, "NFO", round(held.entry_price + 3000 / 65 + 5, 1))
        assert wait_for(lambda: _run(sc.db, run_id).status == "exited", 30, 0.1), sc.tail()
        assert _run(sc.db, run_id).exit_reason == "max_loss"
        assert _sent(sim, name)[-1] == ("BUY", new_ce, 65)

        # modify_order: a LIMIT order working at the broker gets a new price there
        ltp = sim.set_price("SBIN", "NSE", 800.0)
        iid, _ = enqueue_order(sc.db, OrderRequest(list(sc.names)[0], "SBIN", "NSE", "BUY", 5, "LIMIT", "MIS",
                                                   round(ltp * 0.9, 1)), new_client_order_id())

        def placed():
            with sc.db.read() as s:
                i = s.get(OrderIntent, iid)
                return i.broker_order_id if i.status == "placed" else None
        oid = wait_for(placed, 30, 0.1)
        assert oid, sc.tail()
        bad = enqueue_control(sc.db, "modify_order", {"intent_id": iid, "price": 123.456})
        cid = enqueue_control(sc.db, "modify_order", {"intent_id": iid, "price": 725.5})
        assert wait_for(lambda: fresh_row(sc.db, ControlCommand, cid).status != "queued", 30, 0.1), sc.tail()
        assert fresh_row(sc.db, ControlCommand, cid).status == "done", fresh_row(sc.db, ControlCommand, cid).result
        refused = fresh_row(sc.db, ControlCommand, bad)
        assert refused.status == "failed" and "tick size" in refused.result
        key = api_key_for(sc.db, list(sc.names)[0])
        at_broker = sim.api("orderstatus", {"apikey": key, "strategy": "AlgoMirror", "orderid": oid}).json()
        assert at_broker["data"]["price"] == 725.5 and at_broker["data"]["order_status"] == "open", at_broker
        with sc.db.read() as s:
            assert s.get(OrderIntent, iid).limit_price == 725.5
    finally:
        stop_service(sc.proc)


@pytest.mark.timeout(120)
def test_walking_market_when_one_leg_is_pushed_through_its_stop_then_it_exits_at_that_price_and_the_rest_walks_on(
        tmp_path):
    """The same stop with the random walk running (the spot and the untouched leg move): the price forced on the
    CE leg holds against the moving spot, so the stop trips on it and the exit fills there."""
    with SimProcess(seed=72, tick_hz=8) as live:
        sc = CrashScenario(live, tmp_path, accounts=1)
        [name] = sc.names.values()
        sc.start()
        try:
            expiry = sc.wait_ready()
            run_id, ce, pe = _straddle(sc, live, expiry, "walking straddle",
                                       LegSpec("CE", "SELL", sl_mode="pct", sl_value=30), LegSpec("PE", "SELL"))
            ce_entry = _execs(sc.db, run_id)[0].entry_price
            pushed = live.set_price(ce, "NFO", round(ce_entry * 1.35, 1))
            assert wait_for(lambda: _execs(sc.db, run_id)[0].status == "exited", 30, 0.1), sc.tail()
            ce_leg, pe_leg = _execs(sc.db, run_id)
            assert ce_leg.exit_price == pytest.approx(pushed + 0.05, abs=1e-6)  # the BUY filled at the held ask
            assert _sent(live, name) == [("SELL", ce, 65), ("SELL", pe, 65), ("BUY", ce, 65)]
            [ev] = _events(sc.db, run_id, "leg_sl")
            assert "leg 1" in ev.message and ce in ev.message
            key = api_key_for(sc.db, list(sc.names)[0])

            def ltp(sym, ex="NFO"):
                return live.api("quotes", {"apikey": key, "symbol": sym, "exchange": ex}).json()["data"]["ltp"]
            spot0, pe0 = ltp("NIFTY", "NSE_INDEX"), ltp(pe)
            assert wait_for(lambda: ltp("NIFTY", "NSE_INDEX") != spot0 and ltp(pe) != pe0, 10, 0.1)
            assert ltp(ce) == pushed  # still held while the spot and the PE leg walk
            assert pe_leg.status == "entered" and _run(sc.db, run_id).status == "active"
        finally:
            stop_service(sc.proc)
