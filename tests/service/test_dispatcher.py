"""Dispatcher against the real simulator: exactly-once placement, error ladder, latency, fan-out."""
from __future__ import annotations

import time
import uuid

from sqlalchemy import select

from db.accounts import update_account
from db.commands import OrderRequest, enqueue_order
from db.models import Account, OrderIntent, ServiceLog
from services.common import ServiceContext
from services.dispatcher import OrderDispatcher
from services.reconciler import Reconciler
from tests.builders import seed_instruments
from tests.service.fixtures_orders import (  # noqa: F401
    add_intent, events, fast_settings, intent, octx, order_sim, placed_at_sim, sim_account, wait_for)


def test_dispatch_when_queued_then_placed_with_broker_id(db, octx, order_sim):
    acct, name = sim_account(db, order_sim)
    iid = add_intent(db, acct)
    OrderDispatcher(octx).run_once()
    row = intent(db, iid)
    placed = placed_at_sim(order_sim, name)
    assert row.status == "placed" and len(placed) == 1
    assert row.broker_order_id == placed[0]["orderid"]
    assert [e[1] for e in events(db, iid)] == ["claimed", "sent", "placed"]


def test_dispatch_when_enqueued_while_running_then_picked_up_without_a_wake(db, order_sim):
    """The poll loop alone finds new rows (the UI process cannot call wake()). Latency: bench/bench_enqueue.py."""
    ctx = ServiceContext(db, fast_settings(service__dispatch_poll_s=0.05))
    acct, name = sim_account(db, order_sim)
    ctx.client(acct)  # warm the client cache: the measurement is the queue pick-up, not the key decrypt
    d = OrderDispatcher(ctx)
    d.start()
    try:
        time.sleep(0.1)
        for _ in range(5):
            iid = add_intent(db, acct)
            assert wait_for(lambda i=iid: intent(db, i).status == "placed", 3)
            row = intent(db, iid)
            assert row.sent_at >= row.created_at
            time.sleep(0.03)
    finally:
        d.stop()
        ctx.close()
    assert len(placed_at_sim(order_sim, name)) == 5


def test_double_submit_when_same_client_order_id_then_one_broker_order(db, octx, order_sim):
    seed_instruments(db)
    acct, name = sim_account(db, order_sim)
    req = OrderRequest(account_id=acct, symbol="SBIN", exchange="NSE", action="BUY", quantity=3)
    first, created1 = enqueue_order(db, req, "coid-123")
    second, created2 = enqueue_order(db, req, "coid-123")
    OrderDispatcher(octx).run_once()
    OrderDispatcher(octx).run_once()
    assert (first, created1, created2) == (second, True, False)
    assert len(placed_at_sim(order_sim, name)) == 1
    assert intent(db, first).status == "placed"


def test_rate_limited_when_429_then_requeued_backoff_and_placed_exactly_once(db, octx, order_sim):
    acct, name = sim_account(db, order_sim)
    order_sim.fault("http_429", endpoints=["placeorder"], account=name, count=2)
    iid = add_intent(db, acct)
    d = OrderDispatcher(octx)
    d.start()
    try:
        assert wait_for(lambda: intent(db, iid).status == "placed", 10)
    finally:
        d.stop()
    statuses = [e[1] for e in events(db, iid)]
    assert statuses.count("queued") == 2 and statuses[-1] == "placed"
    assert len(placed_at_sim(order_sim, name)) == 1


def test_timeout_after_accept_when_dispatched_then_unknown_then_reconciled_without_resend(db, octx, order_sim):
    acct, name = sim_account(db, order_sim)
    order_sim.fault("timeout_after_accept", endpoints=["placeorder"], account=name, delay_s=3, count=1)
    iid = add_intent(db, acct, qty=7)
    OrderDispatcher(octx).run_once()
    assert intent(db, iid).status == "unknown"
    res = Reconciler(octx, sent_grace_s=0).run_once()
    row, placed = intent(db, iid), placed_at_sim(order_sim, name)
    assert res["resolved"] == 1
    assert len(placed) == 1 and row.broker_order_id == placed[0]["orderid"]
    assert row.status == "filled"  # a MARKET order fills at once in the sandbox
    OrderDispatcher(octx).run_once()
    assert len(placed_at_sim(order_sim, name)) == 1
    assert octx.client(acct).calls["placeorder"] == 1


