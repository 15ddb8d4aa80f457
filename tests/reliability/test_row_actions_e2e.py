"""Positions & Orders row actions against the real service process (``python -m services``) and the simulator:
square_off_position closes what a FRESH positionbook shows (an order placed at the broker after the page read is
closed too), exactly once (a restart that carries the command out again sends nothing more), through the one exit
path; a strategy leg's units exit through the leg's exit (the run stays active with its other leg), the rest of
the position with one more order; a flat position is a clear result with nothing sent; modify_order changes a
working Quick Order LIMIT's price and quantity at the simulator, and a price beyond the fat-finger cap is refused
by the service with nothing sent."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from db.accounts import api_key_for, set_trading_state
from db.commands import OrderRequest, enqueue_control, enqueue_order
from db.intents import new_client_order_id
from db.models import ControlCommand, Execution, OrderIntent, RiskEvent, StrategyRun
from db.strategies import LegSpec, execute_strategy, save_strategy
from db.vocab import TradingState
from simulator.testing import SimProcess
from tests.builders import fresh_row
from tests.reliability.crash_harness import CrashScenario, stop_service, wait_for


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=83, args=["--frozen"]) as s:
        yield s


def _done(sc, cid, timeout: float = 30.0) -> ControlCommand:
    assert wait_for(lambda: fresh_row(sc.db, ControlCommand, cid).status != "queued", timeout, 0.1), sc.tail()
    return fresh_row(sc.db, ControlCommand, cid)


def _sent(sim, name) -> list[tuple[str, str, int]]:
    """(action, symbol, quantity) of every order the account sent to the simulator, in order."""
    return [(o["action"], o["symbol"], int(o["quantity"])) for o in sim.orders()
            if o.get("account") == name and o.get("orderid")]


def _broker_qty(sim, key, symbol) -> int:
    rows = sim.api("positionbook", {"apikey": key}).json().get("data") or []
    return sum(int(float(r["quantity"])) for r in rows if r["symbol"] == symbol)


def _external(sim, key, symbol, exchange, action, qty, product="MIS") -> str:
    """An order placed at the broker outside AlgoMirror (another terminal, the broker's own app)."""
    body = {"apikey": key, "strategy": "elsewhere", "symbol": symbol, "exchange": exchange, "action": action,
            "quantity": qty, "pricetype": "MARKET", "product": product}
    return sim.api("placeorder", body).json()["orderid"]


def _intent(db, iid) -> OrderIntent:
    with db.read() as s:
        return s.get(OrderIntent, iid)


def _square_off(sc, acct, symbol, exchange, product) -> int:
    return enqueue_control(sc.db, "square_off_position", {"account_id": acct, "symbol": symbol,
                                                          "exchange": exchange, "product": product})


@pytest.mark.timeout(240)
def test_square_off_when_the_broker_position_grew_after_the_read_then_one_exit_closes_it_all_once(sim, tmp_path):
    sc = CrashScenario(sim, tmp_path, accounts=1)
    [(acct, name)] = sc.names.items()
    key = api_key_for(sc.db, acct)
    sc.start()
    try:
        sc.wait_ready()
        sim.set_price("SBIN", "NSE", 800.0)
        iid, _ = enqueue_order(sc.db, OrderRequest(acct, "SBIN", "NSE", "BUY", 10, "MARKET", "MIS"),
                               new_client_order_id())
        assert wait_for(lambda: _intent(sc.db, iid).status == "filled", 30, 0.1), sc.tail()
        # the page showed +10; then 5 more were bought at the broker, outside the app
        _external(sim, key, "SBIN", "NSE", "BUY", 5)
        assert _broker_qty(sim, key, "SBIN") == 15
        # exits are never refused by the account's state
        with sc.db.write() as s:
            set_trading_state(s, acct, TradingState.HALTED, "test halt", "ui")
        n0 = len(_sent(sim, name))
        cid = _square_off(sc, acct, "SBIN", "NSE", "MIS")
        cmd = _done(sc, cid)
        assert cmd.status == "done", cmd.result
        assert "the broker shows +15" in cmd.result and "SELL 15 at market" in cmd.result, cmd.result
        assert wait_for(lambda: _broker_qty(sim, key, "SBIN") == 0, 20, 0.1), sc.tail()
        assert _sent(sim, name)[n0:] == [("SELL", "SBIN", 15)]  # one order, the quantity the broker reported
        with sc.db.read() as s:
            [exit_] = s.scalars(select(OrderIntent).where(OrderIntent.client_order_id.like(f"sqp-{cid}-%")))
            assert (exit_.purpose, exit_.action, exit_.requested_qty) == ("exit", "SELL", 15)
            assert s.scalar(select(RiskEvent).where(RiskEvent.event_type == "square_off_position")) is not None
        assert wait_for(lambda: _intent(sc.db, exit_.id).status == "filled", 20, 0.1)

        # the service restarted before it marked the command done: carried out again, nothing more is sent
        stop_service(sc.proc)
        with sc.db.write() as s:
            s.get(ControlCommand, cid).status = "queued"
        sc.start()
        again = _done(sc, cid, 60)
        assert again.status == "done" and "carried out already" in again.result, again.result
        # a flat position: a clear result, nothing sent
        flat = _done(sc, _square_off(sc, acct, "SBIN", "NSE", "MIS"))
        assert flat.status == "done" and "already flat at the broker; nothing sent" in flat.result, flat.result
        assert _sent(sim, name)[n0:] == [("SELL", "SBIN", 15)]

        # modify_order: a working Quick Order LIMIT gets a new price and quantity at the simulator
        with sc.db.write() as s:
            set_trading_state(s, acct, TradingState.ACTIVE, "test re-arm", "ui")
        lim, _ = enqueue_order(sc.db, OrderRequest(acct, "SBIN", "NSE", "BUY", 4, "LIMIT", "MIS", 720.0),
                               new_client_order_id())
        assert wait_for(lambda: _intent(sc.db, lim).status == "placed", 30, 0.1), sc.tail()
        oid = _intent(sc.db, lim).broker_order_id
        # ₹4 crore of notional: beyond the fat-finger cap, refused by the service too, nothing sent
        wild = _done(sc, enqueue_control(sc.db, "modify_order", {"intent_id": lim, "price": 9999999.0}))
        assert wild.status == "failed" and "Refused" in wild.result, wild.result
        cmd = _done(sc, enqueue_control(sc.db, "modify_order", {"intent_id": lim, "price": 725.5, "quantity": 6}))
        assert cmd.status == "done", cmd.result
        at = sim.api("orderstatus", {"apikey": key, "strategy": "AlgoMirror", "orderid": oid}).json()["data"]
        assert (at["price"], int(at["quantity"]), at["order_status"]) == (725.5, 6, "open"), at
        assert (_intent(sc.db, lim).limit_price, _intent(sc.db, lim).requested_qty) == (725.5, 6)
    finally:
        stop_service(sc.proc)


def _execs(db, run_id) -> list[Execution]:
    with db.read() as s:
        return list(s.scalars(select(Execution).where(Execution.run_id == run_id).order_by(Execution.id)))


@pytest.mark.timeout(240)
def test_square_off_when_a_run_leg_holds_the_position_then_the_leg_exits_and_the_rest_closes(sim, tmp_path):
    sc = CrashScenario(sim, tmp_path, accounts=1)
    [(acct, name)] = sc.names.items()
    key = api_key_for(sc.db, acct)
    sc.start()
    try:
        expiry = sc.wait_ready()
        sid = save_strategy(sc.db, "row square-off", "NIFTY", "NSE_INDEX", expiry,
                            [LegSpec("CE", "SELL"), LegSpec("PE", "SELL")])
        _, [run_id] = execute_strategy(sc.db, sid, [acct])
        assert wait_for(lambda: sum(e.status == "entered" for e in _execs(sc.db, run_id)) == 2, 30, 0.1), sc.tail()
        ce, pe = _execs(sc.db, run_id)
        # 65 more of the CE sold at the broker outside the app: the position is -130, the leg holds -65
        _external(sim, key, ce.symbol, "NFO", "SELL", 65, ce.product)
        assert _broker_qty(sim, key, ce.symbol) == -130
        n0 = len(_sent(sim, name))
        cmd = _done(sc, _square_off(sc, acct, ce.symbol, "NFO", ce.product))
        assert cmd.status == "done", cmd.result
        assert f"run #{run_id} leg 1" in cmd.result and "BUY 65 at market" in cmd.result, cmd.result
        assert wait_for(lambda: _broker_qty(sim, key, ce.symbol) == 0, 20, 0.1), sc.tail()
        assert sorted(_sent(sim, name)[n0:]) == [("BUY", ce.symbol, 65), ("BUY", ce.symbol, 65)]
        assert wait_for(lambda: _execs(sc.db, run_id)[0].status == "exited", 20, 0.1), sc.tail()
        ce_now, pe_now = _execs(sc.db, run_id)
        assert ce_now.exit_kind == "close_leg" and pe_now.status == "entered"  # the leg's own exit; PE stays
        with sc.db.read() as s:
            assert s.get(StrategyRun, run_id).status == "active"
            assert s.scalar(select(RiskEvent).where(RiskEvent.run_id == run_id,
                                                    RiskEvent.event_type == "close_leg")) is not None
        assert _broker_qty(sim, key, pe.symbol) == -65
    finally:
        stop_service(sc.proc)
