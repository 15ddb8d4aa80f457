"""Day summaries (db/history.py, services/day_summary.py) on a real SQLite file: what a day's rows hold, that writing a
day again replaces them, the end-of-day job's timing on the market clock, and what a risk exit was decided on."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from db import clock
from db.clock import IST
from db.history import day_summaries, run_risk_events, trading_day_of
from db.models import BrokerTrade, DaySummary, Position, StrategyRun
from services.day_summary import DaySummaries
from services.risk import RiskManager
from tests.service.fixtures_md import account, add_position, ctx, make_run, md, tick  # noqa: F401

WED = datetime(2026, 12, 2, 16, 0, tzinfo=IST)  # a Wednesday, after the 15:35 close
RUN_START_UTC = datetime(2026, 12, 2, 4, 0)  # 09:30 IST that day


def _rows(db) -> dict:
    with db.read() as s:
        return {(r.account_id, r.strategy): r for r in s.scalars(select(DaySummary).order_by(DaySummary.id))}


def _trade(db, acct, key, ts):
    with db.write() as s:
        s.add(BrokerTrade(account_id=acct, trade_key=key, broker_order_id=key, symbol="SBIN", exchange="NSE",
                          action="BUY", quantity=1, average_price=100.0, broker_timestamp=ts))


def _run(db, acct, name, pnl, status, started=RUN_START_UTC):
    run_id, _ = make_run(db, acct, [dict(symbol="SBIN", action="BUY", qty=1, entry=100.0, exchange="NSE")],
                         status=status, name=name)
    with db.write() as s:
        r = s.get(StrategyRun, run_id)
        r.pnl, r.started_at = pnl, started
    return run_id


@pytest.fixture
def day(db):
    """Account 1: a closed position (+300 realised), an open one (-50 unrealised), two fills that day and one the
    day before; runs that day: straddle won 400 and lost 100 (both exited), iron live at +25; one run started the
    day before. Account 2: nothing."""
    a1, a2 = account(db, "one"), account(db, "two")
    add_position(db, a1, "NIFTY1", 0, 100.0, realized=300.0)
    add_position(db, a1, "NIFTY2", 10, 100.0)
    with db.write() as s:
        s.scalars(select(Position).where(Position.symbol == "NIFTY2")).one().unrealized_pnl = -50.0
    _trade(db, a1, "t1", "2026-12-02 09:31:00")
    _trade(db, a1, "t2", "02-Dec-2026 14:00:00")
    _trade(db, a1, "t0", "2026-12-01 10:00:00")
    _run(db, a1, "straddle", 400.0, "exited")
    _run(db, a1, "straddle", -100.0, "exited")
    _run(db, a1, "iron", 25.0, "active")
    _run(db, a1, "straddle", 9999.0, "exited", started=RUN_START_UTC - timedelta(days=1))
    return a1, a2


def test_summarise_when_a_full_day_then_one_row_per_account_and_strategy_with_its_figures(db, ctx, day):
    a1, a2 = day
    result = DaySummaries(ctx).summarise(WED)
    assert result == "2026-12-02: 3 summary row(s) written (final)"
    rows = _rows(db)
    assert set(rows) == {(a1, ""), (a1, "straddle"), (a1, "iron")}  # account 2 traded nothing: no row
    acct = rows[(a1, "")]
    assert (acct.realized, acct.unrealized, acct.total) == (300.0, -50.0, 250.0)
    assert (acct.trades, acct.wins, acct.losses, acct.closed, acct.day) == (2, 1, 1, True, "2026-12-02")
    straddle = rows[(a1, "straddle")]  # the run of the day before is not this day's
    assert (straddle.realized, straddle.unrealized, straddle.trades, straddle.wins, straddle.losses) == \
        (300.0, 0.0, 2, 1, 1)
    iron = rows[(a1, "iron")]
    assert (iron.realized, iron.unrealized, iron.total, iron.trades, iron.wins, iron.losses) == \
        (0.0, 25.0, 25.0, 1, 0, 0)
    shown = day_summaries(db)
    assert list(shown["account"].unique()) == ["one"] and len(shown) == 3


def test_summarise_when_written_again_then_rows_replaced_not_duplicated(db, ctx, day):
    a1, _ = day
    ds = DaySummaries(ctx)
    ds.summarise(WED - timedelta(hours=3))  # 13:00 IST: the day so far
    assert not _rows(db)[(a1, "")].closed
    _trade(db, a1, "t3", "2026-12-02 15:10:00")
    assert ds.summarise(WED).endswith("(final)")
    rows = _rows(db)
    assert len(rows) == 3
    with db.read() as s:
        assert len(list(s.scalars(select(DaySummary)))) == 3
    assert rows[(a1, "")].trades == 3 and rows[(a1, "")].closed


def test_summarise_when_weekend_then_nothing_written(db, ctx, day):
    sat = WED + timedelta(days=3)
    assert trading_day_of(sat) is None and trading_day_of(WED) == WED.date()
    assert DaySummaries(ctx).summarise(sat) == "Sat 2026-12-05 is not a trading day: nothing to summarise"
    assert not _rows(db)


@pytest.fixture
def market_clock():
    """Moves db.clock (the service's market clock) to a given IST moment; back to real time afterwards."""
    def move(to: datetime):
        clock.set_offset(timedelta(0))
        clock.set_offset(to - clock.now_ist())
    yield move
    clock.set_offset(timedelta(0))


def test_end_of_day_when_close_passes_then_written_once_and_not_again_after_a_restart(db, ctx, day, market_clock):
    a1, _ = day
    market_clock(WED.replace(hour=15, minute=30))
    DaySummaries(ctx).end_of_day()
    assert not _rows(db)  # before the close: nothing

    market_clock(WED.replace(hour=15, minute=36))
    job = DaySummaries(ctx)
    job.end_of_day()
    first = _rows(db)[(a1, "")]
    assert first.closed and first.day == "2026-12-02"
    _trade(db, a1, "late", "2026-12-02 15:40:00")
    job.end_of_day()
    DaySummaries(ctx).end_of_day()  # a restarted service sees the closed summary in the database
    again = _rows(db)[(a1, "")]
    assert (again.id, again.trades, again.written_at) == (first.id, first.trades, first.written_at)


def test_exit_when_breached_then_its_risk_event_keeps_the_prices_it_was_decided_on(db, ctx, md):
    acct = account(db)
    run_id, _ = make_run(db, acct, [dict(symbol="CE1", action="SELL", qty=65, entry=100.0),
                                    dict(symbol="CE2", action="BUY", qty=65, entry=20.0)], max_loss=1000)
    risk = RiskManager(ctx, md, lambda: None)
    tick(md, "CE1", 100.0)
    tick(md, "CE2", 20.0)
    risk.reload()
    tick(md, "CE1", 116.0)  # -1040 on the short leg: max loss
    [event] = run_risk_events(db, run_id)
    assert event["event_type"] == "max_loss" and event["value"] == -1040
    legs = {leg[0]: leg for leg in event["decided_on"]}
    assert legs["CE1"][:5] == ["CE1", "SELL", 65, 100.0, 116.0] and legs["CE1"][6] == 116.0
    assert legs["CE2"][:5] == ["CE2", "BUY", 65, 20.0, 20.0]
    assert json.dumps(event["decided_on"])  # stored as JSON, read back as lists


@pytest.mark.parametrize("bad", ["25:00", "15:5", "3pm", "", "15:60"])
def test_settings_when_day_summary_time_is_not_hh_mm_then_refused_at_load(bad):
    from config import ConfigError, load_settings
    with pytest.raises(ConfigError, match="APP__SERVICE__DAY_SUMMARY_AT: .* is not a time of day HH:MM"):
        load_settings({"APP__SERVICE__DAY_SUMMARY_AT": bad})
