import pytest
from sqlalchemy import select

from db.commands import OrderRequest, enqueue_order
from db.intents import claim_path, next_queued_view, transition
from db.models import OrderEvent, OrderIntent
from db.order_fsm import InvalidTransition, Status
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
