"""Reusable strategies against the real service process and the simulator (issue #15):

* a strategy saved with a relative expiry ('current week', 'next week') executes on the contracts of the expiry
  that is current when it executes;
* a LIMIT entry priced away from the market (LTP - 20 %) that does not fill is modified to MARKET after its
  'convert after N s' with exactly one modifyorder, and fills once (one broker order);
* a modify the broker fails is an alert, and the LIMIT order is left working, never modified twice.
"""
from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from db import chain
from db.models import BrokerCall, Instrument, LatestPrice, OrderEvent, OrderIntent
from db.strategies import LegSpec, execute_strategy, parse_expiry, save_strategy
from simulator.testing import SimProcess
from tests.reliability.crash_harness import CrashScenario, service_env, start_service, stop_service, wait_for

CONVERT_AFTER_S = 2


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=53) as s:
        yield s


def _start(sim, tmp_path, webhook) -> CrashScenario:
    sc = CrashScenario(sim, tmp_path, accounts=1)
    sc.proc = start_service(sc.db.path, sc.log_path, service_env(APP__ALERTS__URLS=webhook.url,
                                                                 APP__ALERTS__THROTTLE_S="0"))
    return sc


def _chain_prices(sc: CrashScenario, expiry: str) -> None:
    """Open the NIFTY chain of ``expiry`` (as the Option Chain page does) until its prices are in the database:
    a LIMIT entry is priced from its leg's live price."""
    chain.open_session(sc.db, "NIFTY", "NSE_INDEX", expiry)

    def priced():
        with sc.db.read() as s:
            return s.scalar(select(func.count()).select_from(LatestPrice).join(
                Instrument, (Instrument.symbol == LatestPrice.symbol) & (Instrument.exchange == LatestPrice.exchange))
                .where(Instrument.expiry == expiry, LatestPrice.ltp > 0)) >= 20
    assert wait_for(priced, 30), "the option chain's prices never reached the database:\n" + sc.tail()


def _expiries(sc: CrashScenario) -> list[str]:
    with sc.db.read() as s:
        return sorted(set(s.scalars(select(Instrument.expiry).where(
            Instrument.name == "NIFTY", Instrument.exchange == "NFO", Instrument.instrumenttype == "CE"))),
            key=parse_expiry)


def _intent(sc: CrashScenario, run_id: int, symbol_end: str) -> OrderIntent:
    with sc.db.read() as s:
        return next(i for i in s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id))
                    if i.symbol.endswith(symbol_end))


def _broker_orders(sim, sc: CrashScenario, symbol: str) -> list[dict]:
    name = next(iter(sc.names.values()))
    return [o for o in sim.orders() if o.get("account") == name and o.get("symbol") == symbol and o.get("orderid")]


def _modify_calls(sc: CrashScenario) -> int:
    with sc.db.read() as s:
        return s.scalar(select(func.count()).select_from(BrokerCall).where(BrokerCall.endpoint == "modifyorder"))


