"""Dispatcher against the real simulator: exactly-once placement, error ladder, latency, fan-out."""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid

import pytest
from sqlalchemy import select

from db.accounts import update_account
from db.commands import OrderRequest, enqueue_order
from db.models import Account, Execution, OrderEvent, OrderIntent, ServiceLog, StrategyRun
from db.rawsql import raw_cursor
from services.context import ServiceContext
from services.dispatcher import OrderDispatcher
from services.reconciler import Reconciler
from tests.builders import seed_instruments
from tests.service.fixtures_md import make_run
from tests.service.fixtures_orders import (  # noqa: F401
    add_intent, events, fast_settings, intent, make_strategy_run, octx, order_sim, placed_at_sim, sim_account,
    wait_for)


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



@contextlib.contextmanager
def _hand_off_only(db, max_workers: int = 16):
    """A running dispatcher whose loop polls every 1,000 s: only the exit hand-off (send_claimed) sends anything."""
    ctx = ServiceContext(db, fast_settings(service__dispatch_poll_s=1000.0))
    d = OrderDispatcher(ctx, max_workers=max_workers)
    d.start()
    try:
        yield ctx, d
    finally:
        d.stop()
        ctx.close()


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
    acct, name = sim_account(db, order_sim)
    with _hand_off_only(db) as (ctx, d):
        view = _exit_like_intents(db, d, acct)
        assert view is not None and view.action == "BUY" and view.status == "sent"
        row = intent(db, view.id)
        assert row.status == "sent" and [e[1] for e in events(db, view.id)] == ["claimed", "sent"]
        assert acct in d.busy_accounts() and view.id in d.inflight_ids()  # reconciler and loop keep off
        d.send_claimed([view])
        assert wait_for(lambda: all(intent(db, i).status == "placed" for i in (view.id, view.id - 1)), 10)
        assert wait_for(lambda: acct not in d.busy_accounts() and not d.inflight_ids(), 5)
    assert [o["action"] for o in placed_at_sim(order_sim, name)] == ["BUY", "SELL"]


def test_send_claimed_when_a_connection_is_kept_alive_then_the_exit_goes_out_on_the_caller_thread(db, order_sim):
    """After the exit's commit its placeorder request is written by the committing thread (the market-data thread
    on a breach), not handed to a pool thread first: with the only pool thread busy reading another account's
    slow answer, the simulator still receives the exit at once; the pool thread records its outcome later."""
    acct, name = sim_account(db, order_sim)
    slow, slow_name = sim_account(db, order_sim, prefix="slow")
    order_sim.fault("latency", endpoints=["placeorder"], account=slow_name, ms=700)
    with _hand_off_only(db, max_workers=1) as (ctx, d):
        ctx.client(acct).placeorder(strategy="warm", symbol="SBIN", exchange="NSE", action="SELL", quantity=1)
        slow_view = _exit_like_intents(db, d, slow)
        d.send_claimed([slow_view])  # the one pool thread waits 0.7 s for this answer, then as long for the next
        view = _exit_like_intents(db, d, acct)
        t0 = time.monotonic()
        d.send_claimed([view])
        assert wait_for(lambda: len(placed_at_sim(order_sim, name)) == 2, 0.5)  # the warm-up and the exit's BUY
        assert time.monotonic() - t0 < 0.5 and intent(db, view.id).status == "sent"  # its answer is not read yet
        ids = (view.id, view.id - 1, slow_view.id, slow_view.id - 1)
        ok = wait_for(lambda: all(intent(db, i).status == "placed" for i in ids), 10)
        assert ok, [(i, intent(db, i).status, intent(db, i).status_reason) for i in ids]
    assert [o["action"] for o in placed_at_sim(order_sim, name)] == ["SELL", "BUY", "SELL"]
    assert [o["action"] for o in placed_at_sim(order_sim, slow_name)] == ["BUY", "SELL"]


