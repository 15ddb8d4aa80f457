"""The market clock, the NSE/BSE trading calendar and the time rules (db/clock.py, config 'market' section)."""
from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

import pytest

from config import ConfigError, MarketSettings, load_settings
from db import clock
from db.accounts import set_trading_state
from db.models import Account
from db.vocab import TradingState
from tests.builders import make_account


@pytest.mark.parametrize("day,trading", [("2026-10-02", False),  # Gandhi Jayanti
                                         ("2026-12-25", False),  # Christmas
                                         ("2026-10-03", False),  # a Saturday
                                         ("2026-10-05", True), ("2026-12-01", True)])
def test_trading_day_when_asked_for_a_date_then_the_xbom_calendar_answers(day, trading):
    assert clock.is_trading_day(date.fromisoformat(day)) is trading


def test_trading_day_when_past_the_calendars_last_session_then_weekdays_count_with_one_warning(caplog):
    cal = clock._Calendar()
    with caplog.at_level(logging.WARNING, "db.clock"):
        assert cal.is_trading_day(date(2027, 1, 4)) is True  # a Monday
        assert cal.is_trading_day(date(2027, 1, 2)) is False  # a Saturday
    assert len([r for r in caplog.records if "calendar ends" in r.message]) == 1


def test_next_trading_day_when_a_weekend_and_a_holiday_follow_then_it_skips_them():
    assert clock.next_trading_day(date(2026, 10, 1)) == date(2026, 10, 5)  # Fri holiday, Sat, Sun
    assert clock.next_trading_day(date(2026, 12, 1)) == date(2026, 12, 2)


def test_entry_denial_when_mis_after_its_square_off_time_then_denied_nrml_and_earlier_pass():
    m = MarketSettings()
    at = lambda hh, mm, ss=0: datetime(2026, 12, 1, hh, mm, ss, tzinfo=clock.IST)  # noqa: E731
    assert clock.entry_denial(m, "MIS", at(15, 14, 59)) == ""
    assert "no new MIS entries after 15:15 IST" in clock.entry_denial(m, "MIS", at(15, 15))
    assert clock.entry_denial(m, "NRML", at(15, 20)) == ""
    general = MarketSettings(entries_until="15:00", mis_entries_until="off")
    assert "after 15:00" in clock.entry_denial(general, "NRML", at(15, 0))
    assert "after 15:00" in clock.entry_denial(general, "MIS", at(15, 5))
    assert clock.square_off_time(m, "MIS") == time(15, 15)
    assert clock.square_off_time(m, "NRML") is None and clock.square_off_time(m, "CNC") is None


def test_apply_settings_when_a_clock_start_is_given_then_the_clock_starts_there():
    clock.apply_settings(MarketSettings(clock_start_ist="2026-12-01 15:14:50"))
    assert abs((clock.now_ist().replace(tzinfo=None) - datetime(2026, 12, 1, 15, 14, 50)).total_seconds()) < 2
    clock.apply_settings(MarketSettings(clock_offset_s=-3600))
    assert clock.offset() == timedelta(hours=-1)


@pytest.mark.parametrize("env,msg", [({"APP__MARKET__MIS_SQUARE_OFF": "25:00"}, "not a time of day"),
                                     ({"APP__MARKET__NRML_SQUARE_OFF": "3pm"}, "not a time of day"),
                                     ({"APP__MARKET__MIS_ENTRIES_UNTIL": "square"}, "square_off"),
                                     ({"APP__MARKET__CLOCK_START_IST": "tomorrow"}, "YYYY-MM-DD HH:MM"),
                                     ({"APP__MARKET__CLOCK_START_IST": "2026-12-01 10:00",
                                       "APP__MARKET__CLOCK_OFFSET_S": "60"}, "use one"),
                                     ({"APP__MARKET__SQUARE_OFF_CHECK_S": "0"}, ">= 0.1")])
def test_market_settings_when_bad_then_loading_fails_with_the_reason(env, msg):
    with pytest.raises(ConfigError, match=msg):
        load_settings(env)


def test_market_settings_when_valid_then_loaded():
    s = load_settings({"APP__MARKET__NRML_SQUARE_OFF": "15:20", "APP__MARKET__CLOCK_START_IST": "2026-12-01 15:14"})
    assert clock.square_off_time(s.market, "NRML") == time(15, 20)


def test_halt_until_when_the_trader_halts_a_limit_halted_account_then_it_becomes_a_manual_halt(db):
    acct = make_account(db)
    with db.write() as s:
        assert set_trading_state(s, acct, TradingState.HALTED, "daily max loss", "service", until="2026-12-01")
        assert not set_trading_state(s, acct, TradingState.HALTED, "flatten #3", "service")  # keeps its until
        assert s.get(Account, acct).trading_until == "2026-12-01"
        assert set_trading_state(s, acct, TradingState.HALTED, "halted by the trader", "ui", until="")
        assert s.get(Account, acct).trading_until == ""
        assert set_trading_state(s, acct, TradingState.ACTIVE, "re-armed", "ui")
        assert s.get(Account, acct).trading_until == ""


def test_trading_state_when_the_account_is_loaded_in_the_session_then_it_reads_the_new_state_and_audit(db):
    # set_trading_state writes with plain SQL on the session's connection: an Account the caller already holds
    # must not keep the old state (and a pending ORM change to it must be written first, not lost)
    from sqlalchemy import select

    from db.models import AuditLog, RiskEvent

    acct = make_account(db)
    with db.write() as s:
        loaded = s.get(Account, acct)
        loaded.status_message = "pending change"
        assert loaded.trading_state == TradingState.ACTIVE
        assert set_trading_state(s, acct, TradingState.HALTED, "daily max loss ₹5,000", "service", until="2026-12-01")
        assert (loaded.trading_state, loaded.trading_reason, loaded.trading_until) == (
            "halted", "daily max loss ₹5,000", "2026-12-01")
        assert loaded.trading_changed_at is not None
    with db.read() as s:
        a = s.get(Account, acct)
        assert (a.trading_state, a.status_message) == ("halted", "pending change")
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "trading_state")).one()
        assert '"before": "active"' in audit.details and '"after": "halted"' in audit.details
        ev = s.scalars(select(RiskEvent).where(RiskEvent.event_type == "account_halted")).one()
        assert ev.account_id == acct and ev.ts_utc is not None and "active -> halted" in ev.message
