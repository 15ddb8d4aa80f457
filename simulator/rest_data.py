"""Market-data, symbol and options endpoints."""

from __future__ import annotations

import datetime as dt

from . import history as H
from . import schema as S
from .broker import AN
from .instruments import UNDERLYINGS, fmt_expiry_dash
from .options import OptionError, chain, resolve
from .rest_registry import endpoint


def _not_found(symbol: str, exchange: str) -> str:
    return (f"Symbol '{symbol}' not found for exchange '{exchange}'. Please verify the symbol name "
            "and ensure master contracts are downloaded.")


def _inst(sim, d):
    return sim.market.get(d["exchange"], d["symbol"])


@endpoint("quotes", S.QUOTE, "B")
def quotes(sim, acct, d):
    inst = _inst(sim, d)
    if inst is None:
        return 400, {"message": _not_found(d["symbol"], d["exchange"]), "status": "error"}
    return 200, {"data": sim.market.quote(inst.key, sim.market.take_zero(inst.key)), "status": "success"}


@endpoint("multiquotes", S.MULTI, "B")
def multiquotes(sim, acct, d):
    results, ok = [], 0
    for item in d["symbols"]:
        inst = _inst(sim, item)
        row = {"symbol": item["symbol"], "exchange": item["exchange"]}
        if inst is None:
            row["error"] = _not_found(item["symbol"], item["exchange"])
        else:
            ok += 1
            row["data"] = sim.market.quote(inst.key, sim.market.take_zero(inst.key))
        results.append(row)
    if not ok:
        return 400, {"message": "No valid symbols found", "results": results, "status": "error"}
    return 200, {"results": results, "status": "success"}


@endpoint("depth", S.QUOTE, "B")
def depth(sim, acct, d):
    inst = _inst(sim, d)
    if inst is None:
        return 400, {"message": _not_found(d["symbol"], d["exchange"]), "status": "error"}
    return 200, {"data": sim.market.depth(inst.key, sim.market.take_zero(inst.key)), "status": "success"}


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


@endpoint("history", S.HISTORY, "B")
def history(sim, acct, d):
    inst = _inst(sim, d)
    if inst is None:
        return 400, {"message": _not_found(d["symbol"], d["exchange"]), "status": "error"}
    if d["interval"] not in H.SUPPORTED:
        return 400, {"message": f"Interval '{d['interval']}' is not supported by this broker. "
                                f"Supported: {', '.join(H.SUPPORTED)}", "status": "error"}
    start, end = _date(d["start_date"]), _date(d["end_date"])
    if start is None or end is None:
        return 400, {"message": "Invalid date format. Use YYYY-MM-DD", "status": "error"}
    if end < start:
        return 400, {"message": "end_date must be on or after start_date", "status": "error"}
    ref = sim.market.state(inst.key).prev_close
    data = H.bars(sim.market.seed, inst.symbol, inst.exchange, d["interval"], start, end, ref,
                  inst.tick, inst.lotsize, inst.itype in ("FUT", "CE", "PE"))
    return 200, {"data": data, "status": "success"}


@endpoint("intervals", S.APIKEY_ONLY, "B")
def intervals(sim, acct, d):
    return 200, {"data": H.INTERVALS_VIEW, "status": "success"}


@endpoint("symbol", S.QUOTE, "B")
def symbol(sim, acct, d):
    inst = _inst(sim, d)
    if inst is None:
        return 404, {"message": f"Symbol {d['symbol']} not found in exchange {d['exchange']}", "status": "error"}
    return 200, {"data": inst.as_dict(), "status": "success"}


@endpoint("search", S.SEARCH, "B")
def search(sim, acct, d):
    found = sim.market.master.search(d["query"], d.get("exchange"))
    if not found:
        return 200, {"data": [], "message": "No matching symbols found", "status": "success"}
    return 200, {"data": [i.as_dict(with_id=False) for i in found],
                 "message": f"Found {len(found)} matching symbols", "status": "success"}


@endpoint("expiry", S.EXPIRY, "B")
def expiry(sim, acct, d):
    name, kind = d["symbol"].upper(), d["instrumenttype"]
    spec = UNDERLYINGS.get(name)
    dates = sim.market.master.expiries.get((name, "FUT" if kind == "futures" else "OPT"), [])
    if not spec or spec["fo"] != d["exchange"] or not dates:
        return 404, {"message": f"No expiry dates found for {d['symbol']} {kind} in {d['exchange']}",
                     "status": "error"}
    return 200, {"data": [fmt_expiry_dash(x) for x in dates],
                 "message": f"Found {len(dates)} expiry dates for {name} {kind} in {d['exchange']}",
                 "status": "success"}


@endpoint("optionsymbol", S.OPTIONSYMBOL, "C", sort_keys=False)
def optionsymbol(sim, acct, d):
    try:
        inst, ltp = resolve(sim.market, d["underlying"], d["exchange"], d.get("expiry_date"),
                            d["offset"], d["option_type"])
    except OptionError as e:
        return e.code, {"status": "error", "message": str(e)}
    return 200, {"status": "success", "symbol": inst.symbol, "exchange": inst.exchange,
                 "lotsize": inst.lotsize, "tick_size": inst.tick, "freeze_qty": inst.freeze,
                 "underlying_ltp": ltp}


@endpoint("optionchain", S.OPTIONCHAIN, "C", sort_keys=False)
def optionchain(sim, acct, d):
    try:
        return 200, chain(sim.market, d["underlying"], d["exchange"], d["expiry_date"],
                          d.get("strike_count"), d.get("with_greeks"))
    except OptionError as e:
        return e.code, {"status": "error", "message": str(e)}


@endpoint("optionsorder", S.OPTIONSORDER, "C")
def optionsorder(sim, acct, d):
    try:
        inst, ltp = resolve(sim.market, d["underlying"], d["exchange"], d.get("expiry_date"),
                            d["offset"], d["option_type"])
    except OptionError as e:
        return e.code, {"status": "error", "message": str(e), **AN}
    order = dict(d, symbol=inst.symbol, exchange=inst.exchange)
    code, body = sim.broker.place(acct, order)
    if code != 200:
        return code, body
    return 200, {"exchange": inst.exchange, "offset": d["offset"].upper(),
                 "option_type": d["option_type"].upper(), "orderid": body["orderid"], "status": "success",
                 "symbol": inst.symbol, "underlying": d["underlying"], "underlying_ltp": ltp, **AN}
