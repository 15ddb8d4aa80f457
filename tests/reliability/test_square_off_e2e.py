"""Time-based protection against the real service process (``python -m services``) and the simulator, with both
market clocks moved together (the service's APP__MARKET__CLOCK_OFFSET_S, the simulator's /_sim/clock):

* the MIS square-off at 15:15 IST on a trading day: a Quick Order short, a strategy run and a position placed
  outside the app (on an account the trader halted) are closed, BUY exits first, the NRML position is left
  alone, exactly once (a restart just before the time still squares off, one after it does nothing); no new
  MIS entry passes after 15:15, an NRML one does;
* nothing fires on an NSE holiday (2026-10-02), and the square-off fires on the next trading day;
* an account halted by its daily max loss is re-armed on the next trading day; the trader's halt stays.
"""
from __future__ import annotations

import time
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from config import MarketSettings
from db import clock
from db.accounts import add_account, set_trading_state, update_account
from db.commands import CommandError, OrderRequest, enqueue_control, enqueue_order
from db.intents import new_client_order_id
from db.models import Account, AuditLog, Instrument, OrderIntent, RiskEvent, SquareOff, StrategyRun
from db.vocab import SquareOffStatus, TradingState
from simulator.testing import SimProcess
from tests.builders import fresh_row, seed_instruments
from tests.harness import queue_runs
from tests.market_clock import offset_to
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for

FAST = dict(APP__MARKET__SQUARE_OFF_CHECK_S="0.2", APP__SERVICE__FUNDS_REFRESH_S="1", APP__ALERTS__THROTTLE_S="0")


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=61, args=["--frozen"]) as s:
        yield s


def _service(db, tmp_path, offset_s: float, **env):
    return start_service(db.path, tmp_path / "svc.log", service_env(APP__MARKET__CLOCK_OFFSET_S=repr(offset_s),
                                                                    **FAST, **env))


def _clocks(sim, ist: str) -> float:
    """Both clocks (this process's and the simulator's) at the IST instant ``ist`` now; returns the offset."""
    off = offset_to(ist)
    sim.set_clock(offset_s=off)
    clock.set_offset(timedelta(seconds=off))
    return off


def _positions(sim, key) -> dict:
    rows = sim.api("positionbook", {"apikey": key}).json().get("data") or []
    return {(r["symbol"], r["product"]): int(float(r["quantity"])) for r in rows}


def _placed(sim, name) -> list[dict]:
    return [o for o in sim.orders() if o.get("account") == name and o.get("orderid")]


def _outside(sim, key, symbol, exchange, action, qty, product):
    r = sim.api("placeorder", {"apikey": key, "strategy": "outside", "symbol": symbol, "exchange": exchange,
                               "action": action, "quantity": qty, "pricetype": "MARKET", "product": product}).json()
    assert r.get("orderid"), r


def _row(db, day, product) -> SquareOff | None:
    with db.read() as s:
        return s.scalar(select(SquareOff).where(SquareOff.day == day, SquareOff.product == product))


def _future(sim, key) -> str:
    found = sim.api("search", {"apikey": key, "query": "NIFTY", "exchange": "NFO"}).json()["data"]
    return next(i["symbol"] for i in found if i["instrumenttype"] == "FUT" and i["name"] == "NIFTY")