def test_send_claimed_when_no_connection_is_open_then_the_caller_connects_at_once_and_sends(db, order_sim):
    """A breach long after the account's last order finds no kept-alive connection (the gateway closed it): the
    committing thread makes one (a quick connect: the simulator is on loopback) and writes the exit itself, so
    with the only pool thread busy on another account's slow answer the exit still reaches the simulator at once.
    Fails on the build before the quick connect: the exit waited 0.7 s for the pool thread."""
    acct, name = sim_account(db, order_sim)
    slow, slow_name = sim_account(db, order_sim, prefix="slow")
    order_sim.fault("latency", endpoints=["placeorder"], account=slow_name, ms=700)
    with _hand_off_only(db, max_workers=1) as (ctx, d):
        slow_view = _exit_like_intents(db, d, slow)
        d.send_claimed([slow_view])  # the one pool thread waits 0.7 s for this answer, then as long for the next
        view = _exit_like_intents(db, d, acct)
        assert ctx.client(acct).orders.opened == 0
        ctx.client(acct).orders.quick_connect_s = 1.0  # the 3 ms bound is not what this is about (loaded CI)
        d.send_claimed([view])
        assert wait_for(lambda: len(placed_at_sim(order_sim, name)) == 1, 0.5)  # the BUY, before 0.7 s
        assert ctx.client(acct).orders.opened == 1
        ids = (view.id, view.id - 1, slow_view.id, slow_view.id - 1)
        ok = wait_for(lambda: all(intent(db, i).status == "placed" for i in ids), 10)
        assert ok, [(i, intent(db, i).status, intent(db, i).status_reason) for i in ids]
    assert [o["action"] for o in placed_at_sim(order_sim, name)] == ["BUY", "SELL"]


def test_send_claimed_when_no_connection_can_be_made_quickly_then_a_pool_thread_posts_it_once(db, order_sim):
    """The calling thread never waits for a slow TCP connect (nor a rate token): when the quick connect cannot
    complete in time (here its bound is 0: never), the pool thread connects and POSTs, exactly once."""
    acct, name = sim_account(db, order_sim)
    with _hand_off_only(db) as (ctx, d):
        view = _exit_like_intents(db, d, acct)
        ctx.client(acct).orders.quick_connect_s = 0.0
        d.send_claimed([view])
        assert wait_for(lambda: all(intent(db, i).status == "placed" for i in (view.id, view.id - 1)), 10)
        assert ctx.client(acct).orders.opened == 1  # the pool thread's connection, used for both
    assert [o["action"] for o in placed_at_sim(order_sim, name)] == ["BUY", "SELL"]


def test_wait_idle_when_a_claimed_exit_is_being_posted_then_waits_for_its_outcome_and_no_longer(db, order_sim):
    """What a flatten started by a limit trip waits for: the trip's claimed first close POSTed and recorded."""
    acct, name = sim_account(db, order_sim)
    other, _ = sim_account(db, order_sim, prefix="idle")
    order_sim.fault("latency", endpoints=["placeorder"], account=name, ms=400)
    with _hand_off_only(db) as (ctx, d):
        view = _exit_like_intents(db, d, acct)
        d.send_claimed([view])
        t0 = time.monotonic()
        assert d.wait_idle([acct], 0.05) is False and time.monotonic() - t0 < 0.3  # bounded: the POST is slow
        assert d.wait_idle([other], 0.05) is True  # an account with nothing in flight does not wait at all
        assert d.wait_idle([other, acct], 10) is True
        # idle means both exits were posted and their outcomes recorded, not merely sent
        assert [intent(db, i).status for i in (view.id, view.id - 1)] == ["placed", "placed"]
        assert [o["action"] for o in placed_at_sim(order_sim, name)] == ["BUY", "SELL"]


def test_claim_next_in_when_account_paused_or_being_drained_then_nothing_claimed(db, order_sim):
    acct, name = sim_account(db, order_sim)
    with _hand_off_only(db) as (ctx, d):
        d._set_backoff(acct)  # as after a 429: the account is paused
        assert _exit_like_intents(db, d, acct) is None
        d._backoff.clear()
        d._busy[acct] = None  # a drain (or another hand-off) owns the account
        assert _exit_like_intents(db, d, acct) is None
        d._busy.clear()
    with db.read() as s:
        assert {r.status for r in s.scalars(select(OrderIntent).where(OrderIntent.account_id == acct))} == {"queued"}
    assert placed_at_sim(order_sim, name) == []


def test_claim_next_in_when_transaction_rolls_back_then_released_to_the_loop_and_sent_once(db, order_sim):
    acct, name = sim_account(db, order_sim)
    iid = add_intent(db, acct)
    with _hand_off_only(db) as (ctx, d):
        view = None
        try:
            with db.write() as s:
                view = d.claim_next_in(s, acct)
                assert view is not None and view.id == iid
                raise RuntimeError("the exit transaction failed")
        except RuntimeError:
            d.release_claim(acct, view)  # wakes the loop: the intent is still queued, so it sends it
        assert wait_for(lambda: intent(db, iid).status == "placed", 10)
    assert [e[1] for e in events(db, iid)] == ["claimed", "sent", "placed"]  # the rolled-back claim left nothing
    assert len(placed_at_sim(order_sim, name)) == 1


