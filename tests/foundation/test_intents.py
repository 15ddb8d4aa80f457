import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from db.commands import OrderRequest, enqueue_order
from db.intents import (NEXT_QUEUED_SQL, IntentView, UnreadableIntent, accounts_with_intents, claim_path,
                        deny_unsendable, intent_problem, next_queued_view, transition)
from db.models import OrderEvent, OrderIntent, utcnow
from db.order_fsm import InvalidTransition, Status
from db.rawsql import raw_cursor, sql_ts
from db.vocab import ConvertState
from tests.builders import make_account

Q, C, SENT, D = Status.QUEUED, Status.CLAIMED, Status.SENT, Status.DENIED


@pytest.fixture
def two_intents(seeded_db):
    acct = make_account(seeded_db)
    a, _ = enqueue_order(seeded_db, OrderRequest(acct, "SBIN", "NSE", "SELL", 1), "later")
    b, _ = enqueue_order(seeded_db, OrderRequest(acct, "SBIN", "NSE", "BUY", 1), "urgent", priority=0)
    return seeded_db, acct, a, b


def events(db, iid):
    with db.read() as s:
        return [(e.from_status, e.to_status) for e in s.scalars(
            select(OrderEvent).where(OrderEvent.intent_id == iid).order_by(OrderEvent.id))]


def test_next_queued_when_priorities_differ_then_most_urgent_first(two_intents):
    db, acct, a, b = two_intents
    with db.read() as s:
        assert next_queued_view(s, acct).id == b
        assert next_queued_view(s, acct + 1) is None


def test_claim_path_when_claimed_twice_then_only_the_first_wins_with_one_event_per_step(two_intents):
    db, acct, a, b = two_intents
    with db.write() as s:
        first = claim_path(s, b, [Q, C, SENT], "dispatcher", "placeorder sent", claimed_by="w1")
        second = claim_path(s, b, [Q, C, SENT], "dispatcher", "placeorder sent", claimed_by="w2")
    assert (first, second) == (True, False)
    with db.read() as s:
        row = s.get(OrderIntent, b)
    assert (row.status, row.claimed_by) == ("sent", "w1") and row.claimed_at and row.sent_at
    assert events(db, b) == [("queued", "claimed"), ("claimed", "sent")]
    with db.read() as s:
        assert next_queued_view(s, acct).id == a  # the sent one is no longer offered


def test_claim_path_when_a_step_is_not_allowed_then_nothing_changes(two_intents):
    db, _, a, _ = two_intents
    with pytest.raises(InvalidTransition):
        with db.write() as s:
            claim_path(s, a, [Q, SENT], "dispatcher")
    with db.write() as s:
        assert claim_path(s, a, [Q, C, D], "dispatcher", "account deactivated")
        assert not transition(s, a, Q, C, "dispatcher")
    assert events(db, a) == [("queued", "claimed"), ("claimed", "denied")]


def _spoil(db, iid, col, value):
    with db.write() as s:
        raw_cursor(s).execute(f"UPDATE order_intents SET {col} = ? WHERE id = ?", (value, iid))


def test_next_queued_when_created_at_unparseable_then_unreadable_intent_names_the_row_and_field(two_intents):
    db, acct, a, b = two_intents
    _spoil(db, b, "created_at", "garbage")
    with db.read() as s:
        with pytest.raises(UnreadableIntent) as err:
            next_queued_view(s, acct)
    assert err.value.intent_id == b
    assert err.value.reason == "unreadable intent row: created_at 'garbage' is not a timestamp"


def test_deny_unsendable_when_row_unreadable_then_denied_readable_and_original_kept_in_the_event(two_intents):
    db, acct, a, b = two_intents
    _spoil(db, b, "created_at", "garbage")
    _spoil(db, b, "claimed_at", 7)
    with db.write() as s:
        assert deny_unsendable(s, b, "unreadable intent row: created_at 'garbage' is not a timestamp", "dispatcher")
        assert not deny_unsendable(s, b, "again", "dispatcher")  # once: it is no longer queued
        assert next_queued_view(s, acct).id == a  # the row behind it
    with db.read() as s:
        row = s.get(OrderIntent, b)  # loads through the ORM again
        event = s.scalar(select(OrderEvent).where(OrderEvent.intent_id == b))
    assert row.status == "denied" and row.created_at is not None and row.claimed_at is None
    assert (event.from_status, event.to_status) == ("queued", "denied")
    assert json.loads(event.payload) == {"unreadable": {"created_at": "garbage", "claimed_at": 7}}


def _view(**over) -> IntentView:
    base = dict(id=1, client_order_id="c", account_id=1, run_id=None, execution_id=None, purpose="manual",
                source="ui", strategy_tag="t", symbol="SBIN", exchange="NSE", action="BUY", requested_qty=1,
                pricetype="MARKET", product="MIS", limit_price=0.0, trigger_price=0.0, status="queued",
                broker_order_id=None, created_at=None, sent_at=None)
    return IntentView(**{**base, **over})


@pytest.mark.parametrize("over", [
    {}, dict(pricetype="LIMIT", limit_price=101.5), dict(pricetype="SL", limit_price=100, trigger_price=99),
    dict(pricetype="SL-M", trigger_price=99), dict(exchange="NFO", product="NRML", action="SELL", requested_qty=65),
    dict(limit_price=5.0),  # MARKET with a leftover price: the broker ignores it, not nonsense
])
def test_intent_problem_when_intent_sane_then_empty(over):
    assert intent_problem(_view(**over)) == ""


