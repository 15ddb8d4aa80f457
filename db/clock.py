"""India Standard Time, the exchanges' clock: what risk events, audit reasons and broker timestamps are read in.

Everything in the service that asks "what time is it in the market" (square-off, no-new-entries, the trading day
that daily limits belong to) asks here, so one offset moves them all: tests and the demo move the clock
(``set_offset``) the same way the simulator's ``/_sim/clock`` moves its own.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

IST_OFFSET = timedelta(hours=5, minutes=30)
IST = timezone(IST_OFFSET)

_offset = timedelta(0)  # process-wide; set once at start-up (settings) or by a test


def set_offset(delta: timedelta) -> None:
    global _offset
    _offset = delta


def now_ist() -> datetime:
    return datetime.now(IST) + _offset


def today_ist() -> date:
    return now_ist().date()


def trading_day() -> date:
    """The trading day the daily limits (and the day's P&L peak) belong to: the one place that says which day it
    is for them, so an exchange calendar can take its place without touching its callers."""
    return today_ist()


def ist_now_str() -> str:
    return now_ist().strftime("%Y-%m-%d %H:%M:%S IST")
