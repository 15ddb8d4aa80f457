"""Control endpoints, fault injection and rate limits."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time

import httpx
import pytest
import websocket

from simulator.testing import SimProcess


def funds(s, key, **kw):
    return s.api("funds", {"apikey": key}, **kw)


def test_accounts_listing_never_shows_keys(fsim, key):
    r = httpx.get(f"{fsim.rest_url}/_sim/accounts").json()
    assert r["status"] == "success" and all(isinstance(n, str) for n in r["accounts"])
    assert key not in json.dumps(r)
    dup = httpx.post(f"{fsim.rest_url}/_sim/accounts", json={"name": r["accounts"][0]})
    assert dup.status_code == 409
    assert len(key) == 64 and int(key, 16) >= 0


def test_rate_limit_per_key_per_endpoint(fsim, new_key):
    k1, k2 = new_key(fsim, "rl"), new_key(fsim, "rl")
    body = {"apikey": k1, "strategy": "t", "orderid": "1"}
    codes = [fsim.api("cancelorder", body).status_code for _ in range(12)]
    assert codes[:10] == [404] * 10 and codes[10:] == [429, 429]
    r = fsim.api("cancelorder", body)
    assert r.status_code == 429 and r.json() == {"message": "10 per 1 second"}
    assert fsim.api("cancelorder", dict(body, apikey=k2)).status_code == 404  # other account unaffected
    assert funds(fsim, k1).status_code == 200  # other endpoint unaffected
    with cf.ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(lambda _: funds(fsim, k2).status_code, range(60)))
    assert codes.count(429) == 10 and codes.count(200) == 50
    time.sleep(1.05)
    assert fsim.api("cancelorder", body).status_code == 404


def test_http_500_429_latency_faults(fsim, key):
    fsim.fault("http_500", count=2, endpoints=["funds"])
    assert [funds(fsim, key).status_code for _ in range(3)] == [500, 500, 200]
    fsim.fault("http_429", count=1)
    r = fsim.api("orderbook", {"apikey": key})
    assert r.status_code == 429 and r.json() == {"message": "50 per 1 second"}
    fsim.fault("latency", ms=400, endpoints=["ping"])
    t0 = time.time()
    assert fsim.api("ping", {"apikey": key}).status_code == 200
    assert time.time() - t0 >= 0.4
    fsim.clear_faults()
    t0 = time.time()
    fsim.api("ping", {"apikey": key})
    assert time.time() - t0 < 0.4


def test_scoped_fault_and_invalid_key(fsim, new_key, ws_factory):
    a, b = new_key(fsim, "sc"), new_key(fsim, "sc")
    fsim.fault("invalid_key", apikey=a)
    r = funds(fsim, a)
    assert r.status_code == 403 and r.json() == {"message": "Invalid openalgo apikey", "status": "error"}
    assert funds(fsim, b).status_code == 200
    c = ws_factory(fsim.ws_url)
    assert c.auth(a) == {"status": "error", "code": "AUTHENTICATION_ERROR", "message": "Invalid API key"}
    fsim.clear_faults()
    assert funds(fsim, a).status_code == 200


def test_timeout_after_accept_places_the_order(fsim, key):
    fsim.fault("timeout_after_accept", count=1, delay_s=3)
    body = {"apikey": key, "strategy": "late", "symbol": "SBIN", "exchange": "NSE", "action": "BUY",
            "quantity": 1}
    with pytest.raises(httpx.ReadTimeout):
        fsim.api("placeorder", body, timeout=0.5)
    ob = fsim.api("orderbook", {"apikey": key}).json()["data"]["orders"]
    assert len(ob) == 1 and ob[0]["strategy"] == "late" and ob[0]["order_status"] == "complete"
    assert fsim.api("placeorder", body, timeout=2).status_code == 200  # count consumed


def test_zero_price_fault(fsim, key):
    fsim.set_price("SBIN", "NSE", 812)
    fsim.fault("zero_price", symbol="SBIN", exchange="NSE", count=2)
    q = lambda: fsim.api("quotes", {"apikey": key, "symbol": "SBIN", "exchange": "NSE"}).json()["data"]["ltp"]
    assert [q(), q(), q()] == [0.0, 0.0, 812.0]


def test_freeze_and_path(fsim, key):
    sub = {"apikey": key, "symbol": "INFY", "exchange": "NSE"}
    a = fsim.api("quotes", sub).json()["data"]["ltp"]
    time.sleep(0.3)
    assert fsim.api("quotes", sub).json()["data"]["ltp"] == a  # frozen: no random walk
    fsim.drive_path("INFY", "NSE", [1501, 1502, 1503], interval_ms=50)
    time.sleep(0.4)
    q = fsim.api("quotes", sub).json()["data"]
    assert q["ltp"] == 1503.0 and q["high"] >= 1503.0


def test_drop_and_mute_ws(sim, live_key, ws_factory):
    c = ws_factory(sim.ws_url)
    c.auth(live_key)
    c.send({"action": "subscribe", "symbols": [{"symbol": "SBIN", "exchange": "NSE"}], "mode": 1})
    c.recv_until(lambda m: m.get("type") == "market_data")
    sim.fault("mute_ws", duration_s=1.0)
    time.sleep(0.15)
    c.ws.settimeout(0.3)
    drained = 0
    try:
        while True:
            c.recv()
            drained += 1
    except websocket.WebSocketTimeoutException:
        pass
    c.ws.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        c.recv()
    c.ws.settimeout(3)
    assert c.recv()["type"] == "market_data"  # mute expired
    st = sim.stats()
    assert st["ws_clients"] >= 1 and st["ticks_sent"] > 0
    assert sim.fault("drop_ws")["dropped"] >= 1
    closed = False
    for _ in range(200):
        try:
            if c.ws.recv() == "":  # close frame received
                closed = True
                break
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            closed = True
            break
    assert closed


def test_stats_and_reset(fsim, new_key):
    k = new_key(fsim, "st")
    fsim.api("funds", {"apikey": k})
    fsim.api("funds", {"apikey": k})
    name = fsim.accounts()[-1]
    assert fsim.stats()["requests"][name]["funds"] == 2


def test_accounts_file_reset_and_control_errors(tmp_path):
    path = tmp_path / "acc.json"
    key = "ab" * 32
    path.write_text(json.dumps([{"name": "pre", "apikey": key, "capital": 500000}]))
    with SimProcess(seed=4, args=["--accounts-file", str(path), "--frozen"]) as s:
        assert s.accounts() == ["pre"]
        assert s.api("funds", {"apikey": key}).json()["data"]["availablecash"] == 500000.0
        s.api("placeorder", {"apikey": key, "strategy": "t", "symbol": "SBIN", "exchange": "NSE",
                             "action": "BUY", "quantity": 1})
        assert len(s.orders()) == 1
        s.reset()
        assert s.orders() == [] and s.accounts() == ["pre"]
        assert s.api("orderbook", {"apikey": key}).json()["data"]["orders"] == []
        r = httpx.post(f"{s.rest_url}/_sim/fault", json={"kind": "nope"})
        assert r.status_code == 400
        r = httpx.post(f"{s.rest_url}/_sim/price", json={"symbol": "X", "exchange": "NSE", "ltp": 1})
        assert r.status_code == 404


def test_price_change_when_applied_then_reply_has_the_time_it_took_effect(fsim, key):
    before = time.time() * 1000.0
    reply = fsim.price_change("SBIN", "NSE", 815.04)
    after = time.time() * 1000.0
    assert reply["ltp"] == 815.05  # rounded to the tick size
    assert before <= reply["applied_at_ms"] <= after  # same clock as the order log's received_at_ms
    assert fsim.api("quotes", {"apikey": key, "symbol": "SBIN", "exchange": "NSE"}).json()["data"]["ltp"] == 815.05


def _atm_option(s, key, otype):
    exp = s.api("expiry", {"apikey": key, "symbol": "NIFTY", "exchange": "NFO",
                           "instrumenttype": "options"}).json()["data"][0].replace("-", "")
    return s.api("optionsymbol", {"apikey": key, "underlying": "NIFTY", "exchange": "NSE_INDEX",
                                  "expiry_date": exp, "offset": "ATM", "option_type": otype}).json()["symbol"]


def test_price_on_an_option_when_the_market_walks_then_it_holds_and_fills_there_until_released(sim, live_key):
    ce, pe = _atm_option(sim, live_key, "CE"), _atm_option(sim, live_key, "PE")

    def ltp(sym, ex="NFO"):
        return sim.api("quotes", {"apikey": live_key, "symbol": sym, "exchange": ex}).json()["data"]["ltp"]

    spot0, pe0 = ltp("NIFTY", "NSE_INDEX"), ltp(pe)
    held = sim.price_change(ce, "NFO", 321.0)
    assert held["ltp"] == 321.0 and held["held"] is True
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (ltp("NIFTY", "NSE_INDEX") == spot0 or ltp(pe) == pe0):
        time.sleep(0.1)
    assert ltp("NIFTY", "NSE_INDEX") != spot0 and ltp(pe) != pe0  # the walk (10 Hz) moved the spot and the PE
    assert ltp(ce) == 321.0
    r = sim.api("placeorder", {"apikey": live_key, "strategy": "t", "symbol": ce, "exchange": "NFO",
                               "action": "BUY", "quantity": 65, "product": "NRML"}).json()
    [fill] = [t for t in sim.api("tradebook", {"apikey": live_key}).json()["data"] if t["orderid"] == r["orderid"]]
    assert fill["average_price"] == 321.05  # a MARKET BUY fills at the held ask
    bad = httpx.post(f"{sim.rest_url}/_sim/price", json={"symbol": ce, "exchange": "NFO", "ltp": "nan"})
    assert bad.status_code == 400 and "positive number" in bad.json()["message"]
    both = httpx.post(f"{sim.rest_url}/_sim/price", json={"symbol": ce, "exchange": "NFO", "ltp": 5, "release": True})
    assert both.status_code == 400 and ltp(ce) == 321.0  # refused, and nothing changed
    released = sim.release_price(ce, "NFO")
    # the walk (10 Hz) may move it between the release's answer and the next quote: not asserted equal to it
    assert released != 321.0 and ltp(ce) != 321.0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ltp(ce) == released:
        time.sleep(0.1)
    assert ltp(ce) != released  # follows the walking spot again
