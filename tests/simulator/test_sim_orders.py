"""Order placement, fills, positions, funds and rejections through HTTP (frozen market)."""

from __future__ import annotations

import re
import time

import pytest

IST_TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def place(s, key, **kw):
    body = {"apikey": key, "strategy": "T1", "symbol": "SBIN", "exchange": "NSE", "action": "BUY",
            "quantity": 10, "pricetype": "MARKET", "product": "MIS"}
    body.update(kw)
    return s.api("placeorder", body)


def status(s, key, oid):
    return s.api("orderstatus", {"apikey": key, "strategy": "T1", "orderid": oid}).json()


def view(s, key, ep):
    return s.api(ep, {"apikey": key}).json()


def test_market_buy_fills_at_ask_and_updates_books(fsim, key):
    fsim.set_price("SBIN", "NSE", 800)
    r = place(fsim, key, quantity="10")
    j = r.json()
    assert r.status_code == 200 and j["status"] == "success" and j["mode"] == "analyze"
    sim_day = time.gmtime(time.time() + 19800 + (fsim.clock_offset_s or 0))  # the date on the sim's IST clock
    assert re.fullmatch(r"\d{14}", j["orderid"]) and j["orderid"][:6] == time.strftime("%y%m%d", sim_day)
    st = status(fsim, key, j["orderid"])["data"]
    assert st["order_status"] == "complete" and st["average_price"] == 800.05 and st["price_type"] == "MARKET"
    assert st["price"] == 800.0 and IST_TS.match(st["timestamp"])
    ob = view(fsim, key, "orderbook")["data"]
    assert ob["statistics"]["total_completed_orders"] == 1 and ob["orders"][0]["pricetype"] == "MARKET"
    tb = view(fsim, key, "tradebook")["data"]
    assert tb[0]["average_price"] == 800.05 and tb[0]["trade_value"] == 8000.5
    assert tb[0]["tradeid"].startswith("TRADE-")
    pos = view(fsim, key, "positionbook")["data"]
    assert [(p["symbol"], p["quantity"], p["average_price"]) for p in pos] == [("SBIN", 10, 800.05)]
    f = view(fsim, key, "funds")["data"]
    assert f["utiliseddebits"] == pytest.approx(10 * 800.05 / 5, abs=0.01)
    assert f["availablecash"] == pytest.approx(10_000_000 - 10 * 800.05 / 5, abs=0.01)
    fsim.set_price("SBIN", "NSE", 810)
    pb = view(fsim, key, "positionbook")
    assert pb["data"][0]["unrealized_pnl"] == pytest.approx(99.5) and pb["total_unrealized_pnl"] == pytest.approx(99.5)
    place(fsim, key, action="SELL", quantity=10)  # sells at bid 809.95
    pb = view(fsim, key, "positionbook")
    assert pb["data"][0]["quantity"] == 0 and pb["total_today_realized_pnl"] == pytest.approx(99.0)
    f = view(fsim, key, "funds")["data"]
    assert f["utiliseddebits"] == 0 and f["m2mrealized"] == pytest.approx(99.0)
    assert f["availablecash"] == pytest.approx(10_000_099.0)
    op = fsim.api("openposition", {"apikey": key, "strategy": "T1", "symbol": "SBIN", "exchange": "NSE",
                                   "product": "MIS"}).json()
    assert op == {"mode": "analyze", "quantity": 0, "status": "success"}


def test_limit_orders_resting_and_marketable(fsim, key):
    fsim.set_price("INFY", "NSE", 1500)
    oid = place(fsim, key, symbol="INFY", pricetype="LIMIT", price=1490, quantity=2).json()["orderid"]
    assert status(fsim, key, oid)["data"]["order_status"] == "open"
    f = view(fsim, key, "funds")["data"]
    assert f["utiliseddebits"] == pytest.approx(2 * 1490 / 5)
    fsim.set_price("INFY", "NSE", 1485)
    st = status(fsim, key, oid)["data"]
    assert st["order_status"] == "complete" and st["average_price"] == 1490.0
    oid2 = place(fsim, key, symbol="INFY", pricetype="LIMIT", price=1600, quantity=1).json()["orderid"]
    assert status(fsim, key, oid2)["data"]["average_price"] == 1485.0  # price improvement at LTP


