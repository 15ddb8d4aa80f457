"""broker.client.OpenAlgoClient.optiongreeks / margin against the real simulator (reads: retried on 5xx)."""

from __future__ import annotations

import pytest

from broker.client import OpenAlgoClient
from broker.errors import BrokerError, OrderNotFound


@pytest.fixture
def client(fsim, key):
    c = OpenAlgoClient(fsim.rest_url, key, sleep=lambda s: None, name="t")
    yield c
    c.close()


def _atm(client):
    exp = client.expiry("NIFTY", "NFO")[0]
    syms = [i["symbol"] for i in client.search(f"NIFTY {exp[3:6]}", "NFO") if i["expiry"] == exp]
    strikes = sorted({int(s[len("NIFTY") + 7:-2]) for s in syms})
    spot = client.quotes("NIFTY", "NSE_INDEX")["ltp"]
    k = min(strikes, key=lambda x: abs(x - spot))
    return f"NIFTY{exp.replace('-', '')}{k}CE", f"NIFTY{exp.replace('-', '')}{k}PE"


def test_optiongreeks_when_called_then_body_with_greeks(client):
    ce, _ = _atm(client)
    g = client.optiongreeks(ce, "NFO")
    assert g["symbol"] == ce and 0.3 < g["greeks"]["delta"] < 0.7 and g["implied_volatility"] > 0


def test_margin_when_ints_given_then_sent_as_strings_and_data_returned(client):
    ce, pe = _atm(client)
    legs = [dict(symbol=s, exchange="NFO", action="SELL", quantity=65, product="NRML", pricetype="MARKET")
            for s in (ce, pe)]
    d = client.margin(legs)
    assert d["total_margin_required"] > 50_000 and d["margin_benefit"] >= 0


def test_margin_when_5xx_then_retried(fsim, key, client):
    ce, pe = _atm(client)
    fsim.fault("http_500", endpoints=["margin"], count=1, apikey=key)
    d = client.margin([dict(symbol=ce, exchange="NFO", action="BUY", quantity=65, product="NRML",
                            pricetype="MARKET")])
    assert d["total_margin_required"] > 0 and client.calls["margin"] == 2


def test_margin_when_gateway_has_none_then_broker_error_not_order_not_found(client):
    client.base = client.base.replace("/api/v1/", "/api/v9/")  # an unknown path: the sim's 404
    with pytest.raises(BrokerError) as ei:
        client.margin([dict(symbol="SBIN", exchange="NSE", action="BUY", quantity=1, product="MIS",
                            pricetype="MARKET")])
    assert not isinstance(ei.value, OrderNotFound) and "margin calculation not available" in ei.value.message