# ---- rows that must never be sent: unreadable (poison) or invalid ---------------------------------------------
def _spoil(db, intent_id: int, **columns) -> None:
    """Write column values the ORM would refuse (a hand edit, a script): raw sqlite3, no validation."""
    with db.write() as s:
        for col, value in columns.items():
            raw_cursor(s).execute(f"UPDATE order_intents SET {col} = ? WHERE id = ?", (value, intent_id))


def _log_rows(db, fragment: str) -> list[tuple[str, str]]:
    with db.read() as s:
        return [(r.level, r.message) for r in s.scalars(select(ServiceLog).where(ServiceLog.message.contains(fragment)))]


def test_poison_row_when_created_at_unparseable_then_denied_once_and_rows_behind_sent_in_the_same_pass(
        db, octx, order_sim):
    acct, name = sim_account(db, order_sim)
    other, other_name = sim_account(db, order_sim)
    poison = add_intent(db, acct, priority=0)  # sorts first: it would block everything behind it
    _spoil(db, poison, created_at="garbage")
    behind = [add_intent(db, acct, symbol=sym) for sym in ("SBIN", "INFY")]
    elsewhere = add_intent(db, other)
    d = OrderDispatcher(octx)
    d.run_once()  # ONE pass
    row = intent(db, poison)  # the ORM can read the denied row (its timestamp was replaced)
    assert row.status == "denied"
    assert row.status_reason == "unreadable intent row: created_at 'garbage' is not a timestamp"
    assert events(db, poison) == [("queued", "denied", "dispatcher")]
    assert [intent(db, i).status for i in behind] == ["placed", "placed"]
    assert [o["symbol"] for o in placed_at_sim(order_sim, name)] == ["SBIN", "INFY"]
    assert intent(db, elsewhere).status == "placed" and len(placed_at_sim(order_sim, other_name)) == 1
    for _ in range(5):  # later passes: nothing more about it
        d.run_once()
    assert _log_rows(db, f"intent {poison} ") == [("WARNING", f"intent {poison} denied: unreadable intent row: "
                                                              "created_at 'garbage' is not a timestamp")]
    with db.read() as s:
        payload = s.scalar(select(OrderEvent.payload).where(OrderEvent.intent_id == poison))
    assert json.loads(payload) == {"unreadable": {"created_at": "garbage"}}  # the original value is kept


