"""Per-account multipliers and the margin gate of Execute (db/strategies.execute_plan, db/margin.gate), on a real
SQLite file. The service's answers are written with the service's own function (db.margin.record_checks)."""
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from db.commands import CommandError, control_payload, enqueue_control
from db.margin import CheckResult, plan_of, record_checks
from db.models import AuditLog, Instrument, MarginCheck, OrderIntent, StrategyRun, utcnow
from db.strategies import LegSpec, execute_plan, execute_strategy, preview_execution, resolved_strategy, save_strategy
from tests.builders import make_account


@pytest.fixture
def setup(seeded_db):
    with seeded_db.read() as s:
        expiry = s.scalar(select(Instrument.expiry).where(Instrument.instrumenttype == "CE").limit(1))
    a1, a2 = make_account(seeded_db, "a1"), make_account(seeded_db, "a2")
    sid = save_strategy(seeded_db, "straddle", "NIFTY", "NSE_INDEX", expiry, [LegSpec("CE", "SELL", 1),
                                                                              LegSpec("PE", "SELL", 1)])
    return seeded_db, sid, a1, a2


def _answer(db, sid, mult: dict, answers: dict) -> int:
    cid = enqueue_control(db, "margin_check", {"strategy_id": sid, "accounts": [[a, m] for a, m in mult.items()]})
    _, legs = resolved_strategy(db, sid)
    with db.write() as s:
        record_checks(s, cid, sid, [CheckResult(a, m, plan_of(legs, m), *answers[a]) for a, m in mult.items()])
    return cid


def _count(db, model, *where):
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


@pytest.mark.parametrize("bad", [0, 51, -1, 2.5, "2", True, None])
def test_execute_when_multiplier_out_of_range_then_clear_error_and_nothing_written(setup, bad):
    db, sid, a1, _ = setup
    with pytest.raises(CommandError, match="Multiplier for account .* whole number from 1 to 50"):
        execute_strategy(db, sid, [a1], multipliers={a1: bad})
    assert _count(db, StrategyRun) == 0 and _count(db, OrderIntent) == 0


def test_execute_when_multipliers_then_quantities_scale_per_account_and_are_stored_on_runs(setup):
    db, sid, a1, a2 = setup
    rows = preview_execution(db, sid, {a1: 1, a2: 30})
    assert {(r["account_id"], r["quantity"], r["orders"]) for r in rows} == {(a1, 65, 1), (a2, 1950, 2)}
    _, runs = execute_strategy(db, sid, [a1, a2], multipliers={a1: 1, a2: 30})
    with db.read() as s:
        assert {(r.account_id, r.multiplier) for r in s.scalars(select(StrategyRun))} == {(a1, 1), (a2, 30)}
        q = dict.fromkeys((a1, a2))
        for a in q:
            q[a] = sorted(s.scalars(select(OrderIntent.requested_qty).where(OrderIntent.account_id == a)))
    assert q == {a1: [65, 65], a2: [195, 195, 1755, 1755]}  # freeze splitting (1800) per account


def test_execute_when_margin_short_then_that_account_refused_with_shortfall_and_audited(setup):
    db, sid, a1, a2 = setup
    cid = _answer(db, sid, {a1: 1, a2: 2}, {a1: (150_000.0, 1e6), a2: (300_000.0, 100_000.0)})
    res = execute_plan(db, sid, [a1, a2], multipliers={a1: 1, a2: 2}, margin_check_id=cid)
    assert list(res.refused) == [a2] and "short by ₹200,000" in res.refused[a2]
    assert len(res.run_ids) == 1 and _count(db, OrderIntent, OrderIntent.account_id == a2) == 0
    assert _count(db, OrderIntent, OrderIntent.account_id == a1) == 2
    assert _count(db, AuditLog, AuditLog.action == "margin_refused") == 1


def test_execute_when_margin_not_priced_then_account_not_refused(setup):
    db, sid, a1, _ = setup
    cid = _answer(db, sid, {a1: 1}, {a1: (None, None, "margin calculation not available")})
    res = execute_plan(db, sid, [a1], margin_check_id=cid)
    assert not res.refused and len(res.run_ids) == 1


@pytest.mark.parametrize("change, msg", [
    ("multiplier", "does not cover account 'a1' at 2×"),
    ("age", "older than 120 s"),
    ("strikes", "strikes moved"),
])
def test_execute_when_margin_check_does_not_match_then_check_again_and_nothing_written(setup, change, msg):
    db, sid, a1, _ = setup
    cid = _answer(db, sid, {a1: 1}, {a1: (1.0, 2.0)})
    with db.write() as s:
        if change == "age":
            s.execute(update(MarginCheck).values(checked_at=utcnow() - timedelta(seconds=121)))
        if change == "strikes":
            s.execute(update(MarginCheck).values(plan_json='[["NIFTYX", "SELL", 65]]'))
    with pytest.raises(CommandError, match=msg):
        execute_plan(db, sid, [a1], multipliers={a1: 2 if change == "multiplier" else 1}, margin_check_id=cid)
    assert _count(db, StrategyRun) == 0


@pytest.mark.parametrize("payload, msg", [
    ({"strategy_id": 1}, "needs 'accounts'"),
    ({"strategy_id": 1, "accounts": [[1, 0]]}, "Multiplier for account 1"),
    ({"strategy_id": 1, "accounts": [[1, 1], [1, 2]]}, "twice"),
    ({"strategy_id": "1", "accounts": [[1, 1]]}, "whole-number 'strategy_id'"),
    ({"strategy_id": 1, "accounts": [1]}, "pairs"),
])
def test_margin_check_payload_when_bad_then_refused(payload, msg):
    with pytest.raises(CommandError, match=msg):
        control_payload("margin_check", payload)
