"""India Standard Time, the exchanges' clock: what risk events, audit reasons and broker timestamps are read in,
and the NSE/BSE trading calendar.

Everything in the service that asks "what time is it in the market" (square-off, no-new-entries, the trading day
that daily limits belong to) asks here, so one offset moves them all: tests and the demo move the clock
(``set_offset``, or the settings ``APP__MARKET__CLOCK_START_IST`` / ``APP__MARKET__CLOCK_OFFSET_S`` through
``apply_settings``) the same way the simulator's ``/_sim/clock`` moves its own.

Trading days come from exchange-calendars' XBOM (BSE; NSE keeps the same holidays). The calendar is loaded once,
lazily (pandas and ~40 ms), by the first caller that needs it: the square-off job, never a tick path.
"""
from __future__ import annotations

import functools
import logging
import threading
from datetime import date, datetime, time, timedelta, timezone

from config import MarketSettings, parse_clock_start, parse_hhmm

IST_OFFSET = timedelta(hours=5, minutes=30)
IST = timezone(IST_OFFSET)
log = logging.getLogger("db.clock")

_offset = timedelta(0)  # process-wide; set once at start-up (settings) or by a test


def set_offset(delta: timedelta) -> None:
    global _offset
    _offset = delta


def offset() -> timedelta:
    """How far the market clock is ahead of the real one (0 unless a test or the demo moved it)."""
    return _offset


def apply_settings(m: MarketSettings) -> timedelta:
    """Set the process's market clock from the settings (a start instant, or a shift); returns the offset."""
    start = parse_clock_start(m.clock_start_ist)
    if start is not None:
        set_offset(start.replace(tzinfo=IST) - datetime.now(IST))
    else:
        set_offset(timedelta(seconds=m.clock_offset_s))
    return _offset


_applied: tuple[str, float] | None = None


def apply_clock(m: MarketSettings) -> None:
    """``apply_settings`` once per process for the same clock settings (the app loads its settings on every
    rerun: its clock must not jump back to the start instant each time)."""
    global _applied
    key = (m.clock_start_ist.strip(), float(m.clock_offset_s))
    if key != _applied:
        apply_settings(m)
        _applied = key


def now_ist() -> datetime:
    return datetime.now(IST) + _offset


def today_ist() -> date:
    return now_ist().date()


def trading_day(now: datetime | None = None) -> date:
    """The day everything daily belongs to: the daily limits and the day's P&L peak, the day a limit's halt lasts
    through (accounts.trading_until), the square-off's (day, product) row. The market clock's IST date, which is
    the session's date on a trading day (XBOM sessions are dates); whether the exchange trades on it is
    ``is_trading_day(trading_day())``. Not the last session on or before today: the brokers' positionbooks start
    afresh every day (the sandbox's at 03:00), so a peak carried over a weekend would be compared with a fresh
    book, and a halt of a non-trading day lifts on the next trading day either way (``rearm_due``)."""
    return (now or now_ist()).date()


def ist_now_str() -> str:
    return now_ist().strftime("%Y-%m-%d %H:%M:%S IST")


# ---- the trading calendar -------------------------------------------------------------------------------------
class _Calendar:
    """NSE/BSE sessions as plain dates. exchange-calendars 4.x knows XBOM sessions only up to a last date (the end
    of the current year's published holidays, 2026-12-31 in 4.13): beyond it every weekday counts as a trading day,
    with one warning, so the service keeps squaring off (a holiday then looks like a trading day: the square-off
    finds nothing to close, and the broker rejects entries) until a newer exchange-calendars is installed."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sessions: frozenset[date] | None = None
        self._first = self._last = date.min
        self._warned = False

    def _load(self) -> None:
        import exchange_calendars  # pandas: loaded only here, once

        cal = exchange_calendars.get_calendar("XBOM")
        self._sessions = frozenset(ts.date() for ts in cal.sessions)
        self._first, self._last = cal.first_session.date(), cal.last_session.date()

    def is_trading_day(self, d: date) -> bool:
        with self._lock:
            if self._sessions is None:
                self._load()
            if self._first <= d <= self._last:
                return d in self._sessions
            if not self._warned:
                self._warned = True
                log.warning("the XBOM trading calendar ends %s: %s and later dates count every weekday as a "
                            "trading day (install a newer exchange-calendars for the holidays)", self._last, d)
        return d.weekday() < 5


CALENDAR = _Calendar()


def is_trading_day(d: date) -> bool:
    return CALENDAR.is_trading_day(d)


def next_trading_day(d: date) -> date:
    """The first trading day strictly after ``d``."""
    nxt = d + timedelta(days=1)
    for _ in range(30):  # no exchange closes for a month
        if is_trading_day(nxt):
            return nxt
        nxt += timedelta(days=1)
    return nxt


# ---- the time rules (config.MarketSettings) -------------------------------------------------------------------
SQUARED_OFF_PRODUCTS = ("MIS", "NRML")  # CNC (delivery) is never squared off
# A daily limit's halt is lifted on the next trading day from this IST time: the brokers' positionbooks have started
# the new day by then (the sandbox's at 03:00, the pre-open at 09:00), so the day P&L the limit reads is the new
# day's. At midnight it would still be yesterday's, and the account would trip again at once.
REARM_FROM = time(9, 0)


def square_off_time(m: MarketSettings, product: str) -> time | None:
    """The IST time the product's positions are squared off on a trading day (None: never)."""
    if product == "MIS":
        return parse_hhmm(m.mis_square_off, "APP__MARKET__MIS_SQUARE_OFF")
    if product == "NRML":
        return parse_hhmm(m.nrml_square_off, "APP__MARKET__NRML_SQUARE_OFF")
    return None


@functools.lru_cache(maxsize=64)
def entries_cutoff(m: MarketSettings, product: str) -> time | None:
    """From this IST time of day no new entry of ``product`` is sent (None: no cut-off)."""
    cuts = [parse_hhmm(m.entries_until, "APP__MARKET__ENTRIES_UNTIL")]
    if product == "MIS":
        mis = parse_hhmm(m.mis_entries_until, "APP__MARKET__MIS_ENTRIES_UNTIL", ("off", "square_off"))
        cuts.append(square_off_time(m, "MIS") if mis == "square_off" else mis)
    cuts = [c for c in cuts if c is not None]
    return min(cuts) if cuts else None


def entry_denial(m: MarketSettings, product: str, now: datetime | None = None) -> str:
    """Why a new entry of ``product`` may not be sent now ('' = it may). Time of day only: after the cut-off the
    day's entries are over, and before the market opens the broker itself refuses them."""
    cut = entries_cutoff(m, (product or "").upper())
    t = (now or now_ist()).time()
    if cut is None or t < cut:
        return ""
    return f"no new {product} entries after {cut:%H:%M} IST (it is {t:%H:%M:%S} IST); exits are still sent"
