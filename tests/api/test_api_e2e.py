"""The local API end to end: the real API process and the real service process against the simulator.

Execute by API on 3 accounts gives 3 runs with each leg placed once; the same idempotency key again places
nothing new; 401 / 400 / 429 answers have OpenAlgo's error shape; the rate limits hold under a loop of 200
requests; the API's own keys never reach its log."""
from __future__ import annotations

import time

from sqlalchemy import func, select

from db.api_keys import create_key, revoke_key
from db.models import ControlCommand, OrderIntent, StrategyRun
from db.strategies import LegSpec, save_strategy
from tests.api.conftest import ApiProcess
from tests.harness import wait_for


def counts(db) -> tuple[int, int, int]:
    with db.read() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (StrategyRun, OrderIntent,
                                                                             ControlCommand))


def auth(key: str) -> dict:
    return {"X-API-KEY": key}


def test_execute_when_posted_on_three_accounts_then_three_runs_each_leg_placed_once_and_a_replay_places_nothing(
        stack):
    _, key = create_key(stack.db, "e2e execute")
    sid = save_strategy(stack.db, "api straddle", "NIFTY", "NSE_INDEX", stack.expiry,
                        [LegSpec("CE", "SELL"), LegSpec("PE", "SELL")])
    before = len(stack.placed())
    body = {"strategy": "api straddle", "account_ids": sorted(stack.names)}
    r = stack.api.http.post("/api/v1/execute", json=body, headers={**auth(key), "Idempotency-Key": "exec-1"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert r.json()["status"] == "success" and len(data["run_ids"]) == 3 and r.headers["Idempotent-Replayed"] == \
        "false"
    assert wait_for(lambda: stack.sc.runs_in(data["run_ids"], ("active",)), 30), stack.sc.tail()
    runs_n, intents_n, _ = counts(stack.db)
    again = stack.api.http.post("/api/v1/execute", json={**body, "idempotency_key": "exec-1"}, headers=auth(key))
    assert again.status_code == 200 and again.json() == r.json() and again.headers["Idempotent-Replayed"] == "true"
    time.sleep(1.0)  # a second fan-out, had one been written, has every chance to reach the broker
    placed = stack.placed()[before:]
    assert len(placed) == 6, placed  # 2 legs x 3 accounts, each once
    assert sorted(o["account"] for o in placed) == sorted(list(stack.names.values()) * 2)
    assert counts(stack.db)[:2] == (runs_n, intents_n)
    with stack.db.read() as s:
        assert s.scalar(select(func.count()).select_from(StrategyRun).where(StrategyRun.strategy_id == sid)) == 3
    clash = stack.api.http.post("/api/v1/execute", json={**body, "account_ids": sorted(stack.names)[:1]},
                                headers={**auth(key), "Idempotency-Key": "exec-1"})
    assert clash.status_code == 409 and clash.json()["status"] == "error" and counts(stack.db)[:2] == (runs_n,
                                                                                                          intents_n)
    # the reads show what was done, and exit by API ends the runs through the service's one exit path
    got = stack.api.http.get("/api/v1/runs", params={"active_only": True}, headers=auth(key)).json()["data"]
    assert set(data["run_ids"]) <= {row["id"] for row in got}
    for rid in data["run_ids"]:
        ex = stack.api.http.post(f"/api/v1/runs/{rid}/exit", headers={**auth(key), "Idempotency-Key": f"x{rid}"})
        assert ex.status_code == 200, ex.text
    assert wait_for(lambda: stack.sc.runs_in(data["run_ids"], ("exited",)), 30), stack.sc.tail()
    detail = stack.api.http.get(f"/api/v1/runs/{data['run_ids'][0]}", headers=auth(key)).json()["data"]
    assert detail["status"] == "exited" and len(detail["intents"]) == 4


def test_reads_when_called_with_a_key_then_accounts_without_keys_and_books_per_account(stack):
    _, key = create_key(stack.db, "e2e reads")
    accts = stack.api.http.get("/api/v1/accounts", headers=auth(key)).json()["data"]
    assert {a["name"] for a in accts} == set(stack.names.values())
    assert not any("key" in field for a in accts for field in a)
    one = sorted(stack.names)[0]
    for path in ("/api/v1/positions", "/api/v1/orders", "/api/v1/trades", "/api/v1/funds", "/api/v1/orderbook"):
        r = stack.api.http.get(path, params={"account_id": one}, headers=auth(key))
        assert r.status_code == 200 and r.json()["status"] == "success", (path, r.text)
        assert all(row["account"] == stack.names[one] for row in r.json()["data"]), path
    assert stack.api.http.get("/api/v1/positions", params={"account_id": 999}, headers=auth(key)).status_code == 404
    health = stack.api.http.get("/api/v1/health", headers=auth(key)).json()["data"]
    assert health["up"] and health["orders_ok"]
    assert stack.api.http.get("/api/v1/risk-events", headers=auth(key)).status_code == 200


def test_bad_input_when_posted_then_400_with_the_forms_message_and_nothing_written(stack):
    _, key = create_key(stack.db, "e2e bad input")
    acct = sorted(stack.names)[0]
    before = counts(stack.db)
    order = {"account_id": acct, "symbol": "SBIN", "exchange": "NSE", "action": "BUY", "quantity": 2.5}
    cases = [
        ("/api/v1/orders", order, "Quantity must be a whole number"),
        ("/api/v1/orders", {**order, "quantity": 1, "action": "HOLD"}, "Action must be BUY or SELL"),
        ("/api/v1/orders", {**order, "quantity": 1, "symbol": "NOSUCH"}, "Unknown symbol NOSUCH"),
        ("/api/v1/orders", {**order, "quantity": 1, "qty": 1}, "Bad request"),
        ("/api/v1/execute", {"strategy": "no such strategy", "account_ids": [acct]}, "Unknown strategy"),
        ("/api/v1/execute", {"strategy": "api straddle", "account_ids": []}, "Choose at least one account"),
    ]
    for n, (path, body, words) in enumerate(cases):
        r = stack.api.http.post(path, json=body, headers={**auth(key), "Idempotency-Key": f"bad-{n}"})
        assert r.status_code == 400, (body, r.text)
        assert r.json()["status"] == "error" and words in r.json()["message"], (body, r.json())
    missing = stack.api.http.post("/api/v1/orders", json={**order, "quantity": 1}, headers=auth(key))
    assert missing.status_code == 400 and "idempotency key" in missing.json()["message"]
    assert stack.api.http.post("/api/v1/runs/abc/exit", headers={**auth(key), "Idempotency-Key": "p"}
                               ).status_code == 400
    assert counts(stack.db) == before
    # a valid quick order by API is one intent, placed once at the broker; its replay is the same intent
    good = {**order, "quantity": 1}
    first = stack.api.http.post("/api/v1/orders", json=good, headers={**auth(key), "Idempotency-Key": "qo-1"})
    second = stack.api.http.post("/api/v1/orders", json=good, headers={**auth(key), "Idempotency-Key": "qo-1"})
    assert first.status_code == 200 and second.json() == first.json(), first.text
    cid = first.json()["data"]["client_order_id"]
    assert wait_for(lambda: [o for o in stack.sim.orders() if o.get("account") == stack.names[acct]
                             and o.get("symbol") == "SBIN" and o.get("orderid")], 15)
    with stack.db.read() as s:
        assert s.scalar(select(func.count()).select_from(OrderIntent).where(
            OrderIntent.client_order_id == cid, OrderIntent.source == "api")) == 1


def test_auth_when_the_key_is_missing_wrong_or_revoked_then_401_and_failures_are_limited_per_address(stack,
                                                                                                     tmp_path):
    api = ApiProcess(stack.db.path, tmp_path / "api-auth.log")  # its own auth tier: the loop below exhausts it
    try:
        key_id, key = create_key(stack.db, "e2e auth")
        assert api.http.get("/api/v1/accounts", headers=auth(key)).status_code == 200
        for headers in ({}, auth("amk_" + "0" * 48), auth("not a key"), {"Authorization": "Bearer amk_12"}):
            r = api.http.get("/api/v1/accounts", headers=headers)
            assert r.status_code == 401 and r.json()["status"] == "error" and "API key" in r.json()["message"]
        revoke_key(stack.db, key_id)
        assert api.http.get("/api/v1/accounts", headers=auth(key)).status_code == 401
        codes = [api.http.get("/api/v1/accounts", headers=auth("amk_" + "1" * 48)).status_code for _ in range(20)]
        assert codes.count(401) == 10 - 5 and set(codes[5:]) == {429}, codes  # 5 failures above, 10 per minute
        assert 1 <= int(api.http.get("/api/v1/accounts").headers["Retry-After"]) <= 60
        _, good = create_key(stack.db, "e2e auth 2")
        assert api.http.get("/api/v1/accounts", headers=auth(good)).status_code == 200  # a good key still works
    finally:
        api.stop()
    logs = api.logs()
    assert key not in logs and good not in logs and "GET /api/v1/accounts 401" in logs


def test_rate_limit_when_one_key_loops_200_requests_then_100_pass_and_the_rest_are_429_with_retry_after(stack):
    _, key = create_key(stack.db, "e2e rate")
    answers = [stack.api.http.get("/api/v1/strategies", headers=auth(key)) for _ in range(200)]
    codes = [a.status_code for a in answers]
    assert codes[:100] == [200] * 100 and codes[100:] == [429] * 100, codes
    late = answers[-1]
    assert late.json()["status"] == "error" and "api tier" in late.json()["message"]
    assert 1 <= int(late.headers["Retry-After"]) <= 60
    _, other = create_key(stack.db, "e2e rate other")
    assert stack.api.http.get("/api/v1/strategies", headers=auth(other)).status_code == 200  # per key
    # the heavy tier: 20 fan-out calls a minute per key, counted even when the call is refused as bad input
    heavy = [stack.api.http.post("/api/v1/execute", json={"strategy": "none", "account_ids": [1]},
                                 headers={**auth(other), "Idempotency-Key": f"h{n}"}).status_code for n in range(25)]
    assert heavy == [400] * 20 + [429] * 5, heavy


def test_openapi_when_fetched_then_every_endpoint_is_documented(stack):
    spec = stack.api.http.get("/openapi.json").json()
    assert {"/api/v1/execute", "/api/v1/orders", "/api/v1/positions", "/webhook/{token}"} <= set(spec["paths"])
    assert stack.api.http.get("/docs").status_code == 200
