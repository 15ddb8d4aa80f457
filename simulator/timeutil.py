"""IST time helpers shared by the simulator modules, on the simulator's market clock.

The clock is the real one plus an offset (``--clock-offset-s``, or ``/_sim/clock`` at run time), so tests can stand
at 15:14:59 IST on a trading day at any wall time. Everything time-of-day in the simulator reads it: the MIS gate,
order and trade timestamps, order ids, the session day. Latency stamps (``epoch_ms``, ``received_at_ms``) stay
on the real clock: they measure, they do not tell market time.
"""

from __future__ import annotations

import datetime as dt
import time

IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
SESSION_START = dt.timedelta(hours=3)  # the sandbox's SESSION_EXPIRY_TIME: the day's views reset at 03:00 IST

_offset = dt.timedelta(0)


def set_offset(delta: dt.timedelta) -> None:
    global _offset
    _offset = delta


def offset() -> dt.timedelta:
    return _offset


def now_ist() -> dt.datetime:
    return dt.datetime.now(IST) + _offset


def ist_stamp(when: dt.datetime | None = None) -> str:
    """Naive IST timestamp string `YYYY-MM-DD HH:MM:SS` as the sandbox writes it."""
    return (when or now_ist()).strftime("%Y-%m-%d %H:%M:%S")


def epoch_ms() -> int:
    return int(time.time() * 1000)


def today_ist() -> dt.date:
    return now_ist().date()


def session_day() -> dt.date:
    """The sandbox session the clock is in (it starts at 03:00 IST)."""
    return (now_ist() - SESSION_START).date()