def test_sl_and_slm_trigger_logic(fsim, key):
    fsim.set_price("TCS", "NSE", 3000)
    place(fsim, key, symbol="TCS", quantity=5)
    slm = place(fsim, key, symbol="TCS", action="SELL", quantity=5, pricetype="SL-M", trigger_price=2950).json()
    sl = place(fsim, key, symbol="TCS", action="SELL", quantity=5, pricetype="SL", trigger_price=2940,
               price=2935).json()
    assert status(fsim, key, slm["orderid"])["data"]["order_status"] == "trigger pending"
    fsim.set_price("TCS", "NSE", 2960)
    assert status(fsim, key, slm["orderid"])["data"]["order_status"] == "trigger pending"
    fsim.set_price("TCS", "NSE", 2945)
    s1 = status(fsim, key, slm["orderid"])["data"]
    assert s1["order_status"] == "complete" and s1["average_price"] == 2945.0
    assert status(fsim, key, sl["orderid"])["data"]["order_status"] == "trigger pending"
    fsim.set_price("TCS", "NSE", 2930)  # trigger hit but limit 2935 not satisfiable (SELL needs ltp >= 2935)
    assert status(fsim, key, sl["orderid"])["data"]["order_status"] == "open"
    fsim.set_price("TCS", "NSE", 2936)
    s2 = status(fsim, key, sl["orderid"])["data"]
    assert s2["order_status"] == "complete" and s2["average_price"] == 2936.0


def test_modify_and_cancel(fsim, key):
    fsim.set_price("HDFCBANK", "NSE", 1000)
    oid = place(fsim, key, symbol="HDFCBANK", pricetype="LIMIT", price=900, quantity=3).json()["orderid"]
    m = fsim.api("modifyorder", {"apikey": key, "strategy": "T1", "exchange": "NSE", "symbol": "HDFCBANK",
                                 "orderid": oid, "action": "BUY", "product": "MIS", "pricetype": "LIMIT",
                                 "price": 950, "quantity": 4, "disclosed_quantity": 0, "trigger_price": 0})
    assert m.json() == {"message": "Order modified successfully", "mode": "analyze", "orderid": oid,
                        "status": "success"}
    st = status(fsim, key, oid)["data"]
    assert st["price"] == 950 and st["quantity"] == 4
    c = fsim.api("cancelorder", {"apikey": key, "strategy": "T1", "orderid": oid})
    assert c.json() == {"message": "Order cancelled successfully", "mode": "analyze", "orderid": oid,
                        "status": "success"}
    assert status(fsim, key, oid)["data"]["order_status"] == "cancelled"
    again = fsim.api("cancelorder", {"apikey": key, "strategy": "T1", "orderid": oid})
    assert again.status_code == 400 and again.json()["message"] == "Cancel order in cancelled status".replace(
        "Cancel", "Cannot cancel")
    nf = fsim.api("cancelorder", {"apikey": key, "strategy": "T1", "orderid": "123"})
    assert nf.status_code == 404 and nf.json()["message"] == "Order 123 not found"
    assert fsim.api("orderstatus", {"apikey": key, "strategy": "T1", "orderid": "123"}).status_code == 404
    assert view(fsim, key, "funds")["data"]["utiliseddebits"] == 0


@pytest.mark.parametrize("kw,msg", [
    (dict(product="NRML"), "NRML product not allowed for NSE equity segment. Use CNC for delivery or MIS for intraday."),
    (dict(pricetype="LIMIT"), "LIMIT orders require price"),
    (dict(pricetype="SL", price=10), "SL orders require trigger_price"),
    (dict(pricetype="SL-M"), "SL-M orders require trigger_price"),
    (dict(symbol="NOPE"), "Symbol NOPE not found on NSE"),
])
def test_business_rejections(fsim, key, kw, msg):
    r = place(fsim, key, **kw)
    assert r.status_code == 400 and r.json() == {"message": msg, "mode": "analyze", "status": "error"}


def test_fno_rules_lot_size_and_cnc(fsim, key):
    exp = fsim.api("expiry", {"apikey": key, "symbol": "NIFTY", "exchange": "NFO",
                              "instrumenttype": "options"}).json()["data"][0].replace("-", "")
    sym = fsim.api("optionsymbol", {"apikey": key, "underlying": "NIFTY", "exchange": "NSE_INDEX",
                                    "expiry_date": exp, "offset": "OTM2", "option_type": "CE"}).json()["symbol"]
    r = place(fsim, key, symbol=sym, exchange="NFO", quantity=50, product="NRML")
    assert r.status_code == 400 and r.json()["message"] == "Quantity must be in multiples of lot size 65"
    r = place(fsim, key, symbol=sym, exchange="NFO", quantity=65, product="CNC")
    assert r.json()["message"] == ("CNC product not allowed for NFO derivatives segment. "
                                   "Use NRML for carryforward or MIS for intraday.")
    ok = place(fsim, key, symbol=sym, exchange="NFO", quantity=130, product="NRML")
    assert ok.status_code == 200
    ltp = fsim.api("quotes", {"apikey": key, "symbol": sym, "exchange": "NFO"}).json()["data"]["ltp"]
    f = view(fsim, key, "funds")["data"]
    assert f["utiliseddebits"] == pytest.approx(130 * (ltp + 0.05), abs=0.05)  # full premium


def test_cnc_sell_without_holdings_is_stored_rejected(fsim, key):
    r = place(fsim, key, action="SELL", product="CNC", quantity=1)
    j = r.json()
    assert r.status_code == 400 and j["message"].startswith("Cannot sell SBIN in CNC. No positions or holdings")
    assert re.fullmatch(r"\d{14}", j["orderid"])
    assert status(fsim, key, j["orderid"])["data"]["order_status"] == "rejected"