@pytest.mark.timeout(150)
def test_limit_entry_when_unfilled_after_n_s_then_one_modify_to_market_and_one_fill(sim, tmp_path, webhook):
    sc = _start(sim, tmp_path, webhook)
    try:
        sc.wait_ready()
        current, following = _expiries(sc)[:2]
        _chain_prices(sc, current)
        sim.freeze(True)  # no random walk: the LIMIT 20 % below the price cannot fill by itself
        sid = save_strategy(sc.db, "weekly limit", "NIFTY", "NSE_INDEX", "", [
            LegSpec("CE", "BUY", entry_type="LIMIT", entry_offset=-20.0, entry_offset_pct=True,
                    convert_after_s=CONVERT_AFTER_S),
            LegSpec("PE", "SELL")], expiry_mode="current_week", max_loss=50_000)
        _, [run] = execute_strategy(sc.db, sid, list(sc.names))
        ce, pe = _intent(sc, run, "CE"), _intent(sc, run, "PE")
        # the relative expiry resolved to this week's contracts
        assert current.replace("-", "") in ce.symbol and current.replace("-", "") in pe.symbol, (ce.symbol, current)
        assert (ce.pricetype, ce.convert_after_s, pe.pricetype) == ("LIMIT", CONVERT_AFTER_S, "MARKET")

        assert wait_for(lambda: _intent(sc, run, "CE").status == "placed", 20), sc.tail()
        [working] = _broker_orders(sim, sc, ce.symbol)
        assert (working["order_status"], working["pricetype"]) == ("open", "LIMIT")

        assert wait_for(lambda: _intent(sc, run, "CE").status == "filled", 20), sc.tail()
        done = _intent(sc, run, "CE")
        assert done.convert_state == "converted"
        with sc.db.read() as s:
            ev = s.scalars(select(OrderEvent).where(OrderEvent.intent_id == done.id,
                                                    OrderEvent.source == "entry_convert")
                           .order_by(OrderEvent.id)).all()
        assert [e.reason.split(":")[0].split(" (")[0] for e in ev] == [
            f"LIMIT still working {CONVERT_AFTER_S} s after it was sent", "converted to MARKET via modifyorder"]
        assert (ev[0].ts_utc - done.sent_at).total_seconds() >= CONVERT_AFTER_S  # not before its N seconds
        time.sleep(2.5)  # further converter passes: nothing more is sent
        assert wait_for(lambda: _modify_calls(sc) >= 1, 5)
        assert _modify_calls(sc) == 1
        [order] = _broker_orders(sim, sc, ce.symbol)  # the same one order, filled at the market
        assert (order["order_status"], order["pricetype"], order["orderid"]) == (
            "complete", "MARKET", done.broker_order_id)
        assert _intent(sc, run, "PE").status == "filled"

        # 'next week' executes on the following expiry's contracts
        nxt = save_strategy(sc.db, "next weekly", "NIFTY", "NSE_INDEX", "", [LegSpec("PE", "BUY")],
                            expiry_mode="next_week")
        _, [run2] = execute_strategy(sc.db, nxt, list(sc.names))
        assert following.replace("-", "") in _intent(sc, run2, "PE").symbol
        assert not webhook.matching("modifyorder")
    finally:
        sim.freeze(False)
        stop_service(sc.proc)


@pytest.mark.timeout(150)
def test_limit_entry_when_modify_fails_then_alert_and_the_limit_order_left_working(sim, tmp_path, webhook):
    sc = _start(sim, tmp_path, webhook)
    try:
        expiry = sc.wait_ready()
        _chain_prices(sc, expiry)
        sim.freeze(True)
        name = next(iter(sc.names.values()))
        sim.fault("http_500", endpoints=["modifyorder"], account=name, count=5)
        sid = save_strategy(sc.db, "fails", "NIFTY", "NSE_INDEX", expiry, [
            LegSpec("CE", "BUY", entry_type="LIMIT", entry_offset=-20.0, entry_offset_pct=True,
                    convert_after_s=1)])
        _, [run] = execute_strategy(sc.db, sid, list(sc.names))
        assert wait_for(lambda: _intent(sc, run, "CE").convert_state == "not_converted", 20), sc.tail()
        assert wait_for(lambda: webhook.matching("modifyorder to MARKET"), 10), [m for _, m in webhook.received]
        time.sleep(2.5)
        ce = _intent(sc, run, "CE")
        [order] = _broker_orders(sim, sc, ce.symbol)
        assert (ce.status, order["order_status"], order["pricetype"]) == ("placed", "open", "LIMIT")
        assert wait_for(lambda: _modify_calls(sc) >= 1, 5)
        assert _modify_calls(sc) == 1  # tried once, never again
        assert len(webhook.matching("modifyorder to MARKET")) == 1
    finally:
        sim.clear_faults()
        sim.freeze(False)
        stop_service(sc.proc)
