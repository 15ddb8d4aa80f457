"""broker.client.OpenAlgoClient.modifyorder / closeposition against the real (frozen) simulator: the wire shapes
of /work/shared/openalgo-protocol.md, never retried, and the simulator's LIMIT -> MARKET modify (a live broker's
behaviour; the OpenAlgo sandbox applies only quantity, price and trigger)."""
from __future__ import annotations

import pytest

from broker.client import OpenAlgoClient
from broker.errors import OrderNotFound, OrderOutcomeUnknown, OrderRejected


@pytest.fixture
def client(fsim, key):
    c = OpenAlgoClient(fsim.rest_url, key, sleep=lambda s: None, name="t")
    yield c
    c.close()


def _resting_limit(fsim, client, qty=3) -> str:
    fsim.set_price("HDFCBANK", "NSE", 1000)
    return client.placeorder(strategy="T", symbol="HDFCBANK", exchange="NSE", action="BUY", quantity=qty,
                             pricetype="LIMIT", product="MIS", price=900.0)


def _modify(client, oid, **kw):
    args = dict(strategy="T", symbol="HDFCBANK", exchange="NSE", action="BUY", product="MIS", pricetype="LIMIT",
                quantity=3, price=950.0)
    return client.modifyorder(oid, **{**args, **kw})


def test_modifyorder_when_price_changed_then_applied_and_order_id_returned(fsim, client):
    oid = _resting_limit(fsim, client)
    assert _modify(client, oid, quantity=4) == oid
    st = client.orderstatus(oid, "T")
    assert (st["order_status"], st["price"], st["quantity"]) == ("open", 950.0, 4)


def test_modifyorder_when_limit_to_market_then_fills_at_the_touch_as_one_order(fsim, client):
    oid = _resting_limit(fsim, client)
    assert _modify(client, oid, pricetype="MARKET", price=0.0) == oid
    st = client.orderstatus(oid, "T")
    assert (st["order_status"], st["price_type"], st["quantity"]) == ("complete", "MARKET", 3)
    assert st["average_price"] >= 1000.0  # a BUY at the ask, not at the old limit of 900
    assert [o["orderid"] for o in client.orderbook() if o["symbol"] == "HDFCBANK"] == [oid]


def test_modifyorder_when_order_done_or_unknown_then_refused_and_not_retried(fsim, client):
    oid = _resting_limit(fsim, client)
    _modify(client, oid, pricetype="MARKET", price=0.0)
    with pytest.raises(OrderRejected, match="Cannot modify order in complete status"):
        _modify(client, oid)
    with pytest.raises(OrderNotFound):
        _modify(client, "NOSUCH")
    before = client.calls["modifyorder"]
    resting = _resting_limit(fsim, client)
    fsim.fault("http_500", endpoints=["modifyorder"], count=3)
    try:
        with pytest.raises(OrderOutcomeUnknown):
            _modify(client, resting)
    finally:
        fsim.clear_faults()
    assert client.calls["modifyorder"] == before + 1  # one POST: a modify is never repeated blindly


def test_closeposition_when_positions_open_then_all_squared_off(fsim, client):
    fsim.set_price("SBIN", "NSE", 800)
    client.placeorder(strategy="T", symbol="SBIN", exchange="NSE", action="BUY", quantity=5, product="MIS")
    body = client.closeposition("T")
    assert body["status"] == "success" and body["closed_positions"] == 1
    assert all(int(p["quantity"]) == 0 for p in client.positionbook() if p["symbol"] == "SBIN")
    assert client.closeposition("T")["message"] == "No open positions to close"