def test_insufficient_funds(fsim, new_key):
    k = new_key(fsim, "poor", capital=1000)
    fsim.set_price("RELIANCE", "NSE", 1500)
    r = place(fsim, k, symbol="RELIANCE", quantity=10, product="CNC")
    assert r.status_code == 400
    assert r.json()["message"] == "Insufficient funds. Required: ₹15000.00, Available: ₹1000.00, Shortage: ₹14000.00"
    assert place(fsim, k, symbol="RELIANCE", quantity=3, product="MIS").status_code == 200  # 3*1500/5 = 900


def test_smart_split_basket_close_cancelall(fsim, key):
    fsim.set_price("SBIN", "NSE", 700)
    sm = lambda ps, q=0: fsim.api("placesmartorder", {"apikey": key, "strategy": "T1", "symbol": "SBIN",
                                                      "exchange": "NSE", "action": "BUY", "quantity": q,
                                                      "position_size": ps, "product": "MIS"}).json()
    assert sm(0)["message"] == "No OpenPosition Found. Not placing Exit order."
    assert "orderid" in sm(20, 20)
    assert sm(20, 20)["message"] == "Positions Already Matched. No Action needed."
    assert "orderid" in sm(-5)
    op = {"apikey": key, "strategy": "T1", "symbol": "SBIN", "exchange": "NSE", "product": "MIS"}
    assert fsim.api("openposition", op).json()["quantity"] == -5
    sp = fsim.api("splitorder", {"apikey": key, "strategy": "T1", "symbol": "SBIN", "exchange": "NSE",
                                 "action": "BUY", "quantity": 25, "splitsize": 10}).json()
    assert sp["status"] == "success" and [x["quantity"] for x in sp["results"]] == [10, 10, 5]
    assert fsim.api("openposition", op).json()["quantity"] == 20
    bk = fsim.api("basketorder", {"apikey": key, "strategy": "T1", "orders": [
        {"symbol": "SBIN", "exchange": "NSE", "action": "SELL", "quantity": 5},
        {"symbol": "NOPE", "exchange": "NSE", "action": "BUY", "quantity": 1},
        {"symbol": "INFY", "exchange": "NSE", "action": "BUY", "quantity": 1}]}).json()
    assert bk["status"] == "success" and [x["symbol"] for x in bk["results"]] == ["NOPE", "INFY", "SBIN"]
    assert [x["status"] for x in bk["results"]] == ["error", "success", "success"]
    place(fsim, key, pricetype="LIMIT", price=600, quantity=1)
    place(fsim, key, action="SELL", pricetype="SL-M", trigger_price=650, quantity=1)
    ca = fsim.api("cancelallorder", {"apikey": key, "strategy": "T1"}).json()
    assert ca["message"] == "Canceled 1 orders. Failed to cancel 0 orders." and len(ca["canceled_orders"]) == 1
    cp = fsim.api("closeposition", {"apikey": key, "strategy": "T1"}).json()
    assert cp["status"] == "success" and cp["closed_positions"] == 2
    assert all(p["quantity"] == 0 for p in view(fsim, key, "positionbook")["data"])
    assert fsim.api("closeposition", {"apikey": key, "strategy": "T1"}).json()["message"] == "No open positions to close"


def test_optionsorder(fsim, key):
    exp = fsim.api("expiry", {"apikey": key, "symbol": "NIFTY", "exchange": "NFO",
                              "instrumenttype": "options"}).json()["data"][1].replace("-", "")
    r = fsim.api("optionsorder", {"apikey": key, "strategy": "T1", "underlying": "NIFTY", "exchange": "NSE_INDEX",
                                  "expiry_date": exp, "offset": "ATM", "option_type": "ce", "action": "BUY",
                                  "quantity": 65, "product": "NRML"}).json()
    assert r["status"] == "success" and r["exchange"] == "NFO" and r["symbol"].endswith("CE")
    assert r["symbol"].startswith(f"NIFTY{exp}") and r["mode"] == "analyze"


def test_sim_order_log(fsim, new_key):
    k = new_key(fsim, "logged")
    place(fsim, k, strategy="tagX", quantity=1)
    place(fsim, k, strategy="tagX", symbol="NOPE", quantity=1)
    name = [n for n in fsim.accounts() if n.startswith("logged")][-1]
    rows = [o for o in fsim.orders() if o["account"] == name]
    assert [(o["order_status"], o["strategy"]) for o in rows] == [("complete", "tagX"), ("rejected", "tagX")]
    assert rows[1]["rejection_reason"] == "Symbol NOPE not found on NSE"
    for field in ("orderid", "symbol", "exchange", "action", "quantity", "pricetype", "product", "price",
                  "timestamp"):
        assert field in rows[0]
