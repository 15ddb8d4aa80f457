"""Webhooks end to end: alerts posted to the real API process, carried out by the real service against the
simulator. A TradingView-style enter alert executes once on every account of its rule (a replayed delivery, by
alert id or by body within the window, places nothing new); an exit alert exits the live runs; a Chartink symbol
list becomes fixed-size orders; every alert is logged; wrong or revoked tokens are 401 and tokens stay out of the
log."""
from __future__ import annotations

import time

from db.strategies import LegSpec, save_strategy
from db.vocab import AlertOutcome
from db.webhooks import RuleKind, create_rule, list_alerts, revoke_rule
from tests.harness import wait_for


def tagged(stack, tag: str) -> list[dict]:
    return [o for o in stack.placed() if o.get("strategy") == tag]


def test_webhook_when_an_enter_alert_is_delivered_twice_then_one_execution_and_exit_alert_exits_the_runs(stack):
    sid = save_strategy(stack.db, "wh straddle", "NIFTY", "NSE_INDEX", stack.expiry,
                        [LegSpec("CE", "SELL"), LegSpec("PE", "SELL")])
    _, token = create_rule(stack.db, "tv straddle", RuleKind.STRATEGY, sorted(stack.names), strategy_id=sid)
    alert = {"strategy": "wh straddle", "action": "enter", "alert_id": "tv-42"}
    r = stack.api.http.post(f"/webhook/{token}", json=alert)
    assert r.status_code == 200, r.text
    first = r.json()["data"]
    assert first["outcome"] == AlertOutcome.DONE and len(first["run_ids"]) == 3
    again = stack.api.http.post(f"/webhook/{token}", json=alert)  # the sender retried the delivery
    assert again.status_code == 200 and again.json()["data"]["outcome"] == AlertOutcome.DUPLICATE
    assert again.json()["data"]["run_ids"] == first["run_ids"]
    assert wait_for(lambda: stack.sc.runs_in(first["run_ids"], ("active",)), 30), stack.sc.tail()
    time.sleep(1.0)  # a second execution, had one been written, has every chance to reach the broker
    assert len(tagged(stack, "wh straddle")) == 6  # 2 legs x 3 accounts, each once
    # exit alert, as a form body without an id: exits the live runs; its retried delivery does nothing new
    ex = stack.api.http.post(f"/webhook/{token}", data={"strategy": "wh straddle", "action": "exit"})
    assert ex.status_code == 200 and sorted(ex.json()["data"]["run_ids"]) == sorted(first["run_ids"]), ex.text
    dup = stack.api.http.post(f"/webhook/{token}", data={"strategy": "wh straddle", "action": "exit"})
    assert dup.json()["data"]["outcome"] == AlertOutcome.DUPLICATE
    assert wait_for(lambda: stack.sc.runs_in(first["run_ids"], ("exited",)), 30), stack.sc.tail()
    assert len(tagged(stack, "wh straddle")) == 12  # one exit per leg
    bad = stack.api.http.post(f"/webhook/{token}", json={"strategy": "other", "action": "enter"})
    assert bad.status_code == 400 and bad.json()["status"] == "error" and "other" in bad.json()["message"]
    log = list_alerts(stack.db)
    mine = log[log["rule"] == "tv straddle"]
    assert list(mine["outcome"])[::-1] == [AlertOutcome.DONE, AlertOutcome.DUPLICATE, AlertOutcome.DONE,
                                           AlertOutcome.DUPLICATE, AlertOutcome.ERROR]
    assert len(tagged(stack, "wh straddle")) == 12


def test_webhook_when_chartink_sends_symbols_then_fixed_size_orders_on_the_rules_accounts_once(stack):
    accts = sorted(stack.names)[1:]
    _, token = create_rule(stack.db, "chartink breakout", RuleKind.SYMBOLS, accts, order_action="BUY", quantity=3,
                           exchange="NSE", product="MIS")
    body = {"stocks": "INFY,TCS,NOSUCH", "trigger_prices": "1600.5,3200,1", "triggered_at": "2:34 pm",
            "scan_name": "Breakout", "scan_url": "breakout", "alert_name": "Breakout alert",
            "webhook_url": f"http://127.0.0.1/webhook/{token}"}
    r = stack.api.http.post(f"/webhook/{token}", json=body)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["outcome"] == AlertOutcome.PARTIAL and len(data["orders"]) == 4 and len(data["refused"]) == 2
    assert "Unknown symbol NOSUCH" in data["refused"][0]["reason"]
    assert stack.api.http.post(f"/webhook/{token}", json=body).json()["data"]["outcome"] == AlertOutcome.DUPLICATE
    assert wait_for(lambda: len(tagged(stack, "chartink breakout")) >= 4, 15)
    time.sleep(0.5)
    orders = tagged(stack, "chartink breakout")
    assert sorted((o["account"], o["symbol"], int(o["quantity"])) for o in orders) == sorted(
        (stack.names[a], sym, 3) for a in accts for sym in ("INFY", "TCS"))
    logged = list_alerts(stack.db)
    assert token not in " ".join(logged["body"]) and "***" in logged["body"].iloc[1]


def test_webhook_when_the_token_is_wrong_or_revoked_then_401_and_tokens_never_logged(stack):
    rule_id, token = create_rule(stack.db, "tv revoked", RuleKind.SYMBOLS, sorted(stack.names)[:1], quantity=1)
    wrong = stack.api.http.post("/webhook/" + "0" * 48, json={"stocks": "SBIN"})
    assert wrong.status_code == 401 and wrong.json() == {"status": "error",
                                                         "message": "Unknown or revoked webhook token"}
    revoke_rule(stack.db, rule_id)
    assert stack.api.http.post(f"/webhook/{token}", json={"stocks": "SBIN"}).status_code == 401
    logs = stack.api.logs()
    assert "POST /webhook/" in logs and token not in logs and token[8:] not in logs
