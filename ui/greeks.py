"""Position greeks of strategy legs (pure: DataFrames in, DataFrames out).

Each leg's volatility is implied from its last price (Black-Scholes, ui/black_scholes.py), and its greeks are
per unit times the signed quantity held (BUY +, SELL -): delta in units of the underlying, gamma per point,
theta in ₹ per day, vega in ₹ per 1 % point. A future is delta 1 per unit. A leg without a price (or whose price
no volatility reproduces) has no greeks: NaN, left out of the sums, and counted in ``unpriced``.
"""
from __future__ import annotations

import math
from datetime import datetime

import pandas as pd

from ui.black_scholes import greeks, implied_vol, years_to_expiry

GREEKS = ["delta", "gamma", "theta", "vega"]
NAN = float("nan")


def _leg(row, now_utc: datetime) -> dict:
    sign = 1 if str(row.action).upper() == "BUY" else -1
    qty = sign * float(row.quantity)
    if row.kind == "FUT":
        return {"iv": NAN, "delta": qty, "gamma": 0.0, "theta": 0.0, "vega": 0.0}
    spot, ltp, strike = row.spot, row.ltp, row.strike
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (spot, ltp, strike)):
        return {"iv": NAN, **dict.fromkeys(GREEKS, NAN)}
    t = years_to_expiry(str(row.expiry or ""), now_utc)
    vol = implied_vol(float(ltp), float(spot), float(strike), t, str(row.kind))
    if vol is None:
        return {"iv": NAN, **dict.fromkeys(GREEKS, NAN)}
    per_unit = greeks(float(spot), float(strike), t, vol, str(row.kind))
    return {"iv": vol * 100.0, **{k: v * qty for k, v in per_unit.items()}}


def leg_greeks(legs: pd.DataFrame, now_utc: datetime) -> pd.DataFrame:
    """``legs`` (db.repo.held_legs columns) plus iv (%), delta, gamma, theta, vega of the position."""
    out = legs.copy()
    rows = [_leg(r, now_utc) for r in legs.itertuples(index=False)]
    for col in ["iv", *GREEKS]:
        out[col] = [r[col] for r in rows] if rows else pd.Series(dtype=float)
    return out


def net(greeks_df: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Sums of the greeks, per ``by`` group (or one row for everything), with the count of unpriced legs."""
    df = greeks_df.assign(unpriced=greeks_df["delta"].isna().astype(int))
    cols = GREEKS + ["unpriced"]
    if not by:
        return pd.DataFrame([{c: df[c].sum(min_count=0) if c != "unpriced" else int(df[c].sum()) for c in cols}])
    return df.groupby(by, as_index=False)[cols].sum()
