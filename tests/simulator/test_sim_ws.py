"""WebSocket protocol: auth, subscribe acks, market_data pushes for modes 1/2/3, errors."""

from __future__ import annotations

import time

import pytest
import websocket

from simulator.testing import SimProcess


def is_md(m):
    return m.get("type") == "market_data"


def test_auth_success_and_errors(sim, live_key, ws_factory):
    c = ws_factory(sim.ws_url)
    c.send({"action": "subscribe", "symbols": [{"symbol": "SBIN", "exchange": "NSE"}], "mode": 1})
    assert c.recv() == {"status": "error", "code": "NOT_AUTHENTICATED", "message": "You must authenticate first"}
    c.send({"type": "authenticate", "apikey": "bad"})
    assert c.recv() == {"status": "error", "code": "AUTHENTICATION_ERROR", "message": "Invalid API key"}
    a = c.auth(live_key)
    assert a["type"] == "auth" and a["status"] == "success" and a["message"] == "Authentication successful"
    assert a["broker"] == "simulator" and a["supported_features"] == {"ltp": True, "quote": True, "depth": True}
    c.send("not json")
    assert c.recv()["code"] == "INVALID_JSON"
    c.send({"action": "dance"})
    assert c.recv() == {"status": "error", "code": "INVALID_ACTION", "message": "Invalid action: dance"}
    c.send({"action": "subscribe", "symbols": [{"symbol": "SBIN", "exchange": "NSE"}], "mode": True})
    assert c.recv()["code"] == "INVALID_MODE"
    c.send({"action": "subscribe", "symbols": []})
    assert c.recv()["code"] == "INVALID_PARAMETERS"


def test_ping_without_auth(sim, ws_factory):
    c = ws_factory(sim.ws_url)
    c.send({"action": "ping", "timestamp": 123, "_pingId": "p1"})
    m = c.recv()
    assert m["type"] == "pong" and m["status"] == "success" and m["client_timestamp"] == 123
    assert m["_pingId"] == "p1" and isinstance(m["server_timestamp"], int)


@pytest.mark.parametrize("mode,label", [(1, "LTP"), ("quote", "Quote"), (3, "Depth")])
def test_subscribe_modes_and_ticks(sim, live_key, ws_factory, mode, label):
    c = ws_factory(sim.ws_url)
    c.auth(live_key)
    c.send({"action": "subscribe", "symbols": [{"symbol": "RELIANCE", "exchange": "NSE"},
                                               {"symbol": "NIFTY", "exchange": "NSE_INDEX"}],
            "mode": mode, "request_id": "r1"})
    ack = c.recv()
    assert ack == {"type": "subscribe", "status": "success", "subscriptions": [
        {"symbol": "RELIANCE", "exchange": "NSE", "status": "success", "mode": label, "depth": 5,
         "broker": "simulator"},
        {"symbol": "NIFTY", "exchange": "NSE_INDEX", "status": "success", "mode": label, "depth": 5,
         "broker": "simulator"}], "message": "Subscription processing complete", "broker": "simulator",
        "request_id": "r1"}
    num = {1: 1, "quote": 2, 3: 3}[mode]
    seen, ltps = set(), []
    t0 = time.time()
    while time.time() - t0 < 5 and (len(seen) < 2 or len(ltps) < 6):
        m = c.recv()
        assert is_md(m)
        assert set(m) == {"type", "symbol", "exchange", "mode", "broker", "data"} and m["mode"] == num
        seen.add((m["exchange"], m["symbol"]))
        d = m["data"]
        assert d["ltp"] > 0 and isinstance(d["timestamp"], int)
        if m["symbol"] == "RELIANCE":
            ltps.append(d["ltp"])
            if num >= 2:
                assert {"open", "high", "low", "close", "volume", "last_trade_quantity"} <= set(d)
            if num == 3:
                assert len(d["depth"]["buy"]) == 5 and len(d["depth"]["sell"]) == 5
                assert set(d["depth"]["buy"][0]) == {"price", "quantity", "orders"}
                assert d["depth"]["buy"][0]["price"] < d["depth"]["sell"][0]["price"]
    assert seen == {("NSE", "RELIANCE"), ("NSE_INDEX", "NIFTY")}
    assert len(set(ltps)) > 1  # random walk moves


