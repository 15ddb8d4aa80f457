"""REST envelopes, auth, validation shapes and market-data endpoints against the real subprocess."""

from __future__ import annotations

import datetime as dt
import re

import httpx
import pytest


def post(s, ep, body, **kw):
    return s.api(ep, body, **kw)


def test_ping_and_envelope(fsim, key):
    r = post(fsim, "ping", {"apikey": key})
    assert r.status_code == 200
    assert r.json() == {"data": {"broker": "simulator", "message": "pong"}, "status": "success"}
    assert r.text.startswith('{"data"')  # jsonify-style sorted keys


def test_invalid_key_403(fsim):
    r = post(fsim, "funds", {"apikey": "0" * 64})
    assert r.status_code == 403
    assert r.json() == {"message": "Invalid openalgo apikey", "status": "error"}


def test_trailing_slash_and_unknown_path(fsim, key):
    r = httpx.post(f"{fsim.rest_url}/api/v1/funds/", json={"apikey": key})
    assert r.status_code == 200 and r.json()["data"]["availablecash"] == 10000000.0
    r = httpx.post(f"{fsim.rest_url}/api/v1/nosuch", json={"apikey": key})
    assert r.status_code == 404
    assert r.json() == {"message": "Not found", "path": "/api/v1/nosuch", "status": "error"}
    r = httpx.get(f"{fsim.rest_url}/api/v1/funds")
    assert r.status_code == 404 and r.json()["status"] == "error"


