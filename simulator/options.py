"""Option helpers: offset resolution, option chain rows, greeks."""

from __future__ import annotations

import datetime as dt
import math
import re

from .instruments import (
    UNDERLYINGS,
    Instrument,
    fmt_expiry,
    option_symbol,
    parse_expiry,
)
from .market import RATE, Market, bs_price, norm_cdf, smile_vol, years_to
from .timeutil import IST

FO_OF = {"NSE_INDEX": "NFO", "NSE": "NFO", "NFO": "NFO", "BSE_INDEX": "BFO", "BSE": "BFO", "BFO": "BFO"}
UNDERLYING_RE = re.compile(r"^([A-Z]+)(\d{2}[A-Z]{3}\d{2})(?:FUT)?$")


class OptionError(Exception):
    def __init__(self, msg: str, code: int = 400):
        super().__init__(msg)
        self.code = code


def split_underlying(underlying: str, expiry_date: str | None) -> tuple[str, dt.date]:
    u = underlying.upper()
    m = UNDERLYING_RE.match(u)
    if m and m.group(1) in UNDERLYINGS:
        u, expiry_date = m.group(1), expiry_date or m.group(2)
    if u not in UNDERLYINGS:
        raise OptionError(f"Underlying {underlying} not found", 404)
    if not expiry_date:
        raise OptionError("Expiry date is required. Provide expiry_date in DDMMMYY format (e.g., 28OCT25)")
    exp = parse_expiry(expiry_date)
    if exp is None:
        raise OptionError(f"Invalid expiry date format: {expiry_date}")
    return u, exp


def spot(market: Market, name: str) -> float:
    return market.state((UNDERLYINGS[name]["exchange"], name)).ltp


def resolve(market: Market, underlying: str, exchange: str, expiry_date: str | None, offset: str,
            option_type: str) -> tuple[Instrument, float]:
    name, exp = split_underlying(underlying, expiry_date)
    fo = UNDERLYINGS[name]["fo"]
    if FO_OF.get(exchange) != fo:
        raise OptionError(f"Invalid exchange {exchange} for underlying {name}")
    strikes = market.master.strikes(name, exp)
    if not strikes:
        raise OptionError(f"No strikes found for {name} expiring {fmt_expiry(exp)} in {fo}", 404)
    ltp = spot(market, name)
    idx = min(range(len(strikes)), key=lambda i: (abs(strikes[i] - ltp), strikes[i]))
    off, otype = offset.upper(), option_type.upper()
    n = 0 if off == "ATM" else int(off[3:])
    itm = off.startswith("ITM")
    direction = (-1 if itm else 1) if otype == "CE" else (1 if itm else -1)
    j = idx + direction * n
    if not 0 <= j < len(strikes):
        raise OptionError(f"Strike offset {off} is out of the available strike range", 404)
    sym = option_symbol(name, exp, strikes[j], otype)
    return market.get(fo, sym), ltp


def greeks(market: Market, inst: Instrument, price: float, r: float = 0.0) -> dict:
    s = spot(market, inst.name)
    t = years_to(inst.expiry)
    vol = smile_vol(UNDERLYINGS[inst.name]["vol"], s, inst.strike)
    sq = vol * math.sqrt(t)
    d1 = (math.log(s / inst.strike) + (RATE + 0.5 * vol * vol) * t) / sq
    pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi)
    delta = norm_cdf(d1) if inst.itype == "CE" else norm_cdf(d1) - 1
    theta = (bs_price(s, inst.strike, max(t - 1 / 365, 1e-6), vol, inst.itype) -
             bs_price(s, inst.strike, t, vol, inst.itype))
    return {"implied_volatility": round(vol * 100, 2), "delta": round(delta, 4),
            "gamma": round(pdf / (s * sq), 6), "theta": round(theta, 4),
            "vega": round(s * pdf * math.sqrt(t) / 100, 4)}


def _leg(market: Market, inst: Instrument | None, label: str, with_greeks: bool):
    if inst is None:
        return None
    q = market.quote(inst.key)
    leg = {"symbol": inst.symbol, "label": label, "ltp": q["ltp"], "bid": q["bid"], "ask": q["ask"],
           "bid_qty": inst.lotsize * 10, "ask_qty": inst.lotsize * 10, "open": q["open"], "high": q["high"],
           "low": q["low"], "prev_close": q["prev_close"], "volume": q["volume"], "oi": q["oi"],
           "lotsize": inst.lotsize, "tick_size": inst.tick}
    if with_greeks:
        leg.update(greeks(market, inst, q["ltp"]))
    return leg


def chain(market: Market, underlying: str, exchange: str, expiry_date: str, strike_count: int | None,
          with_greeks: bool) -> dict:
    name, exp = split_underlying(underlying, expiry_date)
    spec = UNDERLYINGS[name]
    if FO_OF.get(exchange) != spec["fo"] and exchange != spec["exchange"]:
        raise OptionError(f"Invalid exchange {exchange} for underlying {name}")
    strikes = market.master.strikes(name, exp)
    if not strikes:
        raise OptionError(f"No strikes found for {name} expiring {fmt_expiry(exp)} in {spec['fo']}", 404)
    ltp = spot(market, name)
    atm_i = min(range(len(strikes)), key=lambda i: (abs(strikes[i] - ltp), strikes[i]))
    lo, hi = (0, len(strikes)) if not strike_count else (max(0, atm_i - strike_count),
                                                         min(len(strikes), atm_i + strike_count + 1))
    rows = []
    for i in range(lo, hi):
        k = strikes[i]
        ce_lbl = "ATM" if i == atm_i else (f"ITM{atm_i - i}" if i < atm_i else f"OTM{i - atm_i}")
        pe_lbl = "ATM" if i == atm_i else (f"OTM{atm_i - i}" if i < atm_i else f"ITM{i - atm_i}")
        ce = market.get(spec["fo"], option_symbol(name, exp, k, "CE"))
        pe = market.get(spec["fo"], option_symbol(name, exp, k, "PE"))
        rows.append({"strike": k, "ce": _leg(market, ce, ce_lbl, with_greeks),
                     "pe": _leg(market, pe, pe_lbl, with_greeks)})
    st = market.state((spec["exchange"], name))
    expiry_ts = int(dt.datetime(exp.year, exp.month, exp.day, 15, 30, tzinfo=IST).timestamp())
    return {"status": "success", "underlying": name, "underlying_symbol": name,
            "underlying_exchange": spec["exchange"], "underlying_ltp": ltp,
            "underlying_prev_close": st.prev_close, "expiry_date": fmt_expiry(exp), "expiry_ts": expiry_ts,
            "server_ts": int(dt.datetime.now(IST).timestamp()), "atm_strike": strikes[atm_i],
            "quotes_included": True, "greeks_included": bool(with_greeks), "forward_price": None,
            "chain": rows}