@pytest.mark.parametrize("over, fragment", [
    (dict(requested_qty=0), "quantity 0 (must be a whole number > 0)"),
    (dict(requested_qty=2.5), "quantity 2.5"), (dict(requested_qty="2"), "quantity '2'"),
    (dict(requested_qty=True), "quantity True"),
    (dict(limit_price=float("nan")), "price nan"), (dict(trigger_price=float("inf")), "trigger price inf"),
    (dict(limit_price=None), "price None"), (dict(limit_price=-0.05), "price -0.05"),
    (dict(pricetype="LIMIT"), "LIMIT order with price 0.0"), (dict(pricetype="SL", limit_price=10), "trigger"),
    (dict(action="SHORT"), "action 'SHORT'"), (dict(exchange="NASDAQ"), "exchange 'NASDAQ'"),
    (dict(product="BO"), "product 'BO'"), (dict(pricetype="ICEBERG"), "price type 'ICEBERG'"),
    (dict(symbol=""), "symbol ''"),
])
def test_intent_problem_when_intent_is_nonsense_then_reason(over, fragment):
    reason = intent_problem(_view(**over))
    assert reason.startswith("invalid intent: ") and fragment in reason


def _settled_history(db, acct: int, like: int, n: int) -> None:
    """``n`` filled intents of the account, copies of intent ``like`` (a month or two of an active account)."""
    with db.write() as s:
        cur = raw_cursor(s)
        cols = [r[1] for r in cur.execute("PRAGMA table_info(order_intents)") if r[1] != "id"]
        row = dict(zip(cols, cur.execute(f"SELECT {', '.join(cols)} FROM order_intents WHERE id = ?",
                                         (like,)).fetchone(), strict=True))
        cur.executemany(f"INSERT INTO order_intents ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [[{**row, "client_order_id": f"h{i}", "status": Status.FILLED.value,
                           "broker_order_id": f"B{i}"}[c] for c in cols] for i in range(n)])


def _vm_steps(db, read):
    """(``read(s)``, SQLite VM instructions / 10 it took) on a read session."""
    steps = [0]

    def count():
        steps[0] += 1
        return 0
    with db.read() as s:
        con = raw_cursor(s).connection
        con.set_progress_handler(count, 10)
        try:
            got = read(s)
        finally:
            con.set_progress_handler(None, 10)
    return got, steps[0]


def test_next_queued_when_the_account_has_a_long_history_then_finding_it_costs_no_more(two_intents):
    """Every order's claim (the dispatcher's and a risk exit's) asks for the account's next queued intent: it read
    every intent the account ever had (3.98 ms of a 20,000-intent account's exit transaction, against 0.36 ms
    with the queue index)."""
    db, acct, a, b = two_intents
    view, fresh = _vm_steps(db, lambda s: next_queued_view(s, acct))
    assert view.id == b
    _settled_history(db, acct, a, 3000)
    view, grown = _vm_steps(db, lambda s: next_queued_view(s, acct))
    assert view.id == b and grown <= fresh + 5, (fresh, grown)
    with db.read() as s:
        plan = " ".join(r[3] for r in raw_cursor(s).execute(f"EXPLAIN QUERY PLAN {NEXT_QUEUED_SQL}", (acct,)))
    assert "ix_order_intents_queue" in plan and "TEMP B-TREE" not in plan, plan


def test_accounts_with_intents_when_history_grows_then_the_poller_reads_no_more_of_it(two_intents):
    """The poller asks every second which accounts have a working or a recently updated intent: it read every intent
    of every account (8.2 ms a call with 20,000)."""
    db, acct, a, b = two_intents
    since = utcnow() - timedelta(seconds=60)
    assert _vm_steps(db, lambda s: accounts_with_intents(s, (SENT.value,), since))[0] == {acct}  # b, a: updated now
    old = utcnow() - timedelta(days=3)
    with db.write() as s:
        raw_cursor(s).execute("UPDATE order_intents SET updated_at = ? WHERE account_id = ?", (sql_ts(old), acct))
    got, fresh = _vm_steps(db, lambda s: accounts_with_intents(s, (SENT.value,), since))
    assert got == set()
    _settled_history(db, acct, a, 3000)
    with db.write() as s:
        raw_cursor(s).execute("UPDATE order_intents SET updated_at = ? WHERE account_id = ?", (sql_ts(old), acct))
    got, grown = _vm_steps(db, lambda s: accounts_with_intents(s, (SENT.value,), since))
    assert got == set() and grown <= fresh + 5, (fresh, grown)
    with db.write() as s:
        assert transition(s, b, Q, Status.CANCELLED, "test", "cancelled")  # updated now: the account is due again
    assert _vm_steps(db, lambda s: accounts_with_intents(s, (SENT.value,), since))[0] == {acct}


def test_in_flight_check_and_left_conversions_when_history_grows_then_they_read_no_more_of_it(two_intents):
    """Each orderbook poll asks whether the account has an order in flight (db.broker_orders), each second the
    entry conversions ask for any left 'modifying' (db.conversions): one read every intent of the account, the
    other every intent of the table (10.3 and 3.7 ms with 20,000)."""
    from db.broker_orders import book_changes
    from db.conversions import left_modifying
    db, acct, a, b = two_intents

    def reads(s):
        return book_changes(s, acct, [], utcnow()).inserts, left_modifying(s)
    got, fresh = _vm_steps(db, reads)
    _settled_history(db, acct, a, 3000)
    assert _vm_steps(db, reads)[0] == got == ([], [])
    grown = _vm_steps(db, reads)[1]
    assert grown <= fresh + 5, (fresh, grown)
    with db.write() as s:
        raw_cursor(s).execute("UPDATE order_intents SET convert_state = ? WHERE id = ?",
                              (ConvertState.MODIFYING.value, a))
    with db.read() as s:
        assert [r[0] for r in left_modifying(s)] == [a]