def test_non_json_body_500(fsim, key):
    r = httpx.post(f"{fsim.rest_url}/api/v1/funds", content=b"apikey=x",
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 500
    assert r.json() == {"status": "error", "message": "An unexpected error occurred"}
    r = httpx.post(f"{fsim.rest_url}/api/v1/funds", content=b"{bad", headers={"content-type": "application/json"})
    assert r.status_code == 500


def test_validation_shapes(fsim, key):
    a = post(fsim, "placeorder", {"apikey": key, "symbol": "SBIN", "exchange": "NSE", "action": "BUY",
                                  "quantity": 1})
    assert a.status_code == 400
    assert a.json() == {"message": "{'strategy': ['Missing data for required field.']}", "mode": "analyze",
                        "status": "error"}
    b = post(fsim, "quotes", {"symbol": "SBIN", "exchange": "NSE"})
    assert b.status_code == 400
    assert b.json() == {"message": {"apikey": ["Missing data for required field."]}, "status": "error"}
    c = post(fsim, "optionsymbol", {"apikey": key, "underlying": "NIFTY", "exchange": "NSE_INDEX",
                                    "expiry_date": "02DEC25", "offset": "ATM5", "option_type": "CE"})
    assert c.status_code == 400
    assert c.json() == {"status": "error", "message": "Validation error",
                        "errors": {"offset": ["Offset must be ATM, ITM1-ITM50, or OTM1-OTM50"]}}


def test_fractional_quantity_rejected(fsim, key):
    r = post(fsim, "placeorder", {"apikey": key, "strategy": "t", "symbol": "SBIN", "exchange": "NSE",
                                  "action": "BUY", "quantity": 1.5})
    assert r.status_code == 400
    assert "Fractional quantity (1.5) is not allowed for non-crypto exchanges." in r.json()["message"]


def test_quotes_multiquotes_depth(fsim, key):
    q = post(fsim, "quotes", {"apikey": key, "symbol": "RELIANCE", "exchange": "NSE"}).json()
    assert q["status"] == "success"
    assert set(q["data"]) == {"ask", "bid", "high", "low", "ltp", "oi", "open", "prev_close", "volume"}
    assert q["data"]["bid"] < q["data"]["ltp"] < q["data"]["ask"]
    bad = post(fsim, "quotes", {"apikey": key, "symbol": "NOPE", "exchange": "NSE"})
    assert bad.status_code == 400
    assert bad.json()["message"].startswith("Symbol 'NOPE' not found for exchange 'NSE'.")
    m = post(fsim, "multiquotes", {"apikey": key, "symbols": [{"symbol": "FOO", "exchange": "NSE"},
                                                              {"symbol": "SBIN", "exchange": "NSE"}]}).json()
    assert m["status"] == "success" and "error" in m["results"][0] and m["results"][1]["data"]["ltp"] > 0
    d = post(fsim, "depth", {"apikey": key, "symbol": "SBIN", "exchange": "NSE"}).json()["data"]
    assert len(d["asks"]) == 5 and len(d["bids"]) == 5
    assert d["bids"][0]["price"] < d["ltp"] < d["asks"][0]["price"]
    assert d["totalbuyqty"] == sum(x["quantity"] for x in d["bids"])


def test_history_and_intervals(fsim, key):
    iv = post(fsim, "intervals", {"apikey": key}).json()["data"]
    assert "1m" in iv["minutes"] and "15m" in iv["minutes"] and iv["hours"] == ["1h"] and iv["days"] == ["D"]
    body = {"apikey": key, "symbol": "SBIN", "exchange": "NSE", "interval": "15m",
            "start_date": "2025-01-06", "end_date": "2025-01-06"}
    h1 = post(fsim, "history", body).json()
    h2 = post(fsim, "history", body).json()
    assert h1 == h2 and len(h1["data"]) == 25
    bar = h1["data"][0]
    assert set(bar) == {"timestamp", "open", "high", "low", "close", "volume", "oi"}
    assert isinstance(bar["timestamp"], int)
    assert dt.datetime.fromtimestamp(bar["timestamp"], dt.timezone(dt.timedelta(hours=5.5))).strftime("%H:%M") == "09:15"
    bad = post(fsim, "history", dict(body, interval="7m"))
    assert bad.status_code == 400 and "interval" in bad.json()["message"]


def test_symbol_search_expiry(fsim, key):
    exp = post(fsim, "expiry", {"apikey": key, "symbol": "NIFTY", "exchange": "NFO",
                                "instrumenttype": "options"}).json()
    assert exp["status"] == "success" and len(exp["data"]) == 4
    assert all(re.fullmatch(r"\d{2}-[A-Z]{3}-\d{2}", x) for x in exp["data"])
    first = dt.datetime.strptime(exp["data"][0].title(), "%d-%b-%y").date()
    assert first.weekday() == 1
    sym = f"NIFTY{exp['data'][0].replace('-', '')}FUT"
    fut_exp = post(fsim, "expiry", {"apikey": key, "symbol": "NIFTY", "exchange": "NFO",
                                    "instrumenttype": "futures"}).json()["data"]
    fut = "NIFTY" + fut_exp[0].replace("-", "") + "FUT"
    s = post(fsim, "symbol", {"apikey": key, "symbol": fut, "exchange": "NFO"}).json()
    assert s["data"]["lotsize"] == 65 and s["data"]["instrumenttype"] == "FUT" and s["data"]["tick_size"] == 0.05
    assert post(fsim, "symbol", {"apikey": key, "symbol": sym, "exchange": "NFO"}).status_code == 404
    srch = post(fsim, "search", {"apikey": key, "query": "BANKNIFTY CE", "exchange": "NFO"}).json()
    assert srch["status"] == "success" and len(srch["data"]) == 2 * 121
    none = post(fsim, "search", {"apikey": key, "query": "ZZZZ"}).json()
    assert none == {"data": [], "message": "No matching symbols found", "status": "success"}


def test_optionsymbol_and_lot_sizes(fsim, key):
    exp = post(fsim, "expiry", {"apikey": key, "symbol": "SENSEX", "exchange": "BFO",
                                "instrumenttype": "options"}).json()["data"][0].replace("-", "")
    r = post(fsim, "optionsymbol", {"apikey": key, "underlying": "SENSEX", "exchange": "BSE_INDEX",
                                    "expiry_date": exp, "offset": "ATM", "option_type": "PE"})
    j = r.json()
    assert list(j) == ["status", "symbol", "exchange", "lotsize", "tick_size", "freeze_qty", "underlying_ltp"]
    assert j["exchange"] == "BFO" and j["lotsize"] == 20 and j["freeze_qty"] == 1000
    strike = int(j["symbol"][len("SENSEX") + 7:-2])
    assert abs(strike - j["underlying_ltp"]) <= 50 and j["symbol"] == f"SENSEX{exp}{strike}PE"
    itm = post(fsim, "optionsymbol", {"apikey": key, "underlying": "SENSEX", "exchange": "BSE_INDEX",
                                      "expiry_date": exp, "offset": "ITM2", "option_type": "PE"}).json()
    assert int(itm["symbol"][len("SENSEX") + 7:-2]) == strike + 200


def test_optionchain(fsim, key):
    exp = post(fsim, "expiry", {"apikey": key, "symbol": "BANKNIFTY", "exchange": "NFO",
                                "instrumenttype": "options"}).json()["data"][0].replace("-", "")
    r = post(fsim, "optionchain", {"apikey": key, "underlying": "BANKNIFTY", "exchange": "NSE_INDEX",
                                   "expiry_date": exp, "strike_count": 3, "with_greeks": True}).json()
    assert r["status"] == "success" and len(r["chain"]) == 7
    mid = r["chain"][3]
    assert mid["strike"] == r["atm_strike"] and mid["ce"]["label"] == "ATM" and mid["pe"]["label"] == "ATM"
    assert r["chain"][0]["ce"]["label"] == "ITM3" and r["chain"][0]["pe"]["label"] == "OTM3"
    assert mid["ce"]["lotsize"] == 30 and 0.3 < mid["ce"]["delta"] < 0.7 and mid["pe"]["delta"] < 0
    ces = [row["ce"]["ltp"] for row in r["chain"]]
    assert ces == sorted(ces, reverse=True)
    missing = post(fsim, "optionchain", {"apikey": key, "underlying": "NIFTY", "exchange": "NSE_INDEX"})
    assert missing.status_code == 400 and missing.json()["errors"] == {"expiry_date": ["Missing data for required field."]}


@pytest.mark.parametrize("ep", ["orderbook", "tradebook", "positionbook", "holdings", "funds"])
def test_account_views_carry_analyze_mode(fsim, key, ep):
    j = post(fsim, ep, {"apikey": key}).json()
    assert j["status"] == "success" and j["mode"] == "analyze"


def test_instruments_get_returns_symbol_master_rows_for_an_exchange(sim, live_key):
    live_sim = sim
    import httpx
    r = httpx.get(f"{live_sim.rest_url}/api/v1/instruments", params={"apikey": live_key, "exchange": "NFO"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "success" and body["message"] == f"Found {len(body['data'])} instruments"
    row = next(d for d in body["data"] if d["symbol"].startswith("NIFTY") and d["instrumenttype"] == "CE")
    assert set(row) == {"symbol", "brsymbol", "name", "exchange", "brexchange", "token", "expiry", "strike",
                        "lotsize", "instrumenttype", "tick_size"}
    assert row["lotsize"] == 65 and row["exchange"] == "NFO"
    missing = httpx.get(f"{live_sim.rest_url}/api/v1/instruments", params={"apikey": live_key})
    assert missing.status_code == 400 and missing.json()["message"]["exchange"] == ["Field may not be null."]
    bad = httpx.get(f"{live_sim.rest_url}/api/v1/instruments", params={"apikey": "f" * 64, "exchange": "NFO"})
    assert bad.status_code == 403
    csv = httpx.get(f"{live_sim.rest_url}/api/v1/instruments",
                    params={"apikey": live_key, "exchange": "NSE", "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv") and csv.text.startswith("symbol,brsymbol,name")
