"""Partial fills (a simulator option, /_sim/partial): part now, the rest later or never; cancel keeps the part."""

from __future__ import annotations

import time

import httpx
import pytest

from simulator.broker import Broker
from simulator.market import Market


def _broker():
    m = Market(seed=2)
    m.frozen = True
    b = Broker(m)
    a = b.add_account("u", capital=1e7)
    m.set_price(("NSE", "SBIN"), 1000)
    return m, b, a


def _order(b, a, **kw):
    p = dict(strategy="s", symbol="SBIN", exchange="NSE", action="BUY", quantity=100, pricetype="MARKET",
             product="MIS", price=0.0, trigger_price=0.0)
    p.update(kw)
    code, body = b.place(a, p)
    assert code == 200, body
    return a.orders[body["orderid"]]


def test_market_order_when_partial_rule_then_part_fills_and_rest_never():
    m, b, a = _broker()
    b.set_partial(("NSE", "SBIN"), dict(fill_ratio=0.5, rest_after_s=None))
    o = _order(b, a)
    row = o.book_row()
    assert (row["order_status"], row["filled_quantity"], row["pending_quantity"]) == ("open", 50, 50)
    assert row["average_price"] == pytest.approx(1000.05)  # the ask, for the filled part
    assert a.net_qty("SBIN", "NSE", "MIS") == 50 and [t.quantity for t in a.trades] == [50]
    m.set_price(("NSE", "SBIN"), 1001)
    b.check_all()
    assert o.filled_quantity == 50 and o.status == "open"  # never: it rests until cancelled
    code, _ = b.cancel(a, o.orderid)
    row = o.book_row()
    assert code == 200 and (row["order_status"], row["filled_quantity"], row["pending_quantity"]) == (
        "cancelled", 50, 0)
    assert a.net_qty("SBIN", "NSE", "MIS") == 50  # the filled part stays


def test_limit_order_when_rest_due_then_remainder_fills_and_average_covers_both_parts(monkeypatch):
    m, b, a = _broker()
    b.set_partial(("NSE", "SBIN"), dict(fill_qty=30, rest_after_s=5.0, count=1))
    o = _order(b, a, pricetype="LIMIT", price=990.0, action="SELL", quantity=100)
    assert o.status == "open" and o.filled_quantity == 30 and o.average_price == 1000
    m.set_price(("NSE", "SBIN"), 1020)
    b.check_all()
    assert o.filled_quantity == 30  # not due yet
    clock = time.monotonic() + 6
    monkeypatch.setattr("simulator.broker.time.monotonic", lambda: clock)
    assert b.rests_due()
    b.check_all()
    assert o.status == "complete" and o.filled_quantity == 100
    assert o.average_price == pytest.approx((30 * 1000 + 70 * 1020) / 100)
    assert a.net_qty("SBIN", "NSE", "MIS") == -100 and [t.quantity for t in a.trades] == [30, 70]
    assert _order(b, a, quantity=5).status == "complete"  # count=1: the next order fills whole


def test_partial_rule_when_invalid_then_refused():
    _, b, _ = _broker()
    for bad in (dict(), dict(fill_qty=1, fill_ratio=0.5), dict(fill_ratio=1.0), dict(fill_qty=0),
                dict(fill_qty=1, rest_after_s=-1), dict(fill_qty=1, count=0)):
        with pytest.raises(ValueError):
            b.set_partial(("NSE", "SBIN"), bad)


def test_partial_over_rest_when_rest_after_elapses_then_filled_and_clear_faults_ends_the_rule(fsim, key):
    fsim.set_price("SBIN", "NSE", 800)
    assert fsim.partial("SBIN", "NSE", fill_ratio=0.4, rest_after_s=0.3)["fill_ratio"] == 0.4
    body = {"apikey": key, "strategy": "T1", "symbol": "SBIN", "exchange": "NSE", "action": "BUY",
            "quantity": 10, "pricetype": "MARKET", "product": "MIS"}
    oid = fsim.api("placeorder", body).json()["orderid"]
    st = fsim.api("orderstatus", {"apikey": key, "strategy": "T1", "orderid": oid}).json()["data"]
    assert (st["order_status"], st["filled_quantity"], st["pending_quantity"]) == ("open", 4, 6)
    trades = fsim.api("tradebook", {"apikey": key}).json()["data"]
    assert [t["quantity"] for t in trades if t["orderid"] == oid] == [4]
    pos = fsim.api("positionbook", {"apikey": key}).json()["data"]
    assert [p["quantity"] for p in pos if p["symbol"] == "SBIN"] == [4]
    deadline = time.monotonic() + 5  # the frozen market's loop fills the remainder on time
    while time.monotonic() < deadline:
        row = next(o for o in fsim.api("orderbook", {"apikey": key}).json()["data"]["orders"] if o["orderid"] == oid)
        if row["order_status"] == "complete":
            break
        time.sleep(0.05)
    assert (row["order_status"], row["filled_quantity"]) == ("complete", 10)
    fsim.clear_faults()
    oid2 = fsim.api("placeorder", body).json()["orderid"]
    st = fsim.api("orderstatus", {"apikey": key, "strategy": "T1", "orderid": oid2}).json()["data"]
    assert (st["order_status"], st["filled_quantity"]) == ("complete", 10)


def test_partial_then_cancelorder_when_rest_never_then_cancelled_with_filled_part_kept(fsim, key):
    fsim.set_price("INFY", "NSE", 1500)
    fsim.partial("INFY", "NSE", fill_qty=3, rest_after_s=None)
    body = {"apikey": key, "strategy": "T1", "symbol": "INFY", "exchange": "NSE", "action": "SELL",
            "quantity": 10, "pricetype": "MARKET", "product": "MIS"}
    oid = fsim.api("placeorder", body).json()["orderid"]
    r = fsim.api("cancelorder", {"apikey": key, "strategy": "T1", "orderid": oid})
    assert r.status_code == 200 and r.json()["status"] == "success"
    row = next(o for o in fsim.api("orderbook", {"apikey": key}).json()["data"]["orders"] if o["orderid"] == oid)
    assert (row["order_status"], row["filled_quantity"], row["quantity"]) == ("cancelled", 3, 10)
    pos = fsim.api("positionbook", {"apikey": key}).json()["data"]
    assert [p["quantity"] for p in pos if p["symbol"] == "INFY"] == [-3]
    bad = httpx.post(f"{fsim.rest_url}/_sim/partial", json={"symbol": "INFY", "exchange": "NSE"})
    assert bad.status_code == 400 and "fill_qty" in bad.json()["message"]
    fsim.clear_faults()
