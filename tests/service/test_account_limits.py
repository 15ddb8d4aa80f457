"""Account and portfolio day P&L limits in the service (services/account_limits.py), fed ticks through the real
market-data entry point, on a real SQLite file: the trailing stop on an account's day peak (kept across a
restart, reset on a new trading day, written on the reload and never per tick) and the portfolio daily max loss
(every account halted and flattened once; a write that fails is alarmed and retried)."""
from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import select

from db import clock
from db.accounts import save_day_peaks, set_trading_state, update_account
from db.models import Account, BrokerOrder, ControlCommand, Funds, OrderIntent, RiskEvent, utcnow
from db.portfolio import set_portfolio_max_loss
from db.vocab import TradingState
from services.account_limits import AccountLimits
from services.market_data import MarketDataManager
from tests.service.fixtures_md import account, add_position, ctx, md, tick  # noqa: F401

SYM = "SBIN"


class Flattens:
    """Stands in for Flattener.start: records what would be flattened."""
    def __init__(self):
        self.calls: list[tuple[int, list[int]]] = []

    def __call__(self, command_id, accounts):
        self.calls.append((command_id, list(accounts)))
        return True


def _acct(db, acct) -> Account:
    with db.read() as s:
        return s.get(Account, acct)


def _events(db, kind):
    with db.read() as s:
        return list(s.scalars(select(RiskEvent).where(RiskEvent.event_type == kind)))


def _commands(db, kind):
    with db.read() as s:
        return list(s.scalars(select(ControlCommand).where(ControlCommand.kind == kind)))


@pytest.fixture
def day_back():
    yield
    clock.set_offset(timedelta(0))


def _trailing_account(db, trail=100.0, name="trail") -> int:
    acct = account(db, name)
    update_account(db, acct, daily_trailing=trail)
    add_position(db, acct, SYM, 10, 800.0, exchange="NSE")  # day P&L = 10 x (ltp - 800)
    return acct


def test_trailing_when_day_pnl_rises_then_falls_through_peak_minus_trail_then_halted_once_naming_peak_and_floor(
        db, ctx, md):
    acct = _trailing_account(db)
    flat = Flattens()
    limits = AccountLimits(ctx, md, flat)
    limits.reload()
    for ltp in (805.0, 815.0, 820.0):  # the peak follows the day P&L up: 200
        tick(md, SYM, ltp, exchange="NSE")
    assert _acct(db, acct).day_peak is None  # never written on the tick path
    tick(md, SYM, 812.0, exchange="NSE")  # 120 > floor 100
    assert _acct(db, acct).trading_state == TradingState.ACTIVE
    limits.reload()
    assert (_acct(db, acct).day_peak, _acct(db, acct).day_peak_date) == (200.0, clock.trading_day().isoformat())
    tick(md, SYM, 810.0, exchange="NSE")  # 100 <= floor 100
    a = _acct(db, acct)
    assert a.trading_state == TradingState.HALTED
    assert a.trading_reason.startswith("daily trailing stop ₹100: day P&L peak ₹200.00, floor ₹100.00 at ")
    [event] = _events(db, "account_trailing_stop")
    assert (event.threshold, event.value, event.account_id) == (100.0, 100.0, acct)
    [cmd] = _commands(db, "flatten_account")
    assert flat.calls == [(cmd.id, [acct])]
    tick(md, SYM, 790.0, exchange="NSE")
    limits.reload()
    assert len(_events(db, "account_trailing_stop")) == 1 and len(flat.calls) == 1


def test_trailing_when_peak_not_above_zero_then_no_floor_the_loss_side_is_the_max_loss(db, ctx, md):
    acct = _trailing_account(db, trail=50.0)
    limits = AccountLimits(ctx, md, Flattens())
    limits.reload()
    tick(md, SYM, 790.0, exchange="NSE")  # -100: never above 0, so no trailing floor yet
    limits.reload()
    assert _acct(db, acct).trading_state == TradingState.ACTIVE and _acct(db, acct).day_peak is None


def test_trailing_when_service_restarts_within_the_day_then_the_stored_peak_keeps_the_floor(db, ctx, md):
    acct = _trailing_account(db)
    first = AccountLimits(ctx, md, Flattens())
    first.reload()
    tick(md, SYM, 820.0, exchange="NSE")  # peak 200
    tick(md, SYM, 815.0, exchange="NSE")  # 150
    first.reload()  # writes the peak
    md2 = MarketDataManager(ctx)  # a restarted service: nothing in memory
    try:
        tick(md2, SYM, 815.0, exchange="NSE")  # the day P&L is 150 when it starts
        flat = Flattens()
        second = AccountLimits(ctx, md2, flat)
        second.reload()
        tick(md2, SYM, 808.0, exchange="NSE")  # 80: under the stored peak's floor (100), above a fresh one's (50)
    finally:
        md2.stop()
    assert _acct(db, acct).trading_state == TradingState.HALTED
    assert "peak ₹200.00, floor ₹100.00" in _acct(db, acct).trading_reason
    assert len(flat.calls) == 1