def test_partial_subscribe_unsubscribe_and_all(sim, live_key, ws_factory):
    c = ws_factory(sim.ws_url)
    c.auth(live_key)
    c.send({"action": "subscribe", "symbols": [{"symbol": "SBIN", "exchange": "NSE"},
                                               {"symbol": "NOPE", "exchange": "NSE"}], "mode": "LTP"})
    ack = c.recv_until(lambda m: m.get("type") == "subscribe")
    assert ack["status"] == "partial" and ack["subscriptions"][1]["status"] == "error"
    c.send({"action": "unsubscribe", "symbols": [{"symbol": "SBIN", "exchange": "NSE", "mode": 1}]})
    un = c.recv_until(lambda m: m.get("type") == "unsubscribe")
    assert un["status"] == "success" and un["successful"][0]["symbol"] == "SBIN" and un["failed"] == []
    # after unsubscribe, no further ticks for SBIN
    c.ws.settimeout(0.6)
    with pytest.raises(websocket.WebSocketTimeoutException):
        while True:
            assert not is_md(c.recv())
    c.ws.settimeout(5)
    c.send({"action": "subscribe", "symbol": "INFY", "exchange": "NSE", "mode": 2})
    c.recv_until(lambda m: m.get("type") == "subscribe")
    c.send({"action": "unsubscribe_all"})
    un = c.recv_until(lambda m: m.get("type") == "unsubscribe")
    assert un["successful"] == [{"symbol": "INFY", "exchange": "NSE", "status": "success", "broker": "simulator"}]


def test_lower_mode_clients_get_their_own_mode(sim, new_key, ws_factory):
    k1, k2 = new_key(sim, "m1"), new_key(sim, "m3")
    a, b = ws_factory(sim.ws_url), ws_factory(sim.ws_url)
    a.auth(k1), b.auth(k2)
    a.send({"action": "subscribe", "symbols": [{"symbol": "TCS", "exchange": "NSE"}], "mode": 1})
    b.send({"action": "subscribe", "symbols": [{"symbol": "TCS", "exchange": "NSE"}], "mode": 3})
    ma = a.recv_until(is_md)
    mb = b.recv_until(is_md)
    assert ma["mode"] == 1 and "depth" not in ma["data"]
    assert mb["mode"] == 3 and "depth" in mb["data"]


def test_control_price_pushes_tick_and_options_reprice(fsim, key, ws_factory):
    c = ws_factory(fsim.ws_url)
    c.auth(key)
    exp = fsim.api("expiry", {"apikey": key, "symbol": "NIFTY", "exchange": "NFO",
                              "instrumenttype": "options"}).json()["data"][0].replace("-", "")
    opt = fsim.api("optionsymbol", {"apikey": key, "underlying": "NIFTY", "exchange": "NSE_INDEX",
                                    "expiry_date": exp, "offset": "ATM", "option_type": "CE"}).json()["symbol"]
    c.send({"action": "subscribe", "symbols": [{"symbol": opt, "exchange": "NFO"}], "mode": 1})
    c.recv_until(lambda m: m.get("type") == "subscribe")
    first = c.recv_until(is_md)["data"]["ltp"]  # initial snapshot
    spot = fsim.api("quotes", {"apikey": key, "symbol": "NIFTY", "exchange": "NSE_INDEX"}).json()["data"]["ltp"]
    fsim.set_price("NIFTY", "NSE_INDEX", spot + 400)
    m = c.recv_until(is_md)
    assert m["symbol"] == opt and m["data"]["ltp"] > first + 100
    fsim.set_price(opt, "NFO", 777)
    assert c.recv_until(is_md)["data"]["ltp"] == 777.0


def test_auth_timeout_closes_4401():
    with SimProcess(seed=2, args=["--ws-auth-timeout", "0.5", "--frozen"]) as s:
        ws = websocket.create_connection(s.ws_url, timeout=5)
        t0 = time.time()
        op, data = ws.recv_data(control_frame=True)
        assert op == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 4401 and data[2:] == b"auth timeout"
        assert time.time() - t0 < 3
        ws.close()


def test_order_updates_after_subscribe_orders(fsim, key, ws_factory):
    c = ws_factory(fsim.ws_url)
    c.auth(key)
    c.send({"action": "subscribe_orders", "request_id": "o1"})
    assert c.recv() == {"type": "subscribe_orders", "status": "success",
                        "message": "Subscribed to order updates", "request_id": "o1"}
    oid = fsim.api("placeorder", {"apikey": key, "strategy": "t", "symbol": "SBIN", "exchange": "NSE",
                                  "action": "BUY", "quantity": 2}).json()["orderid"]
    m = c.recv_until(lambda m: m.get("type") == "order_update")
    assert m["orderid"] == oid and m["order_status"] == "complete" and m["mode"] == "analyze"
    assert m["filled_quantity"] == 2 and m["pending_quantity"] == 0
