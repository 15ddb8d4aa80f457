"""The market clock the tests run on: 10:30 IST on the latest NSE/BSE trading day (today's, if it is one).

A real OpenAlgo server refuses MIS orders from 15:15 to 09:00 IST, and the simulators of the tests enforce that
(``--mis-gate``), so every test that places an MIS order would pass or fail with the hour CI happens to run at.
tests/conftest.py therefore moves every clock by the same offset once per test session: this process's
(db.clock), every simulator's (SimProcess.defaults) and every service's and app's (APP__MARKET__CLOCK_OFFSET_S
in the environment they inherit), with ``use_market_hours``; the benchmarks and the crash soak do the same.
Tests of the time rules move the clocks further themselves.
"""
from __future__ import annotations

import os
from datetime import datetime, time, timedelta

from db import clock
from db.clock import IST, is_trading_day
from simulator.testing import SimProcess

MARKET_HOURS = time(10, 30)


def market_hours_offset_s(now: datetime | None = None) -> float:
    now = now or datetime.now(IST)
    day = now.date()
    for _ in range(30):
        if is_trading_day(day):
            break
        day -= timedelta(days=1)
    return (datetime.combine(day, MARKET_HOURS, IST) - now).total_seconds()


def offset_to(ist: str) -> float:
    """The offset (seconds) that puts the clock at the IST instant 'YYYY-MM-DD HH:MM:SS' now."""
    return (datetime.strptime(ist, "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST) - datetime.now(IST)).total_seconds()


def use_market_hours() -> float:
    """Put this process's clock, the simulators it starts (MIS gate on) and the services and apps it starts (through
    the environment) at 10:30 IST on the latest trading day. Returns the offset in seconds."""
    off = market_hours_offset_s()
    os.environ["APP__MARKET__CLOCK_OFFSET_S"] = repr(off)
    os.environ.pop("APP__MARKET__CLOCK_START_IST", None)
    clock.set_offset(timedelta(seconds=off))
    SimProcess.defaults.update(mis_gate=True, clock_offset_s=off)
    return off


def inherit() -> None:
    """In a child process the test spawned (multiprocessing 'spawn' imports no conftest): take the session's market
    clock from the environment ``use_market_hours`` set, so the child's dispatcher sees the hours the parent does."""
    clock.set_offset(timedelta(seconds=float(os.environ.get("APP__MARKET__CLOCK_OFFSET_S", "0"))))
