"""What the once-per-trading-day jobs share (services/square_off.py, services/timed.py): the market clock's
moment on a trading day, a result written with patience, and a loud report.

Their state lives in the database (a latch row per day: square_offs, timed_fires), so a restart before the time
still fires and one after it does nothing more; this module holds only the plumbing around those rows."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import date, datetime

from db.clock import is_trading_day, now_ist, trading_day
from db.errors import DbError


def trading_now() -> tuple[datetime, date] | None:
    """(the market clock's IST now, its trading day), or None when the exchange does not trade today (weekends,
    XBOM holidays): then no daily job fires. The calendar is loaded here, on the scheduler's thread."""
    now = now_ist()
    day = trading_day(now)
    return (now, day) if is_trading_day(day) else None


def write_retrying(db, fn: Callable[[object], None], what: str, log: logging.Logger, attempts: int = 20,
                   wait_s: float = 1.0) -> bool:
    """``fn(session)`` in a write transaction, tried ``attempts`` times ``wait_s`` apart: the database may be busy
    or full for a while after the work itself is done. True once written."""
    for _ in range(attempts):
        try:
            with db.write() as s:
                fn(s)
            return True
        except DbError as exc:
            log.warning("%s: result not written yet (%s)", what, exc)
            threading.Event().wait(wait_s)
    return False


def report(notifier, log: logging.Logger, kind: str, message: str, subject: str, error: bool = False) -> None:
    """A WARNING (an ERROR when ``error``) in the log and an alert to the notifier's targets."""
    (log.error if error else log.warning)("%s", message)
    if notifier is not None:
        notifier.alert(kind, message, subject=subject)