def test_trailing_when_a_new_trading_day_starts_then_yesterdays_peak_is_forgotten(db, ctx, md, day_back):
    acct = _trailing_account(db)
    yesterday = (clock.trading_day() - timedelta(days=1)).isoformat()
    with db.write() as s:
        save_day_peaks(s, [(acct, yesterday, 500.0)])  # yesterday's floor (400) would trip at once today
    limits = AccountLimits(ctx, md, Flattens())
    limits.reload()
    tick(md, SYM, 805.0, exchange="NSE")  # 50: today's peak
    tick(md, SYM, 802.0, exchange="NSE")  # 20 > floor -50
    limits.reload()
    a = _acct(db, acct)
    assert a.trading_state == TradingState.ACTIVE
    assert (a.day_peak, a.day_peak_date) == (50.0, clock.trading_day().isoformat())
    clock.set_offset(timedelta(days=1))  # the service runs on into the next trading day
    limits.reload()  # yesterday's book is not today's P&L: nothing counts until account sync reads it again
    assert limits._books[acct].positions == []
    from db.account_books import mark_positions_synced
    with db.write() as s:  # the new day's positionbook read (the same position, carried)
        mark_positions_synced(s, acct, utcnow())
    limits.reload()  # subscribed again
    tick(md, SYM, 802.0, exchange="NSE")  # the day turns: the peak starts again from 0 (the day P&L now, 20)
    limits.reload()
    a = _acct(db, acct)
    assert a.trading_state == TradingState.ACTIVE
    assert (a.day_peak, a.day_peak_date) == (20.0, clock.trading_day().isoformat())


def _portfolio(db, n=3) -> list[int]:
    accts = [account(db, f"p{i}") for i in range(n)]
    for a in accts:
        add_position(db, a, SYM, 10, 800.0, exchange="NSE")
    update_account(db, accts[-1], daily_max_loss=10_000)  # limited or not, every account counts
    set_portfolio_max_loss(db, 250)
    return accts


def test_portfolio_when_the_sum_of_day_pnls_crosses_the_limit_on_a_tick_then_every_account_halted_once(db, ctx, md):
    accts = _portfolio(db)
    flat = Flattens()
    limits = AccountLimits(ctx, md, flat)
    limits.reload()
    tick(md, SYM, 795.0, exchange="NSE")  # 3 x -50 = -150: inside
    assert limits.portfolio_pnl == -150.0 and not _events(db, "portfolio_max_loss")
    tick(md, SYM, 791.0, exchange="NSE")  # 3 x -90 = -270 <= -250
    assert all(_acct(db, a).trading_state == TradingState.HALTED for a in accts)
    assert all(_acct(db, a).trading_reason.startswith("portfolio daily max loss ₹250 at ") for a in accts)
    [event] = _events(db, "portfolio_max_loss")
    assert (event.account_id, event.threshold, event.value) == (None, -250.0, -270.0)
    [cmd] = _commands(db, "flatten_all")
    assert flat.calls == [(cmd.id, accts)]
    for ltp in (780.0, 770.0):
        tick(md, SYM, ltp, exchange="NSE")
        limits.reload()
    assert len(_events(db, "portfolio_max_loss")) == 1 and len(flat.calls) == 1
    assert not _commands(db, "flatten_account")  # the limited account's own limit did not trip on top


def test_portfolio_when_an_account_is_rearmed_while_still_beyond_the_limit_then_halted_again(db, ctx, md):
    accts = _portfolio(db, 2)
    flat = Flattens()
    limits = AccountLimits(ctx, md, flat)
    limits.reload()
    tick(md, SYM, 780.0, exchange="NSE")  # -400
    limits.reload()
    assert len(flat.calls) == 1
    with db.write() as s:
        set_trading_state(s, accts[0], TradingState.ACTIVE, "", "ui")
    limits.reload()
    assert _acct(db, accts[0]).trading_state == TradingState.HALTED and len(flat.calls) == 2


