"""Contract test: the real OpenAlgo Python SDK (openalgo==1.0.47, see requirements-sdk.txt) works
unmodified against the simulator, for REST calls and the WebSocket feed."""

from __future__ import annotations

import threading
import time

import pytest

openalgo = pytest.importorskip("openalgo", reason="install with: pip install -r requirements-sdk.txt")
from openalgo import api  # noqa: E402


@pytest.fixture
def client(fsim, key):
    c = api(api_key=key, host=fsim.rest_url, ws_port=fsim.ws_port, timeout=10)
    yield c
    try:
        c.disconnect()
    except Exception:
        pass


def test_sdk_rest_calls(fsim, client):
    fsim.set_price("SBIN", "NSE", 750)
    f = client.funds()
    assert f["status"] == "success" and f["data"]["availablecash"] == 10000000.0
    q = client.quotes(symbol="SBIN", exchange="NSE")
    assert q["status"] == "success" and q["data"]["ltp"] == 750.0
    o = client.placeorder(strategy="sdk", symbol="SBIN", action="BUY", exchange="NSE", price_type="MARKET",
                          product="MIS", quantity=5)
    assert o["status"] == "success", o
    st = client.orderstatus(order_id=o["orderid"], strategy="sdk")
    assert st["data"]["order_status"] == "complete" and st["data"]["average_price"] == 750.05
    lim = client.placeorder(strategy="sdk", symbol="SBIN", action="BUY", exchange="NSE", price_type="LIMIT",
                            product="MIS", quantity=1, price=700)
    ob = client.orderbook()
    assert {x["orderid"] for x in ob["data"]["orders"]} == {o["orderid"], lim["orderid"]}
    c = client.cancelorder(order_id=lim["orderid"], strategy="sdk")
    assert c["status"] == "success" and c["orderid"] == lim["orderid"]
    pb = client.positionbook()
    assert pb["data"][0]["quantity"] == 5
    assert client.openposition(strategy="sdk", symbol="SBIN", exchange="NSE", product="MIS")["quantity"] == 5
    d = client.depth(symbol="SBIN", exchange="NSE")
    assert len(d["data"]["bids"]) == 5
    bad = client.quotes(symbol="NOPE", exchange="NSE")
    assert bad["status"] == "error"


def test_sdk_history_dataframe(client):
    df = client.history(symbol="RELIANCE", exchange="NSE", interval="5m", start_date="2025-01-06",
                        end_date="2025-01-06")
    assert not isinstance(df, dict), df
    assert len(df) == 75 and {"open", "high", "low", "close", "volume", "oi"} <= set(df.columns)
    assert df.index[0].strftime("%H:%M") == "09:15"
    daily = client.history(symbol="NIFTY", exchange="NSE_INDEX", interval="D", start_date="2025-01-06",
                           end_date="2025-01-10")
    assert len(daily) == 5


def test_sdk_options(client):
    exp = client.expiry(symbol="NIFTY", exchange="NFO", instrumenttype="options")["data"][0].replace("-", "")
    oc = client.optionchain(underlying="NIFTY", exchange="NSE_INDEX", expiry_date=exp, strike_count=2)
    assert oc["status"] == "success" and len(oc["chain"]) == 5
    sym = client.optionsymbol(underlying="NIFTY", exchange="NSE_INDEX", expiry_date=exp, offset="ATM",
                              option_type="CE")
    assert sym["symbol"] == oc["chain"][2]["ce"]["symbol"] and sym["lotsize"] == 65



def test_sdk_optiongreeks_and_margin(client):
    exp = client.expiry(symbol="NIFTY", exchange="NFO", instrumenttype="options")["data"][0].replace("-", "")
    oc = client.optionchain(underlying="NIFTY", exchange="NSE_INDEX", expiry_date=exp, strike_count=1)
    ce, pe = oc["chain"][1]["ce"]["symbol"], oc["chain"][1]["pe"]["symbol"]
    g = client.optiongreeks(symbol=ce, exchange="NFO", interest_rate=6.5)
    assert g["status"] == "success", g
    assert g["symbol"] == ce and 0 < g["greeks"]["delta"] < 1 and g["interest_rate"] == 6.5
    legs = [{"symbol": s, "exchange": "NFO", "action": "SELL", "product": "NRML", "pricetype": "MARKET",
             "quantity": 65} for s in (ce, pe)]
    m = client.margin(positions=legs)
    assert m["status"] == "success", m
    assert m["data"]["total_margin_required"] > 0 and "span_margin" in m["data"] and "exposure_margin" in m["data"]

def test_sdk_websocket_feed(fsim, client):
    assert client.connect() is True
    got = {1: [], 2: [], 3: []}
    want = {1: 1444.0, 2: 1555.0, 3: 3333.0}
    ev = threading.Event()

    def cb(mode):
        def f(msg):
            got[mode].append(msg)
            if all(v and v[-1]["data"]["ltp"] == want[m] for m, v in got.items()):
                ev.set()
        return f

    client.subscribe_ltp([{"exchange": "NSE", "symbol": "RELIANCE"}], on_data_received=cb(1))
    client.subscribe_quote([{"exchange": "NSE", "symbol": "INFY"}], on_data_received=cb(2))
    client.subscribe_depth([{"exchange": "NSE", "symbol": "TCS"}], on_data_received=cb(3))
    time.sleep(0.3)
    for sym, px in (("RELIANCE", 1444), ("INFY", 1555), ("TCS", 3333)):
        fsim.set_price(sym, "NSE", px)
    assert ev.wait(5), got
    assert got[1][-1]["symbol"] == "RELIANCE" and got[1][-1]["data"]["ltp"] == 1444.0
    assert got[2][-1]["data"]["ltp"] == 1555.0 and got[2][-1]["data"]["close"] > 0
    assert got[3][-1]["data"]["ltp"] == 3333.0 and len(got[3][-1]["data"]["depth"]["buy"]) == 5
    assert client.get_ltp()["ltp"]["NSE"]["RELIANCE"]["ltp"] == 1444.0
