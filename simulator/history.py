"""Deterministic OHLCV history bars (epoch-second timestamps)."""

from __future__ import annotations

import calendar
import datetime as dt
import math
import random

from .timeutil import IST

SUPPORTED = {"1m": 60, "3m": 180, "5m": 300, "10m": 600, "15m": 900, "30m": 1800, "1h": 3600, "D": 0}
INTERVALS_VIEW = {"days": ["D"], "hours": ["1h"], "minutes": ["1m", "3m", "5m", "10m", "15m", "30m"],
                  "months": [], "seconds": [], "weeks": []}
MAX_BARS = 50_000
SESSION_MIN = 375  # 09:15 -> 15:30


def _days(start: dt.date, end: dt.date):
    d = start
    while d <= end:
        if d.weekday() < 5:
            yield d
        d += dt.timedelta(days=1)


def _day_open(seed: int, symbol: str, exchange: str, day: dt.date, ref: float) -> float:
    """A level for the day: a slow deterministic drift around the reference price."""
    n = day.toordinal()
    rnd = random.Random(f"hd:{seed}:{exchange}:{symbol}:{n}")
    wave = 0.04 * math.sin(n / 23.0) + 0.02 * math.sin(n / 7.0)
    return ref * (1.0 + wave + rnd.uniform(-0.004, 0.004))


def bars(seed: int, symbol: str, exchange: str, interval: str, start: dt.date, end: dt.date,
         ref: float, tick: float = 0.05, lot: int = 1, with_oi: bool = False) -> list[dict]:
    out: list[dict] = []
    step = SUPPORTED[interval]
    def rt(x):
        return round(round(x / tick) * tick, 2)
    for day in _days(start, end):
        open_ = _day_open(seed, symbol, exchange, day, ref)
        rnd = random.Random(f"hb:{seed}:{exchange}:{symbol}:{interval}:{day.toordinal()}")
        oi = int(rnd.uniform(1e5, 5e6)) // lot * lot if with_oi else 0
        if step == 0:
            close = _day_open(seed, symbol, exchange, day + dt.timedelta(days=1), ref)
            hi, lo = max(open_, close) * (1 + rnd.uniform(0, 0.006)), min(open_, close) * (1 - rnd.uniform(0, 0.006))
            ts = calendar.timegm(day.timetuple())
            out.append(_bar(ts, rt(open_), rt(hi), rt(lo), rt(close), rnd.randint(10**5, 10**7), oi))
        else:
            base = dt.datetime(day.year, day.month, day.day, 9, 15, tzinfo=IST).timestamp()
            px = open_
            for i in range(SESSION_MIN * 60 // step):
                o = px
                px *= math.exp(rnd.gauss(0, 0.0007 * math.sqrt(step / 60)))
                hi = max(o, px) * (1 + abs(rnd.gauss(0, 0.0002)))
                lo = min(o, px) * (1 - abs(rnd.gauss(0, 0.0002)))
                out.append(_bar(int(base) + i * step, rt(o), rt(hi), rt(lo), rt(px), rnd.randint(100, 50000), oi))
        if len(out) >= MAX_BARS:
            return out[:MAX_BARS]
    return out


def _bar(ts, o, h, lo, c, v, oi) -> dict:
    return {"close": c, "high": h, "low": lo, "oi": oi, "open": o, "timestamp": ts, "volume": v}
