"""Relative expiries of a saved strategy (current week, next week, current month, next month), resolved against
the expiries the symbol master lists at the moment of execution (pure functions; the caller reads the list).

Weekly or monthly is read from the list itself, not from a calendar: an exchange that moves an expiry for a
holiday (Thursday -> Wednesday) lists the moved date, so the rules below follow it without a holiday table.

* current week  = the nearest listed expiry on or after today (an expiry day is still its own current week);
* next week     = the listed expiry after that;
* monthly       = the last listed expiry of a calendar month;
* current month = this calendar month's monthly expiry, or next month's once this month's has passed;
* next month    = the monthly expiry after the current month's.
"""
from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum


class ExpiryMode(StrEnum):
    FIXED = "fixed"
    CURRENT_WEEK = "current_week"
    NEXT_WEEK = "next_week"
    CURRENT_MONTH = "current_month"
    NEXT_MONTH = "next_month"


LABELS = {ExpiryMode.FIXED: "Fixed date", ExpiryMode.CURRENT_WEEK: "Current week",
          ExpiryMode.NEXT_WEEK: "Next week", ExpiryMode.CURRENT_MONTH: "Current month",
          ExpiryMode.NEXT_MONTH: "Next month"}
RELATIVE = tuple(m for m in ExpiryMode if m is not ExpiryMode.FIXED)


class NoSuchExpiry(ValueError):
    """The listed expiries have none for the mode (the message says which)."""


def expiry_date(expiry: str) -> date | None:
    """'30-DEC-25' (symbol-master format) -> date; None when it is not one."""
    try:
        return datetime.strptime(expiry.title(), "%d-%b-%y").date()
    except (ValueError, AttributeError):
        return None


def monthly_expiries(listed: list[str]) -> list[str]:
    """The last listed expiry of each calendar month, in date order."""
    last: dict[tuple[int, int], tuple[date, str]] = {}
    for e in listed:
        d = expiry_date(e)
        if d is not None and ((d.year, d.month) not in last or d > last[(d.year, d.month)][0]):
            last[(d.year, d.month)] = (d, e)
    return [e for _, e in sorted(last.values())]


def resolve(mode: str, listed: list[str], today: date) -> str:
    """The expiry (as listed) that ``mode`` names on ``today``; NoSuchExpiry when the list has none for it."""
    mode = ExpiryMode(mode)
    if mode is ExpiryMode.FIXED:
        raise ValueError("a fixed expiry is the strategy's own date, not resolved")
    dated = sorted((d, e) for e in listed if (d := expiry_date(e)) is not None)
    ahead = [e for d, e in dated if d >= today]
    if mode in (ExpiryMode.CURRENT_WEEK, ExpiryMode.NEXT_WEEK):
        n = 0 if mode is ExpiryMode.CURRENT_WEEK else 1
        if len(ahead) <= n:
            raise NoSuchExpiry(f"no {LABELS[mode].lower()} expiry listed on or after {today:%d-%b-%Y}")
        return ahead[n]
    # every month's own last expiry, even when only part of it lies ahead (the monthly of this month is the last
    # one of this month in the whole list, not the last of those still ahead)
    monthly = [e for e in monthly_expiries([e for _, e in dated]) if expiry_date(e) >= today]
    n = 0 if mode is ExpiryMode.CURRENT_MONTH else 1
    if len(monthly) <= n:
        raise NoSuchExpiry(f"no {LABELS[mode].lower()} expiry listed on or after {today:%d-%b-%Y}")
    return monthly[n]
