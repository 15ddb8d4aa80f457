"""Option greeks (/optiongreeks) and a SPAN-like basket margin (/margin) over the simulator's market.

Greeks: Black-Scholes on the underlying's spot with the given interest rate (OpenAlgo's Black-76 on the spot as
forward is the same model at r = 0, its default), volatility implied from the option's last price. Theta is per
calendar day, vega and rho per 1 % point, like OpenAlgo's response.

Margin, per underlying, in the spirit of NSE's SPAN:
  scan risk   the worst loss of the basket over spot moves of -R..+R (7 points) at volatility -4/0/+4 points,
              and the extreme moves of +-2R counted at 35 % (NSE's scenarios; R = 6 % for indices, 10 % else),
              each leg re-priced by Black-Scholes at the smile volatility;
  SPAN        max(0, scan risk - net option value) + net premium (bought premium - sold premium): a long option
              needs its premium and nothing else, a short one its scan risk, and the bought wing of a spread
              caps the scan risk: the hedge benefit;
  exposure    2 % of the notional of every short option and every futures leg.
Cash equity: 20 % of the value for MIS, all of it for CNC. ``margin_benefit`` is what the basket saves against
the sum of its legs margined one by one.
"""
from __future__ import annotations

import math
from collections import defaultdict

from .instruments import UNDERLYINGS, Instrument
from .market import RATE, Market, bs_price, norm_cdf, smile_vol, years_to

SCAN = {"INDEX": 0.06, "EQ": 0.10}
VOL_SHIFT = 0.04
EXTREME_WEIGHT = 0.35
EXPOSURE = 0.02
MIS_MARGIN = 0.20
DAY = 1.0 / 365.0


def _d1(s: float, k: float, t: float, vol: float, r: float) -> float:
    return (math.log(s / k) + (r + 0.5 * vol * vol) * t) / (vol * math.sqrt(t))


def implied_vol(price: float, s: float, k: float, t: float, otype: str, r: float) -> float | None:
    """The volatility reproducing ``price`` (bisection on [0.1 %, 500 %]); None when none can (below intrinsic)."""
    lo, hi = 0.001, 5.0
    if not (bs_price(s, k, t, lo, otype, r) <= price <= bs_price(s, k, t, hi, otype, r)):
        return None
    for _ in range(100):
        mid = (lo + hi) / 2
        if bs_price(s, k, t, mid, otype, r) < price:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-7:
            break
    return (lo + hi) / 2


def bs_greeks(s: float, k: float, t: float, vol: float, otype: str, r: float) -> dict:
    d1 = _d1(s, k, t, vol, r)
    d2 = d1 - vol * math.sqrt(t)
    pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi)
    disc = math.exp(-r * t)
    call = otype == "CE"
    decay = -s * pdf * vol / (2 * math.sqrt(t))
    theta = decay - r * k * disc * norm_cdf(d2) if call else decay + r * k * disc * norm_cdf(-d2)
    rho = k * t * disc * (norm_cdf(d2) if call else -norm_cdf(-d2))
    return {"delta": round(norm_cdf(d1) if call else norm_cdf(d1) - 1, 4),
            "gamma": round(pdf / (s * vol * math.sqrt(t)), 6), "theta": round(theta * DAY, 4),
            "vega": round(s * pdf * math.sqrt(t) / 100, 4), "rho": round(rho / 100, 6)}


def option_greeks(market: Market, inst: Instrument, rate_pct: float, forward: float | None) -> dict:
    """The /optiongreeks body for an option instrument."""
    spec = UNDERLYINGS[inst.name]
    s = forward or market.state((spec["exchange"], inst.name)).ltp
    price = market.state(inst.key).ltp
    t = years_to(inst.expiry)
    r = rate_pct / 100.0
    vol = implied_vol(price, s, inst.strike, t, inst.itype, r) or smile_vol(spec["vol"], s, inst.strike)
    return {"days_to_expiry": round(t * 365.0, 4), "exchange": inst.exchange,
            "expiry_date": inst.expiry.strftime("%d-%b-%Y"), "greeks": bs_greeks(s, inst.strike, t, vol,
                                                                                  inst.itype, r),
            "implied_volatility": round(vol * 100, 2), "interest_rate": rate_pct, "option_price": price,
            "option_type": inst.itype, "spot_price": s, "status": "success", "strike": float(inst.strike),
            "symbol": inst.symbol, "underlying": inst.name}


