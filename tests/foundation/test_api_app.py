"""The API application on a real loopback server in this process (uvicorn in a thread, real SQLite): entries refused 503 while the service
is down (exits still queued), and an order the fat-finger guards hold is 400 naming the problem until it is sent
again with "confirm": true."""
from __future__ import annotations

import threading

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from api.app import create_app
from config import load_settings
from db.api_keys import create_key
from db.models import ControlCommand, OrderIntent
from simulator.testing import free_port
from tests.harness import wait_for
from tests.ui import ui_builders as b


@pytest.fixture
def client(db):
    acct = b.seed_account(db, "alpha")
    b.seed_instruments(db)
    b.seed_prices(db)
    _, key = create_key(db, "unit")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(load_settings(), db), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 10)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-KEY": key}, timeout=10) as c:
        yield c, acct
    server.should_exit = True
    thread.join(10)


def count(db, model) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_entry_when_the_service_is_down_then_503_and_nothing_written_but_a_flatten_is_queued(db, client):
    c, acct = client
    order = {"account_id": acct, "symbol": "RELIANCE", "exchange": "NSE", "action": "BUY", "quantity": 1}
    r = c.post("/api/v1/orders", json=order, headers={"Idempotency-Key": "o1"})
    assert r.status_code == 503 and r.json()["status"] == "error" and "service is down" in r.json()["message"]
    assert count(db, OrderIntent) == 0
    f = c.post(f"/api/v1/accounts/{acct}/flatten", headers={"Idempotency-Key": "f1"})
    assert f.status_code == 200 and count(db, ControlCommand) == 1
    b.seed_heartbeat(db, "dispatcher")
    assert c.post("/api/v1/orders", json=order, headers={"Idempotency-Key": "o1"}).status_code == 200  # retried
    assert count(db, OrderIntent) == 1


def test_order_when_a_guard_holds_it_then_400_naming_it_and_placed_only_with_confirm(db, client):
    c, acct = client
    b.seed_heartbeat(db, "dispatcher")
    order = {"account_id": acct, "symbol": "RELIANCE", "exchange": "NSE", "action": "BUY", "quantity": 1,
             "pricetype": "LIMIT", "price": 1900}
    r = c.post("/api/v1/orders", json=order, headers={"Idempotency-Key": "g1"})
    assert r.status_code == 400 and r.json()["problems"] and "confirm" in r.json()["message"]
    assert count(db, OrderIntent) == 0
    ok = c.post("/api/v1/orders", json={**order, "confirm": True}, headers={"Idempotency-Key": "g1"})
    assert ok.status_code == 200 and ok.json()["data"]["created"] and count(db, OrderIntent) == 1
    refused = c.post("/api/v1/orders", json={**order, "price": 99_999_999, "confirm": True},
                     headers={"Idempotency-Key": "g2"})
    assert refused.status_code == 400 and "Refused" in refused.json()["message"] and count(db, OrderIntent) == 1


def test_execute_when_multipliers_given_then_each_account_trades_its_lots_times_it_and_a_bad_one_writes_nothing(
        db, client):
    from db.strategies import LegSpec, save_strategy
    c, acct = client
    other = b.seed_account(db, "beta")
    b.seed_heartbeat(db, "dispatcher")
    expiry = b.expiry_in()  # the fixture's chain
    sid = save_strategy(db, "api mult", "NIFTY", "NSE_INDEX", expiry, [LegSpec("CE", "SELL", 1)])
    bad = c.post("/api/v1/execute", json={"strategy": sid, "account_ids": [acct, other],
                                          "multipliers": {str(other): 0}}, headers={"Idempotency-Key": "m0"})
    assert bad.status_code == 400 and count(db, OrderIntent) == 0, bad.json()
    ok = c.post("/api/v1/execute", json={"strategy": sid, "account_ids": [acct, other],
                                         "multipliers": {str(other): 3}}, headers={"Idempotency-Key": "m1"})
    assert ok.status_code == 200, ok.json()
    with db.read() as s:
        qty = dict(s.execute(select(OrderIntent.account_id, OrderIntent.requested_qty)).all())
    assert qty[other] == 3 * qty[acct] > 0


def test_entry_when_after_the_mis_cut_off_then_400_naming_it_nothing_written_and_cnc_and_flatten_still_go(
        db, client):
    from datetime import timedelta

    from db import clock
    from tests.market_clock import offset_to
    c, acct = client
    b.seed_heartbeat(db, "dispatcher")
    clock.set_offset(timedelta(seconds=offset_to("2026-12-01 15:20:00")))  # the API's clock: after 15:15 IST
    order = {"account_id": acct, "symbol": "RELIANCE", "exchange": "NSE", "action": "BUY", "quantity": 1}
    late = c.post("/api/v1/orders", json=order, headers={"Idempotency-Key": "late1"})
    assert late.status_code == 400 and "no new MIS entries after 15:15 IST" in late.json()["message"], late.json()
    assert count(db, OrderIntent) == 0
    cnc = c.post("/api/v1/orders", json={**order, "product": "CNC"}, headers={"Idempotency-Key": "late2"})
    assert cnc.status_code == 200 and count(db, OrderIntent) == 1, cnc.json()
    f = c.post(f"/api/v1/accounts/{acct}/flatten", headers={"Idempotency-Key": "late3"})
    assert f.status_code == 200 and count(db, ControlCommand) == 1
