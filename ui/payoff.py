"""Strategy payoff at expiry and today (Black-Scholes). Pure functions over a list of legs.

A leg is a dict: kind 'CE' | 'PE' | 'FUT', action 'BUY' | 'SELL', strike, quantity (units, not lots),
premium (entry price per unit: option premium or futures price) and optionally iv (annual, e.g. 0.15).
"""
from __future__ import annotations

import numpy as np

from ui.black_scholes import RISK_FREE, bs_price

DEFAULT_IV = 0.15


def _sign(action: str) -> int:
    return 1 if action.upper() == "BUY" else -1


def net_premium(legs: list[dict]) -> float:
    """Premium received (> 0: a net credit) or paid (< 0: a debit) for the basket at the legs' premiums."""
    return -sum(_sign(leg["action"]) * float(leg["premium"]) * int(leg["quantity"]) for leg in legs)


def net_premium_text(net: float) -> str:
    return f"net {'credit' if net >= 0 else 'debit'} ₹{abs(net):,.0f}"


def leg_value(leg: dict, spot: float, t_years: float = 0.0, r: float = RISK_FREE) -> float:
    """Value per unit of the leg's instrument at ``spot`` with ``t_years`` left (0 = expiry)."""
    if leg["kind"] == "FUT":
        return spot
    return bs_price(spot, float(leg["strike"]), t_years, float(leg.get("iv") or DEFAULT_IV), leg["kind"], r)


def payoff(legs: list[dict], spots, t_years: float = 0.0, r: float = RISK_FREE) -> np.ndarray:
    """P&L in rupees of the whole position for each spot: sum of sign * qty * (value - premium)."""
    spots = np.asarray(spots, dtype=float)
    out = np.zeros_like(spots)
    for leg in legs:
        qty, prem, sign = float(leg["quantity"]), float(leg.get("premium") or 0.0), _sign(leg["action"])
        values = np.array([leg_value(leg, s, t_years, r) for s in spots])
        out += sign * qty * (values - prem)
    return out


def spot_grid(spot: float, legs: list[dict], width: float = 0.1, points: int = 201) -> np.ndarray:
    """Spots around the current price, wide enough to include every strike."""
    strikes = [float(leg["strike"]) for leg in legs if leg["kind"] != "FUT" and leg.get("strike")]
    lo = min([spot * (1 - width)] + [k * 0.97 for k in strikes])
    hi = max([spot * (1 + width)] + [k * 1.03 for k in strikes])
    return np.linspace(lo, hi, points)


def breakevens(spots: np.ndarray, pnl: np.ndarray) -> list[float]:
    """Spots where the payoff crosses zero (linear interpolation)."""
    out = []
    for i in range(len(spots) - 1):
        a, b = pnl[i], pnl[i + 1]
        if a == 0:
            out.append(float(spots[i]))
        elif a * b < 0:
            out.append(float(spots[i] - a * (spots[i + 1] - spots[i]) / (b - a)))
    return out