def test_http_500_when_placing_then_unknown_and_settled_rejected_since_sim_never_placed(db, octx, order_sim):
    # The simulator's http_500 fault answers before the order reaches its book (checked in simulator/rest.py),
    # so the honest outcome is "unknown" then "never placed" after N orderbook checks.
    acct, name = sim_account(db, order_sim)
    order_sim.fault("http_500", endpoints=["placeorder"], account=name, count=1)
    iid = add_intent(db, acct)
    OrderDispatcher(octx).run_once()
    assert intent(db, iid).status == "unknown"
    rec = Reconciler(octx, sent_grace_s=0)
    for _ in range(octx.settings.service.reconcile_max_checks):
        rec.run_once()
    row = intent(db, iid)
    assert row.status == "rejected" and "never placed" in row.status_reason
    assert placed_at_sim(order_sim, name) == []
    assert octx.client(acct).calls["placeorder"] == 1


def test_broker_rejection_when_invalid_order_then_rejected_with_message(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    iid = add_intent(db, acct, product="NRML")  # NRML on NSE equity: the sandbox rejects it
    OrderDispatcher(octx).run_once()
    row = intent(db, iid)
    assert row.status == "rejected" and "NRML" in row.status_reason


def test_auth_error_when_key_revoked_then_rejected_account_invalid_and_next_denied(db, octx, order_sim):
    acct, name = sim_account(db, order_sim)
    order_sim.fault("invalid_key", account=name)
    first = add_intent(db, acct)
    OrderDispatcher(octx).run_once()
    second = add_intent(db, acct)
    OrderDispatcher(octx).run_once()
    with db.read() as s:
        status = s.get(Account, acct).status
    assert intent(db, first).status == "rejected" and status == "invalid_key"
    assert intent(db, second).status == "denied"
    assert placed_at_sim(order_sim, name) == []


def test_inactive_account_when_dispatching_then_denied_with_reason_and_logged(db, octx, order_sim):
    acct, name = sim_account(db, order_sim)
    iid = add_intent(db, acct)
    update_account(db, acct, is_active=False)
    OrderDispatcher(octx).run_once()
    row = intent(db, iid)
    assert row.status == "denied" and "deactivated" in row.status_reason
    with db.read() as s:
        assert s.scalar(select(ServiceLog.id).where(ServiceLog.message.contains(f"intent {iid} denied")))
    assert placed_at_sim(order_sim, name) == []


def test_fan_out_when_4_legs_on_4_accounts_then_parallel_across_accounts_in_order_within(db, octx, order_sim):
    latency = 0.3  # broker-like latency: the DB cost per order (~7 ms) must not dominate the measurement
    accounts = [sim_account(db, order_sim, prefix="fan") for _ in range(4)]
    for _, name in accounts:
        order_sim.fault("latency", endpoints=["placeorder"], account=name, ms=int(latency * 1000))
    expected = {}
    for acct, name in accounts:
        legs = [add_intent(db, acct, symbol=sym, priority=p) for sym, p in
                (("TCS", 40), ("SBIN", 11), ("INFY", 30), ("RELIANCE", 12))]
        expected[name] = ["SBIN", "RELIANCE", "INFY", "TCS"]
        assert len(legs) == 4
    for acct, _ in accounts:
        octx.client(acct)
    t0 = time.monotonic()
    OrderDispatcher(octx).run_once()
    wall = time.monotonic() - t0
    single_account = 4 * latency
    assert wall <= 1.5 * single_account, wall
    for _, name in accounts:
        assert [o["symbol"] for o in placed_at_sim(order_sim, name)] == expected[name]
    with db.read() as s:
        assert set(s.scalars(select(OrderIntent.status))) == {"placed"}



def _exit_like_intents(db, d, acct):
    """What the risk manager does: write intents and claim the most urgent one in the same transaction."""
    with db.write() as s:
        for action, prio in (("SELL", 1), ("BUY", 0)):
            s.add(OrderIntent(client_order_id=uuid.uuid4().hex, account_id=acct, symbol="SBIN", exchange="NSE",
                              action=action, requested_qty=1, product="MIS", pricetype="MARKET",
                              strategy_tag="AlgoMirror", priority=prio, purpose="exit"))
        s.flush()
        return d.claim_next_in(s, acct)


def test_claim_next_in_when_exits_written_then_buy_claimed_in_that_transaction_and_all_sent_in_order(db, order_sim):
    """The risk manager's hand-off: the first exit is claimed in the transaction that writes it, a pool thread
    POSTs it and drains the rest. The loop polls every 1,000 s here, so only the hand-off can send anything."""
    ctx = ServiceContext(db, fast_settings(service__dispatch_poll_s=1000.0))
    acct, name = sim_account(db, order_sim)
    d = OrderDispatcher(ctx)
    d.start()
    try:
        view = _exit_like_intents(db, d, acct)
        assert view is not None and view.action == "BUY" and view.status == "sent"
        row = intent(db, view.id)
        assert row.status == "sent" and [e[1] for e in events(db, view.id)] == ["claimed", "sent"]
        assert acct in d.busy_accounts() and view.id in d.inflight_ids()  # reconciler and loop keep off
        d.send_claimed(view)
        assert wait_for(lambda: all(intent(db, i).status == "placed" for i in (view.id, view.id - 1)), 10)
        assert wait_for(lambda: acct not in d.busy_accounts() and not d.inflight_ids(), 5)
    finally:
        d.stop()
        ctx.close()
    assert [o["action"] for o in placed_at_sim(order_sim, name)] == ["BUY", "SELL"]


def test_claim_next_in_when_account_paused_or_being_drained_then_nothing_claimed(db, order_sim):
    ctx = ServiceContext(db, fast_settings(service__dispatch_poll_s=1000.0))
    acct, name = sim_account(db, order_sim)
    d = OrderDispatcher(ctx)
    d.start()
    try:
        d._set_backoff(acct)  # as after a 429: the account is paused
        assert _exit_like_intents(db, d, acct) is None
        d._backoff.clear()
        d._busy[acct] = None  # a drain (or another hand-off) owns the account
        assert _exit_like_intents(db, d, acct) is None
        d._busy.clear()
    finally:
        d.stop()
        ctx.close()
    with db.read() as s:
        assert {r.status for r in s.scalars(select(OrderIntent).where(OrderIntent.account_id == acct))} == {"queued"}
    assert placed_at_sim(order_sim, name) == []


def test_claim_next_in_when_transaction_rolls_back_then_released_to_the_loop_and_sent_once(db, order_sim):
    ctx = ServiceContext(db, fast_settings(service__dispatch_poll_s=1000.0))
    acct, name = sim_account(db, order_sim)
    iid = add_intent(db, acct)
    d = OrderDispatcher(ctx)
    d.start()
    try:
        view = None
        try:
            with db.write() as s:
                view = d.claim_next_in(s, acct)
                assert view is not None and view.id == iid
                raise RuntimeError("the exit transaction failed")
        except RuntimeError:
            d.release_claim(acct, view)  # wakes the loop: the intent is still queued, so it sends it
        assert wait_for(lambda: intent(db, iid).status == "placed", 10)
    finally:
        d.stop()
        ctx.close()
    assert [e[1] for e in events(db, iid)] == ["claimed", "sent", "placed"]  # the rolled-back claim left nothing
    assert len(placed_at_sim(order_sim, name)) == 1