@pytest.mark.timeout(240)
def test_mis_square_off_when_the_clock_reaches_15_15_on_a_trading_day_then_mis_closed_buy_first_nrml_kept_once(
        db, sim, webhook, tmp_path):
    day = clock.today_ist().isoformat()  # the session's trading day, at 10:30 IST (tests/market_clock.py)
    off_morning = _clocks(sim, f"{day} 10:30:00")
    for sym, px in (("SBIN", 800.0), ("RELIANCE", 1400.0), ("INFY", 1600.0)):
        sim.set_price(sym, "NSE", px)
    seed_instruments(db)
    ka, kb = sim.create_account("sq-a", capital=1e9), sim.create_account("sq-b", capital=1e9)
    a = add_account(db, "sq-a", sim.rest_url, sim.ws_url, ka, is_primary=True)
    b = add_account(db, "sq-b", sim.rest_url, sim.ws_url, kb)
    fut = _future(sim, ka)
    with db.write() as s:
        s.merge(Instrument(symbol=fut, exchange="NFO", name="NIFTY", instrumenttype="FUT", lotsize=65))
    proc = _service(db, tmp_path, off_morning, APP__ALERTS__URLS=webhook.url)
    try:
        [(run, _)] = queue_runs(db, [a], [dict(symbol="SBIN", action="BUY", qty=10)], "sqoff-strat")  # MIS run
        enqueue_order(db, OrderRequest(a, "RELIANCE", "NSE", "SELL", 5, product="MIS"), new_client_order_id())
        _outside(sim, ka, fut, "NFO", "BUY", 65, "NRML")
        _outside(sim, kb, "INFY", "NSE", "BUY", 3, "MIS")
        want_a = {("SBIN", "MIS"): 10, ("RELIANCE", "MIS"): -5, (fut, "NRML"): 65}
        assert wait_for(lambda: _positions(sim, ka) == want_a, 30), (tmp_path / "svc.out").read_text()[-3000:]
        assert wait_for(lambda: _run(db, run).status == "active", 20)
    finally:
        assert stop_service(proc) == 0
    with db.write() as s:  # the trader halted account b: its square-off exits are sent all the same
        set_trading_state(s, b, TradingState.HALTED, "halted by the trader", "ui")
    before = {n: len(_placed(sim, n)) for n in ("sq-a", "sq-b")}

    # a restart just before the time: the service starts at 15:14:5x and squares off at 15:15:00
    off = _clocks(sim, f"{day} 15:14:52")
    proc = _service(db, tmp_path, off, APP__ALERTS__URLS=webhook.url)
    try:
        assert wait_for(lambda: _row(db, day, "MIS") is not None and _row(db, day, "MIS").status
                        != SquareOffStatus.RUNNING, 60), (tmp_path / "svc.log").read_text()[-4000:]
        row = _row(db, day, "MIS")
        assert row.status == SquareOffStatus.DONE, row.summary
        assert _positions(sim, ka) == {("SBIN", "MIS"): 0, ("RELIANCE", "MIS"): 0, (fut, "NRML"): 65}
        assert _positions(sim, kb) == {("INFY", "MIS"): 0}
        exits_a = _placed(sim, "sq-a")[before["sq-a"]:]
        assert [(o["action"], o["symbol"], int(o["quantity"])) for o in exits_a] == \
            [("BUY", "RELIANCE", 5), ("SELL", "SBIN", 10)]  # each once, the BUY first
        assert all(o["timestamp"] >= f"{day} 15:15:00" for o in exits_a), exits_a  # not before the time
        assert [(o["action"], o["symbol"]) for o in _placed(sim, "sq-b")[before["sq-b"]:]] == [("SELL", "INFY")]
        assert _run(db, run).status == "exited" and _run(db, run).exit_reason == "square_off"
        assert fresh_row(db, Account, a).trading_state == TradingState.ACTIVE  # a square-off does not halt
        assert fresh_row(db, Account, b).trading_state == TradingState.HALTED
        with db.read() as s:
            events = {e.account_id for e in s.scalars(select(RiskEvent).where(RiskEvent.event_type == "square_off"))}
        assert events == {a, b}
        assert wait_for(lambda: webhook.matching(f"square-off MIS {day}"), 10), webhook.received

        # after the cut-off: a new MIS entry is refused at the form and denied by the service; NRML passes
        with pytest.raises(CommandError, match="no new MIS entries after 15:15"):
            enqueue_order(db, OrderRequest(a, "SBIN", "NSE", "BUY", 1, product="MIS"), new_client_order_id(),
                          market=MarketSettings())
        # one written under other rules (an app configured without the cut-off) is still denied by the service's
        late, _ = enqueue_order(db, OrderRequest(a, "SBIN", "NSE", "BUY", 1, product="MIS"), new_client_order_id(),
                                market=MarketSettings(mis_entries_until="off"))
        nrml, _ = enqueue_order(db, OrderRequest(a, fut, "NFO", "SELL", 65, product="NRML"), new_client_order_id(),
                                market=MarketSettings(), confirmed=True)
        assert wait_for(lambda: _intent(db, late).status == "denied", 10), _intent(db, late).status
        assert "no new MIS entries after 15:15 IST" in _intent(db, late).status_reason
        assert wait_for(lambda: _intent(db, nrml).status == "filled", 10), _intent(db, nrml).status_reason
    finally:
        assert stop_service(proc) == 0

    # a restart after it finished does nothing more that day
    count = {n: len(_placed(sim, n)) for n in ("sq-a", "sq-b")}
    proc = _service(db, tmp_path, off)
    try:
        time.sleep(3.0)  # 15 checks of the square-off job
        assert {n: len(_placed(sim, n)) for n in ("sq-a", "sq-b")} == count
        with db.read() as s:
            assert len(list(s.scalars(select(SquareOff)))) == 1
    finally:
        assert stop_service(proc) == 0


