"""/optiongreeks and /margin against the real simulator subprocess: wire shapes and the SPAN-like behaviour."""

from __future__ import annotations

import pytest


def _chain(s, key, strikes=4):
    exp = s.api("expiry", {"apikey": key, "symbol": "NIFTY", "exchange": "NFO",
                           "instrumenttype": "options"}).json()["data"][1].replace("-", "")
    r = s.api("optionchain", {"apikey": key, "underlying": "NIFTY", "exchange": "NSE_INDEX", "expiry_date": exp,
                              "strike_count": strikes}).json()
    return r["chain"], strikes


def _leg(sym, action, qty=65):
    return {"symbol": sym, "exchange": "NFO", "action": action, "quantity": str(qty), "product": "NRML",
            "pricetype": "MARKET", "price": "0", "trigger_price": "0"}


def _margin(s, key, positions) -> dict:
    r = s.api("margin", {"apikey": key, "positions": positions})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_optiongreeks_when_atm_call_then_openalgo_shape_and_sane_values(fsim, key):
    chain, n = _chain(fsim, key)
    atm = chain[n]["ce"]["symbol"]
    r = fsim.api("optiongreeks", {"apikey": key, "symbol": atm, "exchange": "NFO"})
    assert r.status_code == 200, r.text
    j = r.json()
    assert set(j) == {"days_to_expiry", "exchange", "expiry_date", "greeks", "implied_volatility", "interest_rate",
                      "option_price", "option_type", "spot_price", "status", "strike", "symbol", "underlying"}
    assert set(j["greeks"]) == {"delta", "gamma", "rho", "theta", "vega"}
    assert j["status"] == "success" and j["symbol"] == atm and j["underlying"] == "NIFTY" and j["option_type"] == "CE"
    assert j["expiry_date"][2] == "-" and j["expiry_date"][3:6].istitle() and len(j["expiry_date"]) == 11
    g = j["greeks"]
    assert 0.35 < g["delta"] < 0.65 and g["gamma"] > 0 and g["theta"] < 0 and g["vega"] > 0
    assert 5 < j["implied_volatility"] < 30 and j["days_to_expiry"] > 0 and j["interest_rate"] == 0
    put = fsim.api("optiongreeks", {"apikey": key, "symbol": chain[n]["pe"]["symbol"], "exchange": "NFO"}).json()
    assert -0.65 < put["greeks"]["delta"] < -0.35


def test_optiongreeks_when_option_price_rises_then_iv_rises(fsim, key):
    chain, n = _chain(fsim, key)
    leg = chain[n + 1]["ce"]
    before = fsim.api("optiongreeks", {"apikey": key, "symbol": leg["symbol"], "exchange": "NFO"}).json()
    fsim.set_price(leg["symbol"], "NFO", round(leg["ltp"] * 1.5, 1))
    after = fsim.api("optiongreeks", {"apikey": key, "symbol": leg["symbol"], "exchange": "NFO"}).json()
    assert after["implied_volatility"] > before["implied_volatility"] + 1
    assert after["option_price"] == round(leg["ltp"] * 1.5, 1)


def test_optiongreeks_when_bad_input_then_openalgo_errors(fsim, key):
    r = fsim.api("optiongreeks", {"apikey": key, "symbol": "NIFTYX", "exchange": "NSE"})
    assert r.status_code == 400
    assert r.json()["message"] == "Validation failed" and "exchange" in r.json()["errors"]
    r = fsim.api("optiongreeks", {"apikey": key, "symbol": "NOPE25DEC99CE", "exchange": "NFO"})
    assert r.status_code == 404 and r.json()["status"] == "error"


def test_margin_when_valid_basket_then_openalgo_shape(fsim, key):
    chain, n = _chain(fsim, key)
    d = _margin(fsim, key, [_leg(chain[n]["ce"]["symbol"], "SELL")])
    assert {"total_margin_required", "span_margin", "exposure_margin"} <= set(d)
    assert d["total_margin_required"] == pytest.approx(d["span_margin"] + d["exposure_margin"], abs=0.02)


def test_margin_when_bad_positions_then_family_a_error(fsim, key):
    r = fsim.api("margin", {"apikey": key, "positions": [{"symbol": "SBIN", "exchange": "NSE"}]})
    assert r.status_code == 400 and r.json()["status"] == "error"
    assert "action" in r.json()["message"] and "quantity" in r.json()["message"]  # shape A: a repr string
    r = fsim.api("margin", {"apikey": key, "positions": []})
    assert r.status_code == 400
    r = fsim.api("margin", {"apikey": key, "positions": [_leg("NOPE", "BUY")]})
    assert r.status_code == 400 and "not found" in r.json()["message"]


def test_margin_when_short_straddle_then_far_more_than_long_straddle(fsim, key):
    chain, n = _chain(fsim, key)
    ce, pe = chain[n]["ce"]["symbol"], chain[n]["pe"]["symbol"]
    short = _margin(fsim, key, [_leg(ce, "SELL"), _leg(pe, "SELL")])["total_margin_required"]
    long_ = _margin(fsim, key, [_leg(ce, "BUY"), _leg(pe, "BUY")])["total_margin_required"]
    premium = 65 * (chain[n]["ce"]["ltp"] + chain[n]["pe"]["ltp"])
    assert long_ == pytest.approx(premium, rel=0.01)  # a long option needs its premium, nothing more
    assert short > 3 * long_ and short > 100_000


def test_margin_when_iron_condor_then_less_than_naked_short_strangle(fsim, key):
    chain, n = _chain(fsim, key)
    strangle = [_leg(chain[n + 2]["ce"]["symbol"], "SELL"), _leg(chain[n - 2]["pe"]["symbol"], "SELL")]
    wings = [_leg(chain[n + 4]["ce"]["symbol"], "BUY"), _leg(chain[n - 4]["pe"]["symbol"], "BUY")]
    naked = _margin(fsim, key, strangle)
    condor = _margin(fsim, key, wings + strangle)
    assert condor["total_margin_required"] < 0.6 * naked["total_margin_required"]
    assert condor["margin_benefit"] > 0


def test_open_interest_when_the_underlying_moves_then_it_changes(fsim, key):
    chain, n = _chain(fsim, key)
    sym = chain[n]["ce"]["symbol"]
    first = fsim.api("quotes", {"apikey": key, "symbol": sym, "exchange": "NFO"}).json()["data"]["oi"]
    spot = fsim.api("quotes", {"apikey": key, "symbol": "NIFTY", "exchange": "NSE_INDEX"}).json()["data"]["ltp"]
    seen = set()
    for i in range(5):
        fsim.set_price("NIFTY", "NSE_INDEX", spot + (i + 1) * 5)
        seen.add(fsim.api("quotes", {"apikey": key, "symbol": sym, "exchange": "NFO"}).json()["data"]["oi"])
    fsim.set_price("NIFTY", "NSE_INDEX", spot)
    assert seen - {first} and all(oi % 65 == 0 and oi >= 0 for oi in seen)
