"""IST time helpers shared by the simulator modules."""

from __future__ import annotations

import datetime as dt
import time

IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")


def now_ist() -> dt.datetime:
    return dt.datetime.now(IST)


def ist_stamp(when: dt.datetime | None = None) -> str:
    """Naive IST timestamp string `YYYY-MM-DD HH:MM:SS` as the sandbox writes it."""
    return (when or now_ist()).strftime("%Y-%m-%d %H:%M:%S")


def epoch_ms() -> int:
    return int(time.time() * 1000)


def today_ist() -> dt.date:
    return now_ist().date()