# ---- margin ----------------------------------------------------------------------------------------------------
def _value(market: Market, inst: Instrument, spot: float, vol_shift: float) -> float:
    """Model value of one unit at ``spot`` with the smile shifted by ``vol_shift``."""
    if inst.itype == "FUT":
        return spot * math.exp(RATE * years_to(inst.expiry))
    vol = max(0.01, smile_vol(UNDERLYINGS[inst.name]["vol"], spot, inst.strike) + vol_shift)
    return bs_price(spot, inst.strike, years_to(inst.expiry), vol, inst.itype)


def _scan_risk(market: Market, legs: list[tuple[Instrument, int]], spot: float, scan: float) -> float:
    now = {id(i): _value(market, i, spot, 0.0) for i, _ in legs}
    worst = 0.0
    for frac in [scan * n / 3 for n in range(-3, 4)] + [2 * scan, -2 * scan]:
        weight = EXTREME_WEIGHT if abs(frac) > scan + 1e-12 else 1.0
        for dv in ((0.0,) if weight < 1 else (-VOL_SHIFT, 0.0, VOL_SHIFT)):
            pnl = sum(q * (_value(market, i, spot * (1 + frac), dv) - now[id(i)]) for i, q in legs)
            worst = max(worst, -pnl * weight)
    return worst


def _derivative_margin(market: Market, legs: list[tuple[Instrument, int, float]]) -> tuple[float, float]:
    """(span, exposure) of the derivative legs of one underlying: (instrument, signed qty, price)."""
    spec = UNDERLYINGS[legs[0][0].name]
    spot = market.state((spec["exchange"], legs[0][0].name)).ltp
    scan = SCAN["INDEX" if spec["exchange"].endswith("_INDEX") else "EQ"]
    signed = [(i, q) for i, q, _ in legs]
    risk = _scan_risk(market, signed, spot, scan)
    nov = sum(q * _value(market, i, spot, 0.0) for i, q in signed if i.is_option)
    premium = sum(q * px for i, q, px in legs if i.is_option)
    span = max(0.0, max(0.0, risk - nov) + premium)
    exposure = sum(EXPOSURE * abs(q) * spot for i, q, _ in legs if i.itype == "FUT" or (i.is_option and q < 0))
    return span, exposure


def basket_margin(market: Market, positions: list[tuple[Instrument, str, int, str, float]]) -> dict:
    """positions: (instrument, action, quantity, product, price used: the LIMIT price or the LTP)."""
    groups: dict[str, list] = defaultdict(list)
    cash = 0.0
    for inst, action, qty, product, px in positions:
        sign = 1 if action == "BUY" else -1
        if inst.itype in ("FUT", "CE", "PE"):
            groups[inst.name].append((inst, sign * qty, px))
        else:
            cash += qty * px * (MIS_MARGIN if product == "MIS" else 1.0)
    span = exposure = 0.0
    for legs in groups.values():
        s, e = _derivative_margin(market, legs)
        span, exposure = span + s, exposure + e
    return {"span_margin": round(span, 2), "exposure_margin": round(exposure + cash, 2),
            "total_margin_required": round(span + exposure + cash, 2)}


def margin_with_benefit(market: Market, positions: list) -> dict:
    """basket_margin plus ``margin_benefit``: the sum of the legs margined alone minus the basket's."""
    out = basket_margin(market, positions)
    if len(positions) > 1:
        alone = sum(basket_margin(market, [p])["total_margin_required"] for p in positions)
        out["margin_benefit"] = round(max(0.0, alone - out["total_margin_required"]), 2)
    else:
        out["margin_benefit"] = 0.0
    return out