@pytest.mark.timeout(180)
def test_square_off_when_the_day_is_an_nse_holiday_then_nothing_fires_and_the_next_trading_day_it_does(
        db, sim, tmp_path):
    holiday, monday = "2026-10-02", "2026-10-05"  # Gandhi Jayanti (a Friday) in the XBOM calendar
    assert not clock.is_trading_day(date.fromisoformat(holiday))
    sim.set_price("SBIN", "NSE", 800.0)
    _clocks(sim, f"{holiday} 10:30:00")  # the simulator's MIS gate knows hours, not holidays
    key = sim.create_account("sq-hol", capital=1e9)
    acct = add_account(db, "sq-hol", sim.rest_url, sim.ws_url, key, is_primary=True)
    _outside(sim, key, "SBIN", "NSE", "SELL", 4, "MIS")
    seed_instruments(db)
    off = _clocks(sim, f"{holiday} 15:15:05")
    proc = _service(db, tmp_path, off)
    try:
        assert wait_for(lambda: _account_synced(db, acct), 20), (tmp_path / "svc.out").read_text()[-3000:]
        time.sleep(3.0)  # 15 checks past 15:15 on the holiday
        assert _row(db, holiday, "MIS") is None
        assert _positions(sim, key) == {("SBIN", "MIS"): -4}
        assert len(_placed(sim, "sq-hol")) == 1
    finally:
        assert stop_service(proc) == 0
    off = _clocks(sim, f"{monday} 15:15:01")
    proc = _service(db, tmp_path, off)
    try:
        assert wait_for(lambda: (_row(db, monday, "MIS") or SquareOff()).status == SquareOffStatus.DONE, 60), \
            (tmp_path / "svc.log").read_text()[-4000:]
        assert _positions(sim, key) == {("SBIN", "MIS"): 0}
        assert [(o["action"], int(o["quantity"])) for o in _placed(sim, "sq-hol")[1:]] == [("BUY", 4)]
    finally:
        assert stop_service(proc) == 0


@pytest.mark.timeout(180)
def test_daily_limit_halt_when_the_next_trading_day_comes_then_re_armed_and_the_traders_halt_stays(
        db, sim, tmp_path):
    day = date.fromisoformat("2026-10-01")  # a Thursday; the next trading day is Monday 2026-10-05
    nxt = clock.next_trading_day(day)
    assert nxt.isoformat() == "2026-10-05"
    off = _clocks(sim, f"{day} 10:30:00")
    sim.set_price("SBIN", "NSE", 800.0)
    seed_instruments(db)
    kl, km = sim.create_account("lim-l", capital=1e9), sim.create_account("lim-m", capital=1e9)
    lim = add_account(db, "lim-l", sim.rest_url, sim.ws_url, kl, is_primary=True)
    man = add_account(db, "lim-m", sim.rest_url, sim.ws_url, km)
    update_account(db, lim, daily_max_loss=100)
    _outside(sim, kl, "SBIN", "NSE", "BUY", 10, "MIS")
    proc = _service(db, tmp_path, off)
    try:
        assert wait_for(lambda: _positions(sim, kl).get(("SBIN", "MIS")) == 10, 10)
        assert wait_for(lambda: _account_synced(db, lim), 20)
        enqueue_control(db, "halt_account", {"account_id": man})
        sim.set_price("SBIN", "NSE", 780.0)  # day P&L about -200: through the 100 limit
        assert wait_for(lambda: fresh_row(db, Account, lim).trading_state == TradingState.HALTED, 15)
        assert fresh_row(db, Account, lim).trading_until == day.isoformat()
        assert wait_for(lambda: _positions(sim, kl).get(("SBIN", "MIS")) == 0, 30)  # the flatten closed it
        assert wait_for(lambda: fresh_row(db, Account, man).trading_state == TradingState.HALTED, 10)
        time.sleep(1.0)
        assert fresh_row(db, Account, lim).trading_state == TradingState.HALTED  # the same day: stays halted
    finally:
        assert stop_service(proc) == 0

    off = _clocks(sim, f"{nxt} 09:20:00")  # the simulator's new session: the positionbook starts afresh
    proc = _service(db, tmp_path, off)
    try:
        assert wait_for(lambda: fresh_row(db, Account, lim).trading_state == TradingState.ACTIVE, 20), \
            (tmp_path / "svc.log").read_text()[-3000:]
        assert f"re-armed on the next trading day {nxt}" in fresh_row(db, Account, lim).trading_reason
        time.sleep(2.5)  # account sync and the limit's reload ran: the new day's P&L is 0, no new halt
        assert fresh_row(db, Account, lim).trading_state == TradingState.ACTIVE
        assert fresh_row(db, Account, man).trading_state == TradingState.HALTED
        with db.read() as s:
            audits = [a.details for a in s.scalars(select(AuditLog).where(AuditLog.action == "trading_state"))]
            rearmed = list(s.scalars(select(RiskEvent).where(RiskEvent.event_type == "account_active",
                                                             RiskEvent.account_id == lim)))
        assert any('"after": "active"' in d and f'"account_id": {lim}' in d for d in audits), audits
        assert len(rearmed) == 1
    finally:
        assert stop_service(proc) == 0


def _account_synced(db, acct) -> bool:
    from db.models import Position
    with db.read() as s:
        return s.scalar(select(Position.id).where(Position.account_id == acct)) is not None


def _run(db, run_id) -> StrategyRun:
    with db.read() as s:
        return s.get(StrategyRun, run_id)


def _intent(db, iid) -> OrderIntent:
    with db.read() as s:
        return s.get(OrderIntent, iid)
