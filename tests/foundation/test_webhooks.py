"""Webhook rules on a real SQLite file (db/webhooks.py): body parsing, de-duplication by alert id and by body
within the window, entries refused while the service is down (exits still requested), and refusals that write
nothing but the alert's log row."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.commands import CommandError
from db.models import ControlCommand, OrderIntent, StrategyRun, WebhookAlert
from db.strategies import LegSpec, save_strategy
from db.vocab import AlertOutcome
from db.webhooks import RuleKind, create_rule, parse_body, receive, rule_for_token
from tests.ui import ui_builders as b


@pytest.fixture
def rule(db):
    acct = b.seed_account(db, "alpha")
    expiry = b.seed_instruments(db)
    b.seed_prices(db, expiry=expiry)
    sid = save_strategy(db, "tv straddle", "NIFTY", "NSE_INDEX", expiry, [LegSpec("CE", "SELL"), LegSpec("PE", "SELL")])
    _, token = create_rule(db, "tv", RuleKind.STRATEGY, [acct], strategy_id=sid)
    return rule_for_token(db, token)


def count(db, model) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_parse_body_when_json_form_or_text_then_a_mapping_and_a_json_list_is_refused():
    assert parse_body(b'{"action": "enter"}') == {"action": "enter"}
    assert parse_body(b"action=exit&strategy=x", "application/x-www-form-urlencoded") == {"action": "exit",
                                                                                         "strategy": "x"}
    assert parse_body(b"BUY NIFTY now") == {"message": "BUY NIFTY now"}
    with pytest.raises(CommandError):
        parse_body(b"[1, 2]")


def test_receive_when_the_same_alert_id_comes_again_then_one_execution(db, rule):
    first = receive(db, rule, b'{"action": "enter", "alert_id": "a1"}', dedupe_s=0, entries_ok=True)
    again = receive(db, rule, b'{"action": "enter", "alert_id": "a1", "extra": 1}', dedupe_s=0, entries_ok=True)
    assert first.outcome == AlertOutcome.DONE and again.outcome == AlertOutcome.DUPLICATE
    assert again.data["run_ids"] == first.data["run_ids"] and count(db, StrategyRun) == 1
    assert count(db, OrderIntent) == 2 and count(db, WebhookAlert) == 2


def test_receive_when_a_body_repeats_then_a_duplicate_inside_the_window_and_new_outside_it(db, rule):
    body = b'{"action": "enter"}'
    assert receive(db, rule, body, dedupe_s=60, entries_ok=True).outcome == AlertOutcome.DONE
    assert receive(db, rule, body, dedupe_s=60, entries_ok=True).outcome == AlertOutcome.DUPLICATE
    assert count(db, StrategyRun) == 1
    assert receive(db, rule, body, dedupe_s=0, entries_ok=True).outcome == AlertOutcome.DONE  # the window passed
    assert count(db, StrategyRun) == 2


def test_receive_when_the_service_is_down_then_entry_refused_and_logged_but_exit_requested(db, rule):
    receive(db, rule, b'{"action": "enter", "alert_id": "e1"}', dedupe_s=60, entries_ok=True)
    down = receive(db, rule, b'{"action": "enter", "alert_id": "e2"}', dedupe_s=60, entries_ok=False)
    assert down.outcome == AlertOutcome.ERROR and "service is down" in down.message
    assert count(db, StrategyRun) == 1
    out = receive(db, rule, b'{"action": "exit", "alert_id": "x1"}', dedupe_s=60, entries_ok=False)
    assert out.outcome == AlertOutcome.DONE and len(out.data["run_ids"]) == 1 and count(db, ControlCommand) == 1
    retry = receive(db, rule, b'{"action": "enter", "alert_id": "e2"}', dedupe_s=60, entries_ok=True)
    assert retry.outcome == AlertOutcome.DONE  # a refused alert is not a duplicate: its retry is carried out


@pytest.mark.parametrize("body, words", [
    (b'{"strategy": "other", "action": "enter"}', "names strategy 'other'"),
    (b'{"action": "dance"}', "action must be enter or exit"),
    (b'{}', "action must be enter or exit"),
    (b'[1]', "must be a JSON object"),
])
def test_receive_when_the_alert_is_bad_then_logged_with_the_reason_and_nothing_else_written(db, rule, body, words):
    res = receive(db, rule, body, dedupe_s=60, entries_ok=True)
    assert res.outcome == AlertOutcome.ERROR and words in res.message
    assert count(db, StrategyRun) == 0 and count(db, OrderIntent) == 0 and count(db, WebhookAlert) == 1


def test_create_rule_when_input_is_bad_then_refused_and_nothing_written(db):
    acct = b.seed_account(db, "alpha")
    for kwargs in (dict(name="", kind=RuleKind.SYMBOLS, account_ids=[acct], quantity=1),
                   dict(name="r", kind="nope", account_ids=[acct]),
                   dict(name="r", kind=RuleKind.SYMBOLS, account_ids=[], quantity=1),
                   dict(name="r", kind=RuleKind.SYMBOLS, account_ids=[999], quantity=1),
                   dict(name="r", kind=RuleKind.SYMBOLS, account_ids=[acct], quantity=1.5),
                   dict(name="r", kind=RuleKind.STRATEGY, account_ids=[acct], strategy_id=42)):
        with pytest.raises(CommandError):
            create_rule(db, **kwargs)
    assert rule_for_token(db, "0" * 48) is None and rule_for_token(db, "x") is None


def test_rule_when_its_strategy_was_deleted_then_alerts_refused_and_no_new_rule_for_it(db, rule):
    from db.strategy_admin import delete_strategy
    delete_strategy(db, rule.strategy_id)
    done = receive(db, rule, b'{"action": "enter", "alert_id": "d1"}', dedupe_s=0, entries_ok=True)
    assert done.outcome == AlertOutcome.ERROR and "no longer exists" in done.message
    assert count(db, StrategyRun) == 0
    with pytest.raises(CommandError, match="Unknown strategy"):
        create_rule(db, "tv2", RuleKind.STRATEGY, [1], strategy_id=rule.strategy_id)


def test_receive_when_an_mis_strategy_alert_comes_after_the_cut_off_then_refused_and_its_exit_still_requested(db):
    from datetime import timedelta

    from db import clock
    from tests.market_clock import offset_to
    acct = b.seed_account(db, "alpha")
    expiry = b.seed_instruments(db)
    b.seed_prices(db, expiry=expiry)
    sid = save_strategy(db, "mis straddle", "NIFTY", "NSE_INDEX", expiry, [LegSpec("CE", "SELL")], product="MIS")
    _, token = create_rule(db, "mis", RuleKind.STRATEGY, [acct], strategy_id=sid)
    rule = rule_for_token(db, token)
    assert receive(db, rule, b'{"action": "enter", "alert_id": "m1"}', dedupe_s=60,
                   entries_ok=True).outcome == AlertOutcome.DONE  # 10:30 IST: the session's clock
    clock.set_offset(timedelta(seconds=offset_to("2026-12-01 15:16:00")))
    late = receive(db, rule, b'{"action": "enter", "alert_id": "m2"}', dedupe_s=60, entries_ok=True)
    assert late.outcome == AlertOutcome.ERROR and "no new MIS entries after 15:15 IST" in late.message
    assert count(db, StrategyRun) == 1 and count(db, OrderIntent) == 1
    out = receive(db, rule, b'{"action": "exit", "alert_id": "m3"}', dedupe_s=60, entries_ok=True)
    assert out.outcome == AlertOutcome.DONE and len(out.data["run_ids"]) == 1 and count(db, ControlCommand) == 1
