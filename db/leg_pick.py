"""Strike selection from the chain's latest prices (closest premium, closest delta) and a LIMIT entry's price.

Prices are the ones the service stores in ``latest_prices`` (db/prices.fresh_ltp: a valid price at most
PRICE_MAX_AGE old). The service follows an option's price while its chain is open on the Option Chain page or
while a leg holds it, so a strategy that picks by premium or delta needs that chain open (or recently open).
Delta is Black-Scholes (quant/black_scholes.py) at the volatility implied by the option's own price, with the
underlying's live price as spot: the same figures the option chain and the Risk Monitor show.
"""
from __future__ import annotations

import math

from datetime import timezone

from sqlalchemy import select

from db.clock import now_ist
from db.commands import CommandError
from db.models import Instrument, LatestPrice, utcnow
from db.prices import PRICE_MAX_AGE
from quant.black_scholes import greeks, implied_vol, years_to_expiry


def no_prices(underlying: str, expiry: str) -> CommandError:
    return CommandError(f"no live prices for {underlying} {expiry}: open its option chain or wait for the service")


def chain_ltps(s, chain: list[Instrument]) -> dict[str, float]:
    """symbol -> the fresh last price of each contract of ``chain`` that has one."""
    if not chain:
        return {}
    oldest = utcnow() - PRICE_MAX_AGE
    rows = s.execute(select(LatestPrice.symbol, LatestPrice.ltp).where(
        LatestPrice.exchange == chain[0].exchange, LatestPrice.symbol.in_([i.symbol for i in chain]),
        LatestPrice.ltp > 0, LatestPrice.tick_ts >= oldest)).all()
    return {sym: float(ltp) for sym, ltp in rows}


def by_premium(chain: list[Instrument], ltps: dict[str, float], target: float) -> Instrument | None:
    """The contract whose last price is closest to ``target`` rupees (the lower strike on a tie); None when no
    contract has a price."""
    priced = [i for i in chain if i.symbol in ltps]
    if not priced:
        return None
    return min(priced, key=lambda i: (abs(ltps[i.symbol] - target), i.strike))


def deltas(chain: list[Instrument], ltps: dict[str, float], spot: float, expiry: str) -> dict[str, float]:
    """symbol -> Black-Scholes delta at the volatility implied by its own price (contracts whose price implies
    no volatility, e.g. below intrinsic value, are left out)."""
    # the market's clock (db/clock.py), the one the relative expiries are resolved on
    t = years_to_expiry(expiry, now_ist().astimezone(timezone.utc).replace(tzinfo=None))
    out = {}
    for i in chain:
        ltp = ltps.get(i.symbol)
        iv = implied_vol(ltp, spot, i.strike, t, i.instrumenttype) if ltp else None
        if iv:
            out[i.symbol] = greeks(spot, i.strike, t, iv, i.instrumenttype)["delta"]
    return out


def by_delta(chain: list[Instrument], ltps: dict[str, float], spot: float, expiry: str,
             target: float) -> Instrument | None:
    """The contract whose |delta| is closest to ``target`` (0..1; a put's delta is negative); None when no
    contract has a price that gives a delta."""
    d = deltas(chain, ltps, spot, expiry)
    priced = [i for i in chain if i.symbol in d]
    if not priced:
        return None
    return min(priced, key=lambda i: (abs(abs(d[i.symbol]) - target), i.strike))


def limit_price(ltp: float, offset: float, pct: bool, tick: float | None) -> float:
    """LTP + offset (rupees, or % of the LTP), rounded to the contract's tick size; CommandError when that is not
    a positive price."""
    raw = ltp * (1 + offset / 100.0) if pct else ltp + offset
    tick = tick if tick and tick > 0 else 0.05
    price = round(round(raw / tick) * tick, 2)
    if not (math.isfinite(price) and price > 0):
        raise CommandError(f"LIMIT price {raw:.2f} (LTP {ltp:.2f} {'%+g%%' % offset if pct else '%+g' % offset})"
                           " is not a positive price")
    return price
