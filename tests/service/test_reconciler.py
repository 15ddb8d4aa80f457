"""Reconciler against the real simulator: crash recovery without ever re-sending."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select

from db.accounts import api_key_for
from db.models import BrokerOrder, ServiceLog, utcnow
from services.dispatcher import OrderDispatcher
from services.reconciler import Reconciler
from tests.harness import wait_for
from tests.service.fixtures_orders import (  # noqa: F401
    add_intent, events, intent, octx, order_sim, placed_at_sim, sim_account)


def place_directly(sim, db, account_id: int, tag: str = "AlgoMirror", symbol: str = "SBIN", qty: int = 1,
                   action: str = "BUY") -> str:
    """An order that reached the broker while our process died (or one placed outside AlgoMirror)."""
    r = sim.api("placeorder", {"apikey": api_key_for(db, account_id), "strategy": tag, "symbol": symbol,
                               "exchange": "NSE", "action": action, "quantity": qty, "pricetype": "MARKET",
                               "product": "MIS"})
    assert r.status_code == 200, r.text
    return r.json()["orderid"]


def test_crash_between_sent_and_placed_when_order_at_broker_then_linked_not_resent(db, octx, order_sim):
    acct, name = sim_account(db, order_sim)
    iid = add_intent(db, acct, qty=4, tag="Straddle", status="sent", sent_at=utcnow())
    oid = place_directly(order_sim, db, acct, tag="Straddle", qty=4)
    Reconciler(octx).startup()
    OrderDispatcher(octx).run_once()
    row = intent(db, iid)
    assert row.broker_order_id == oid and row.status == "filled"
    assert [o["orderid"] for o in placed_at_sim(order_sim, name)] == [oid]
    assert octx.client(acct).calls.get("placeorder", 0) == 0
    with db.read() as s:
        assert s.scalar(select(BrokerOrder.intent_id).where(BrokerOrder.broker_order_id == oid)) == iid


def test_crash_after_claim_when_restarted_then_requeued_and_placed_once(db, octx, order_sim):
    acct, name = sim_account(db, order_sim)
    iid = add_intent(db, acct, status="claimed", claimed_by="dead-worker", claimed_at=utcnow())
    Reconciler(octx).startup()
    assert intent(db, iid).status == "queued"
    OrderDispatcher(octx).run_once()
    assert intent(db, iid).status == "placed"
    assert len(placed_at_sim(order_sim, name)) == 1


def test_sent_when_nothing_at_broker_then_rejected_only_after_n_checks(db, octx, order_sim):
    acct, name = sim_account(db, order_sim)
    iid = add_intent(db, acct, status="sent", sent_at=utcnow() - timedelta(seconds=60))
    rec = Reconciler(octx)
    n = octx.settings.service.reconcile_max_checks
    for k in range(1, n):
        rec.run_once()
        row = intent(db, iid)
        assert (row.status, row.reconcile_checks) == ("sent", k)
    rec.run_once()
    row = intent(db, iid)
    assert row.status == "rejected"
    assert row.status_reason == f"not found at broker after {n} checks (never placed)"
    assert placed_at_sim(order_sim, name) == []


def test_sent_order_when_never_placed_then_the_trader_is_alerted_not_only_logged(db, octx, order_sim):
    """An order the service stopped while sending never reached the broker and is never resent: a strategy entry's
    run goes on without that leg (a short without its hedge), so the trader gets an alert, not only a log line."""
    from services.alerts import Notifier
    from tests.reliability.alert_hook import Webhook
    hook = Webhook()
    notifier = Notifier(db, replace(octx.settings.alerts, urls=hook.url))
    notifier.start()
    try:
        acct, _ = sim_account(db, order_sim)
        iid = add_intent(db, acct, status="sent", sent_at=utcnow() - timedelta(seconds=60))
        rec = Reconciler(octx, notifier=notifier)
        for _ in range(octx.settings.service.reconcile_max_checks):
            rec.run_once()
        assert intent(db, iid).status == "rejected"
        assert wait_for(lambda: hook.matching(f"intent {iid} ("), 10), hook.received
        assert "never reached the broker" in hook.matching(f"intent {iid}")[0][1]["message"]
    finally:
        notifier.stop()
        hook.close()


def test_young_sent_row_when_dispatcher_may_be_waiting_then_left_alone(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    iid = add_intent(db, acct, status="sent", sent_at=utcnow())
    rec = Reconciler(octx)  # default grace = connect + read timeouts + 5 s
    for _ in range(5):
        rec.run_once()
    assert (intent(db, iid).status, intent(db, iid).reconcile_checks) == ("sent", 0)


def test_unknown_when_order_outside_window_or_other_tag_then_not_matched(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    place_directly(order_sim, db, acct, tag="OtherTool")
    old = add_intent(db, acct, status="unknown", sent_at=utcnow() - timedelta(hours=3))
    other_tag = add_intent(db, acct, status="unknown", sent_at=utcnow())
    rec = Reconciler(octx)
    for _ in range(octx.settings.service.reconcile_max_checks):
        rec.run_once()
    assert intent(db, old).status == "rejected"
    assert intent(db, other_tag).status == "rejected"


def test_ambiguous_when_two_identical_orders_then_oldest_taken_and_warning_logged(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    first = place_directly(order_sim, db, acct)
    second = place_directly(order_sim, db, acct)
    iid = add_intent(db, acct, status="unknown", sent_at=utcnow())
    Reconciler(octx).run_once()
    assert intent(db, iid).broker_order_id == first
    with db.read() as s:
        msgs = list(s.scalars(select(ServiceLog.message).where(ServiceLog.level == "WARNING")))
        ext = s.scalar(select(BrokerOrder).where(BrokerOrder.broker_order_id == second))
    assert any("ambiguous" in m and first in m for m in msgs)
    assert ext.intent_id is None


def test_two_unknowns_when_two_matching_orders_then_each_linked_once(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    oids = {place_directly(order_sim, db, acct, qty=2), place_directly(order_sim, db, acct, qty=2)}
    a = add_intent(db, acct, qty=2, status="unknown", sent_at=utcnow())
    b = add_intent(db, acct, qty=2, status="unknown", sent_at=utcnow())
    Reconciler(octx).run_once()
    assert {intent(db, a).broker_order_id, intent(db, b).broker_order_id} == oids


def test_external_order_when_no_intent_then_adopted_as_external(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    oid = place_directly(order_sim, db, acct, tag="ManualTerminal")
    res = Reconciler(octx).run_once()
    with db.read() as s:
        row = s.scalar(select(BrokerOrder).where(BrokerOrder.broker_order_id == oid))
    assert res["adopted"] == 1 and row.external and row.intent_id is None
    assert row.order_status == "complete" and row.strategy_tag == "ManualTerminal"


def test_known_broker_id_when_unknown_then_status_taken_from_book(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    oid = place_directly(order_sim, db, acct)
    iid = add_intent(db, acct, status="unknown", sent_at=utcnow(), broker_order_id=oid)
    Reconciler(octx).run_once()
    row = intent(db, iid)
    assert row.status == "filled" and row.broker_avg_price and row.broker_avg_price > 0
    assert ("unknown", "filled", "reconciler") in events(db, iid)
