"""Black-Scholes price and implied volatility (pure functions, no dependencies beyond math)."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

RISK_FREE = 0.065  # annual, continuously compounded; close enough for Indian index options
IST = timedelta(hours=5, minutes=30)


def norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def bs_price(spot: float, strike: float, t_years: float, vol: float, kind: str, r: float = RISK_FREE) -> float:
    """European option price. ``kind`` is 'CE' (call) or 'PE' (put). At/after expiry: intrinsic value."""
    call = kind.upper() in ("CE", "C", "CALL")
    if t_years <= 0 or vol <= 0:
        return max(0.0, spot - strike) if call else max(0.0, strike - spot)
    sq = vol * math.sqrt(t_years)
    d1 = (math.log(spot / strike) + (r + 0.5 * vol * vol) * t_years) / sq
    d2 = d1 - sq
    disc = strike * math.exp(-r * t_years)
    if call:
        return spot * norm_cdf(d1) - disc * norm_cdf(d2)
    return disc * norm_cdf(-d2) - spot * norm_cdf(-d1)


def vega(spot: float, strike: float, t_years: float, vol: float, r: float = RISK_FREE) -> float:
    if t_years <= 0 or vol <= 0:
        return 0.0
    d1 = (math.log(spot / strike) + (r + 0.5 * vol * vol) * t_years) / (vol * math.sqrt(t_years))
    return spot * norm_pdf(d1) * math.sqrt(t_years)


def implied_vol(price: float, spot: float, strike: float, t_years: float, kind: str, r: float = RISK_FREE,
                lo: float = 1e-4, hi: float = 5.0, tol: float = 1e-6, max_iter: int = 100) -> float | None:
    """Volatility that reproduces ``price``; None when no volatility in [lo, hi] can (price below intrinsic,
    above the no-arbitrage bound, or missing inputs). Newton steps safeguarded by bisection."""
    if not (price and spot and strike) or price <= 0 or spot <= 0 or strike <= 0 or t_years <= 0:
        return None
    f_lo = bs_price(spot, strike, t_years, lo, kind, r) - price
    f_hi = bs_price(spot, strike, t_years, hi, kind, r) - price
    if f_lo > 0 or f_hi < 0:
        return None
    vol = 0.2
    for _ in range(max_iter):
        diff = bs_price(spot, strike, t_years, vol, kind, r) - price
        if abs(diff) < tol:
            return vol
        if diff > 0:
            hi = vol
        else:
            lo = vol
        v = vega(spot, strike, t_years, vol, r)
        nxt = vol - diff / v if v > 1e-12 else (lo + hi) / 2
        vol = nxt if lo < nxt < hi else (lo + hi) / 2
    return vol


def years_to_expiry(expiry: str, now_utc: datetime) -> float:
    """'30-DEC-25' expiring 15:30 IST -> years from ``now_utc`` (naive UTC); 0 when past or unparseable."""
    try:
        day = datetime.strptime(expiry.title(), "%d-%b-%y")
    except (ValueError, AttributeError):
        return 0.0
    expiry_utc = day.replace(hour=15, minute=30) - IST
    return max(0.0, (expiry_utc - now_utc).total_seconds() / (365.0 * 86400))


def greeks(spot: float, strike: float, t_years: float, vol: float, kind: str, r: float = RISK_FREE) -> dict:
    """Per unit: delta, gamma, theta (₹ per calendar day), vega (₹ per 1 % point of volatility)."""
    call = kind.upper() in ("CE", "C", "CALL")
    if t_years <= 0 or vol <= 0 or spot <= 0 or strike <= 0:
        itm = spot > strike if call else spot < strike
        return {"delta": (1.0 if call else -1.0) if itm else 0.0, "gamma": 0.0, "theta": 0.0, "vega": 0.0}
    sq = vol * math.sqrt(t_years)
    d1 = (math.log(spot / strike) + (r + 0.5 * vol * vol) * t_years) / sq
    d2 = d1 - sq
    disc = strike * math.exp(-r * t_years)
    decay = -spot * norm_pdf(d1) * vol / (2 * math.sqrt(t_years))
    theta = decay - r * disc * norm_cdf(d2) if call else decay + r * disc * norm_cdf(-d2)
    return {"delta": norm_cdf(d1) if call else norm_cdf(d1) - 1.0, "gamma": norm_pdf(d1) / (spot * sq),
            "theta": theta / 365.0, "vega": spot * norm_pdf(d1) * math.sqrt(t_years) / 100.0}