def test_portfolio_when_the_trip_cannot_be_written_then_alarmed_and_written_once_when_it_can(db, ctx, md, caplog):
    accts = _portfolio(db, 2)
    flat = Flattens()
    limits = AccountLimits(ctx, md, flat)
    limits.reload()
    con = sqlite3.connect(db.path, isolation_level=None, timeout=10)
    con.execute("CREATE TRIGGER test_fail BEFORE INSERT ON risk_events WHEN NEW.event_type = 'portfolio_max_loss' "
                "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    with caplog.at_level(logging.ERROR, logger="services.account_limits"):
        tick(md, SYM, 780.0, exchange="NSE")
    assert any("PORTFOLIO LIMIT NOT ACTED ON" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)
    assert all(_acct(db, a).trading_state == TradingState.ACTIVE for a in accts) and not flat.calls  # rolled back
    con.execute("DROP TRIGGER test_fail")
    con.close()
    tick(md, SYM, 779.0, exchange="NSE")
    limits.reload()
    assert all(_acct(db, a).trading_state == TradingState.HALTED for a in accts)
    assert len(_events(db, "portfolio_max_loss")) == 1 and len(flat.calls) == 1


def _synced(db, acct, at=None) -> None:
    """What account sync leaves: the funds row stamped with when its reads began."""
    with db.write() as s:
        s.merge(Funds(account_id=acct, updated_at=at or utcnow()))


def _flatten_exits(db, acct) -> list[OrderIntent]:
    with db.read() as s:
        return list(s.scalars(select(OrderIntent).where(OrderIntent.account_id == acct, OrderIntent.source == "flatten")
                              .order_by(OrderIntent.priority)))


def test_trip_when_the_stored_positions_are_current_then_their_closes_are_written_with_the_halt_buys_first(
        db, ctx, md):
    acct = account(db, "early")
    update_account(db, acct, daily_max_loss=100)
    add_position(db, acct, SYM, 10, 800.0, exchange="NSE")
    add_position(db, acct, "INFY", -5, 1500.0, exchange="NSE")
    _synced(db, acct)
    wakes = []
    limits = AccountLimits(ctx, md, Flattens(), wake=lambda: wakes.append(1))
    tick(md, "INFY", 1500.0, exchange="NSE")
    limits.reload()
    tick(md, SYM, 785.0, exchange="NSE")  # -150: the flatten has not run (Flattens only records it)
    [cmd] = _commands(db, "flatten_account")
    exits = _flatten_exits(db, acct)
    assert [(i.symbol, i.action, i.requested_qty, i.status) for i in exits] == [
        ("INFY", "BUY", 5, "queued"), (SYM, "SELL", 10, "queued")]
    assert all(i.strategy_tag == f"flatten-{cmd.id}" and i.pricetype == "MARKET" for i in exits)
    assert wakes == [1]


def test_trip_when_an_order_may_have_moved_a_stored_position_then_the_flatten_reads_the_broker_first(db, ctx, md):
    acct = account(db, "late")
    update_account(db, acct, daily_max_loss=100)
    add_position(db, acct, SYM, 10, 800.0, exchange="NSE")
    add_position(db, acct, "INFY", 5, 1500.0, exchange="NSE")
    add_position(db, acct, "TCS", 5, 4000.0, exchange="NSE")
    _synced(db, acct, utcnow() - timedelta(seconds=5))
    with db.write() as s:  # stored after the sync began: SBIN may be other than the stored positionbook says
        s.add(BrokerOrder(account_id=acct, broker_order_id="X1", external=True, symbol=SYM, exchange="NSE",
                          action="SELL", quantity=10, product="NRML", order_status="complete", updated_at=utcnow()))
        s.add(BrokerOrder(account_id=acct, broker_order_id="X2", external=True, symbol="INFY", exchange="NSE",
                          action="SELL", quantity=5, product="NRML", order_status="open",  # working at the broker
                          updated_at=utcnow() - timedelta(seconds=60)))
    limits = AccountLimits(ctx, md, Flattens())
    for sym, ltp in (("INFY", 1500.0), ("TCS", 4000.0)):
        tick(md, sym, ltp, exchange="NSE")
    limits.reload()
    tick(md, SYM, 785.0, exchange="NSE")
    assert _commands(db, "flatten_account")
    assert [(i.symbol, i.action) for i in _flatten_exits(db, acct)] == [("TCS", "SELL")]  # only the one at rest


def test_trips_when_trailing_or_portfolio_then_each_halt_lasts_the_trading_day_and_is_rearmed_on_the_next(
        db, ctx, md):
    from services.square_off import SquareOffs
    trail = _trailing_account(db, name="trail")
    accts = _portfolio(db)
    limits = AccountLimits(ctx, md, Flattens())
    limits.reload()
    tick(md, SYM, 820.0, exchange="NSE")  # trail's peak 200; the portfolio +800
    limits.reload()
    tick(md, SYM, 775.0, exchange="NSE")  # trail -250 (through its floor); 4 x -250 = -1000 <= -250
    today = clock.trading_day().isoformat()
    assert "peak ₹200.00" in _acct(db, trail).trading_reason
    assert [_events(db, k) != [] for k in ("account_trailing_stop", "portfolio_max_loss")] == [True, True]
    for a in (trail, *accts):
        assert (_acct(db, a).trading_state, _acct(db, a).trading_until) == (TradingState.HALTED, today), a
    rearmed = SquareOffs(ctx, flattener=None).rearm(today)  # the same day: nothing lifts
    assert rearmed == []
    nxt = clock.next_trading_day(clock.trading_day()).isoformat()
    assert sorted(SquareOffs(ctx, flattener=None).rearm(nxt)) == sorted([trail, *accts])
    assert all(_acct(db, a).trading_state == TradingState.ACTIVE for a in (trail, *accts))
