"""Order and account endpoints."""

from __future__ import annotations

import asyncio

from . import accountviews as av
from . import schema as S
from .broker import AN
from .rest_registry import endpoint


def _acct_name(acct):
    return acct.name


async def _maybe_timeout(sim, name, acct):
    f = sim.faults.match("timeout_after_accept", name, acct.apikey, acct.name)
    if f:
        await asyncio.sleep(float(f.get("delay_s", 30)))


@endpoint("placeorder", S.ORDER, "A")
async def placeorder(sim, acct, d):
    code, body = sim.broker.place(acct, d)
    if code == 200:
        await _maybe_timeout(sim, "placeorder", acct)
    return code, body


@endpoint("placesmartorder", S.SMART, "A")
async def placesmartorder(sim, acct, d):
    code, body = av.smart_order(sim.broker, acct, d)
    if code == 200 and "orderid" in body:
        await _maybe_timeout(sim, "placesmartorder", acct)
    return code, body


@endpoint("basketorder", S.BASKET, "A")
def basketorder(sim, acct, d):
    items = [o for o in d["orders"] if o["action"] == "BUY"] + [o for o in d["orders"] if o["action"] == "SELL"]
    results = []
    for i, o in enumerate(items):
        o = dict(o, strategy=d["strategy"])
        code, body = sim.broker.place(acct, o)
        row = {"symbol": o["symbol"], "exchange": o["exchange"], "batch_order": True,
               "is_last_order": i == len(items) - 1}
        if code == 200:
            row.update(product=o["product"], status="success", orderid=body["orderid"])
        else:
            row.update(status="error", message=body["message"])
        results.append(row)
    return 200, {"status": "success", "results": results, **AN}


@endpoint("splitorder", S.SPLIT, "A")
def splitorder(sim, acct, d):
    qty, size = d["quantity"], d["splitsize"]
    sizes = [size] * (qty // size) + ([qty % size] if qty % size else [])
    if len(sizes) > 100:
        return 400, {"status": "error", "message": "Total number of orders would exceed maximum limit of 100", **AN}
    results = []
    for n, q in enumerate(sizes, 1):
        code, body = sim.broker.place(acct, dict(d, quantity=q))
        row = {"order_num": n, "quantity": q, "status": "success" if code == 200 else "error"}
        row.update({"orderid": body["orderid"]} if code == 200 else {"message": body["message"]})
        results.append(row)
    return 200, {"status": "success", "split_size": size, "total_quantity": qty, "results": results, **AN}


@endpoint("modifyorder", S.MODIFY, "A")
def modifyorder(sim, acct, d):
    return sim.broker.modify(acct, d)


@endpoint("cancelorder", S.ORDERID, "A")
def cancelorder(sim, acct, d):
    return sim.broker.cancel(acct, d["orderid"])


@endpoint("cancelallorder", S.STRATEGY_ONLY, "A")
def cancelallorder(sim, acct, d):
    return 200, av.cancel_all(sim.broker, acct)


@endpoint("closeposition", S.STRATEGY_ONLY, "A")
def closeposition(sim, acct, d):
    return 200, av.close_all(sim.broker, acct, d["strategy"])


@endpoint("orderstatus", S.ORDERID, "A")
def orderstatus(sim, acct, d):
    return av.orderstatus(acct, d["orderid"])


@endpoint("openposition", S.OPENPOS, "A")
def openposition(sim, acct, d):
    return 200, av.openposition(acct, d)


@endpoint("orderbook", S.APIKEY_ONLY, "B")
def orderbook(sim, acct, d):
    return 200, av.orderbook_json(acct)


@endpoint("tradebook", S.APIKEY_ONLY, "B")
def tradebook(sim, acct, d):
    return 200, av.tradebook_json(acct)


@endpoint("positionbook", S.APIKEY_ONLY, "B")
def positionbook(sim, acct, d):
    return 200, av.positionbook(sim.broker, acct)


@endpoint("holdings", S.APIKEY_ONLY, "B")
def holdings(sim, acct, d):
    return 200, av.holdings(sim.broker, acct)


@endpoint("funds", S.APIKEY_ONLY, "B")
def funds(sim, acct, d):
    return 200, av.funds(sim.broker, acct)


@endpoint("ping", S.APIKEY_ONLY, "B")
def ping(sim, acct, d):
    return 200, {"data": {"broker": "simulator", "message": "pong"}, "status": "success"}


@endpoint("analyzer", S.APIKEY_ONLY, "A")
def analyzer(sim, acct, d):
    return 200, {"data": {"analyze_mode": True, "mode": "analyze", "total_logs": 0}, "status": "success"}


@endpoint("analyzer/toggle", S.ANALYZER_TOGGLE, "A")
def analyzer_toggle(sim, acct, d):
    # The simulator is always a sandbox; the toggle is acknowledged but stays in analyze mode.
    return 200, {"data": {"analyze_mode": True, "message": "Analyzer mode switched to analyze",
                          "mode": "analyze", "total_logs": 0}, "status": "success"}