def test_poison_row_when_it_is_a_strategy_entry_then_execution_and_run_failed(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    run_id, (entry,) = make_strategy_run(db, acct, [dict(symbol="SBIN", action="BUY", qty=1)])
    _spoil(db, entry, created_at=12345, sent_at="not a time")  # not text at all, and a second bad column
    changed: list[set[int]] = []
    OrderDispatcher(octx, on_change=changed.append).run_once()
    row = intent(db, entry)
    assert row.status == "denied" and "created_at 12345 is not a timestamp" in row.status_reason
    assert row.sent_at is None  # unreadable and nullable: cleared
    with db.read() as s:
        assert s.scalar(select(Execution.status).where(Execution.entry_intent_id == entry)) == "failed"
        assert s.get(StrategyRun, run_id).status == "failed"
    assert {run_id} in changed  # the risk manager and positions re-read the run


def test_poison_row_when_it_is_an_exit_then_denied_and_left_exiting_for_the_retry_logged_as_error(
        db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    run_id, (ex_id,) = make_run(db, acct, [dict(symbol="SBIN", exchange="NSE", action="BUY", qty=1, entry=1.0)],
                                status="exiting")
    with db.write() as s:
        ex = s.get(Execution, ex_id)
        exit_i = OrderIntent(client_order_id=uuid.uuid4().hex, account_id=acct, run_id=run_id, execution_id=ex_id,
                             purpose="exit", source="risk", priority=0, symbol="SBIN", exchange="NSE",
                             action="SELL", requested_qty=1, product="MIS")
        s.add(exit_i)
        s.flush()
        ex.status, ex.exit_intent_id = "exiting", exit_i.id
        exit_id = exit_i.id
    _spoil(db, exit_id, created_at="garbage")
    OrderDispatcher(octx).run_once()
    assert intent(db, exit_id).status == "denied"
    with db.read() as s:
        assert s.get(Execution, ex_id).status == "exiting"  # FAILED_EXIT: the risk sweep sends a new exit
    (level, msg), = _log_rows(db, f"intent {exit_id} ")
    assert level == "ERROR" and "unreadable intent row" in msg and "risk manager to retry" in msg


def test_poison_row_when_account_id_is_not_an_id_then_denied_and_the_scheduling_read_serves_the_others(
        db, octx, order_sim):
    """A row whose account_id is text (written with foreign keys off, as the sqlite3 shell does) still reaches
    a drain through QUEUED_ACCOUNTS_SQL and is denied there; the real accounts are served in the same pass."""
    acct, name = sim_account(db, order_sim)
    poison, good = add_intent(db, acct, priority=0), add_intent(db, acct)
    con = sqlite3.connect(db.path)  # foreign_keys is off on a plain connection
    con.execute("UPDATE order_intents SET account_id = 'x' WHERE id = ?", (poison,))
    con.commit()
    con.close()
    OrderDispatcher(octx).run_once()
    row = intent(db, poison)
    assert row.status == "denied" and row.status_reason == "unreadable intent row: account_id 'x' is not an id"
    assert intent(db, good).status == "placed" and len(placed_at_sim(order_sim, name)) == 1


def test_claim_next_in_when_a_poison_row_sorts_first_then_denied_in_that_transaction_and_the_exit_claimed(
        db, order_sim):
    acct, name = sim_account(db, order_sim)
    with _hand_off_only(db) as (ctx, d):
        poison = add_intent(db, acct, priority=-1)
        _spoil(db, poison, created_at="garbage")
        view = _exit_like_intents(db, d, acct)
        assert view is not None and view.action == "BUY" and intent(db, view.id).status == "sent"
        assert intent(db, poison).status == "denied"
        d.send_claimed([view])
        assert wait_for(lambda: all(intent(db, i).status == "placed" for i in (view.id, view.id - 1)), 10)
    assert [o["action"] for o in placed_at_sim(order_sim, name)] == ["BUY", "SELL"]
    assert len(_log_rows(db, f"intent {poison} denied: unreadable intent row")) == 1


@pytest.mark.parametrize("fields, reason", [
    (dict(requested_qty=0), "invalid intent: quantity 0 (must be a whole number > 0)"),
    (dict(requested_qty=-3), "invalid intent: quantity -3 (must be a whole number > 0)"),
    (dict(requested_qty=2.5), "invalid intent: quantity 2.5 (must be a whole number > 0)"),
    (dict(requested_qty="ten"), "invalid intent: quantity 'ten' (must be a whole number > 0)"),
    (dict(limit_price="1e999", pricetype="LIMIT"), "invalid intent: price inf (must be a finite number >= 0)"),
    (dict(limit_price="cheap"), "invalid intent: price 'cheap' (must be a finite number >= 0)"),
    (dict(trigger_price=-1.0), "invalid intent: trigger price -1.0 (must be a finite number >= 0)"),
    (dict(pricetype="LIMIT", limit_price=0.0), "invalid intent: LIMIT order with price 0.0 (must be > 0)"),
    (dict(pricetype="SL-M"), "invalid intent: SL-M order with trigger price 0.0 (must be > 0)"),
    (dict(action="HOLD"), "invalid intent: action 'HOLD' (must be one of BUY, SELL)"),
    (dict(action="buy"), "invalid intent: action 'buy' (must be one of BUY, SELL)"),
    (dict(exchange="NSE_INDEX"), "invalid intent: exchange 'NSE_INDEX' (must be one of"),
    (dict(product="BO"), "invalid intent: product 'BO' (must be one of CNC, MIS, NRML)"),
    (dict(pricetype="STOP"), "invalid intent: price type 'STOP' (must be one of LIMIT, MARKET, SL, SL-M)"),
    (dict(symbol="  "), "invalid intent: symbol '  ' is empty"),
])
def test_invalid_intent_when_dispatching_then_denied_with_reason_once_and_never_posted(
        db, octx, order_sim, fields, reason):
    acct, name = sim_account(db, order_sim)
    bad, good = add_intent(db, acct, priority=0), add_intent(db, acct)
    _spoil(db, bad, **fields)
    d = OrderDispatcher(octx)
    d.run_once()
    d.run_once()
    row = intent(db, bad)
    assert row.status == "denied" and row.status_reason.startswith(reason)
    assert events(db, bad) == [("queued", "denied", "dispatcher")]
    assert len(_log_rows(db, f"intent {bad} denied: invalid intent")) == 1
    assert intent(db, good).status == "placed"
    assert octx.client(acct).calls["placeorder"] == 1 and len(placed_at_sim(order_sim, name)) == 1
