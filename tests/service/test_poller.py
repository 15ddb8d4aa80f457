"""Poller against the real simulator: fills drive executions and runs; pacing; invalid transitions survive."""
from __future__ import annotations

import sqlite3
import uuid

from sqlalchemy import select

from db.models import BrokerOrder, Execution, OrderIntent, ServiceLog, StrategyRun
from services.dispatcher import OrderDispatcher
from services.poller import OrderPoller
from tests.service.fixtures_orders import (  # noqa: F401
    add_intent, events, intent, make_strategy_run, octx, order_sim, placed_at_sim, sim_account)


def run_and_execs(db, run_id: int):
    with db.read() as s:
        run = s.get(StrategyRun, run_id)
        execs = list(s.scalars(select(Execution).where(Execution.run_id == run_id).order_by(Execution.leg_no)))
    return run, execs


def test_entries_when_filled_then_executions_entered_at_avg_price_and_run_active(db, octx, order_sim):
    acct, name = sim_account(db, order_sim)
    run_id, ids = make_strategy_run(db, acct, [dict(symbol="SBIN", action="BUY", qty=5),
                                               dict(symbol="INFY", action="SELL", qty=2),
                                               dict(symbol="TCS", action="BUY", qty=1)])
    changed = []
    OrderDispatcher(octx).run_once()
    OrderPoller(octx, on_fill=changed.append).run_once()
    run, execs = run_and_execs(db, run_id)
    trades = {t["orderid"]: t["average_price"] for t in octx.client(acct).tradebook()}
    assert run.status == "active"
    assert [e.status for e in execs] == ["entered"] * 3
    for e, iid in zip(execs, ids, strict=True):
        assert e.entry_price == trades[intent(db, iid).broker_order_id] > 0
    assert changed and run_id in set().union(*changed)


def test_entries_when_one_rejected_then_execution_failed_and_run_still_active(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    run_id, _ = make_strategy_run(db, acct, [dict(symbol="SBIN", action="BUY", qty=1),
                                             dict(symbol="INFY", action="BUY", qty=1, product="NRML")])
    OrderDispatcher(octx).run_once()
    OrderPoller(octx).run_once()
    run, execs = run_and_execs(db, run_id)
    assert [e.status for e in execs] == ["entered", "failed"] and run.status == "active"


def test_entries_when_all_rejected_then_run_failed(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    run_id, _ = make_strategy_run(db, acct, [dict(symbol="SBIN", action="BUY", qty=1, product="NRML")])
    OrderDispatcher(octx).run_once()
    run, execs = run_and_execs(db, run_id)
    assert execs[0].status == "failed" and run.status == "failed"


def test_limit_entry_when_price_crosses_later_then_filled_on_a_later_poll(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    order_sim.set_price("HDFCBANK", "NSE", 1000.0)
    run_id, (iid,) = make_strategy_run(db, acct, [dict(symbol="HDFCBANK", action="BUY", qty=3,
                                                       pricetype="LIMIT", price=900.0)])
    OrderDispatcher(octx).run_once()
    poller = OrderPoller(octx)
    poller.run_once()
    assert intent(db, iid).status == "placed" and run_and_execs(db, run_id)[0].status == "entering"
    order_sim.set_price("HDFCBANK", "NSE", 899.0)
    poller._last_poll.clear()  # next cycle (the 1 s/account pacing is tested separately)
    poller.run_once()
    run, (ex,) = run_and_execs(db, run_id)
    assert intent(db, iid).status == "filled" and ex.status == "entered" and ex.entry_price == 900.0
    assert run.status == "active"


def test_exit_when_filled_then_execution_exited_and_run_exited(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    run_id, _ = make_strategy_run(db, acct, [dict(symbol="SBIN", action="BUY", qty=2)])
    OrderDispatcher(octx).run_once()
    poller = OrderPoller(octx)
    poller.run_once()
    with db.write() as s:  # what the risk manager's exit_run writes
        run = s.get(StrategyRun, run_id)
        ex = s.scalar(select(Execution).where(Execution.run_id == run_id))
        run.status = "exiting"
        exit_intent = OrderIntent(client_order_id=uuid.uuid4().hex, account_id=acct, run_id=run_id,
                                  execution_id=ex.id, purpose="exit", source="risk", priority=20,
                                  strategy_tag="t", symbol="SBIN", exchange="NSE", action="SELL", requested_qty=2,
                                  product="MIS")
        s.add(exit_intent)
        s.flush()
        ex.status, ex.exit_intent_id = "exiting", exit_intent.id
    OrderDispatcher(octx).run_once()
    poller._last_poll.clear()
    poller.run_once()
    run, (ex,) = run_and_execs(db, run_id)
    assert ex.status == "exited" and ex.exit_price and ex.exit_price > 0
    assert run.status == "exited" and run.exited_at is not None


def test_poll_when_called_twice_within_a_second_then_one_orderbook_call(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    add_intent(db, acct, pricetype="LIMIT", price=1.0)  # rests open
    OrderDispatcher(octx).run_once()
    poller = OrderPoller(octx)
    poller.run_once()
    poller.run_once()
    poller.run_once()
    assert octx.client(acct).calls["orderbook"] == 1


def test_invalid_transition_when_broker_disagrees_then_logged_once_and_skipped(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    iid = add_intent(db, acct, pricetype="LIMIT", price=1.0)
    OrderDispatcher(octx).run_once()
    with db.write() as s:  # pretend we had seen a partial fill: the book now says plain 'open'
        s.get(OrderIntent, iid).status = "partially_filled"
    poller = OrderPoller(octx)
    for _ in range(2):
        poller._last_poll.clear()
        poller.run_once()
    assert intent(db, iid).status == "partially_filled"
    with db.read() as s:
        msgs = list(s.scalars(select(ServiceLog.message).where(ServiceLog.message.contains("not a valid"))))
    assert len(msgs) == 1 and f"intent {iid}" in msgs[0]


def test_restart_when_placed_intent_from_previous_process_then_new_poller_settles_it(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    order_sim.set_price("RELIANCE", "NSE", 1500.0)
    run_id, (iid,) = make_strategy_run(db, acct, [dict(symbol="RELIANCE", action="SELL", qty=1,
                                                       pricetype="LIMIT", price=1600.0)])
    OrderDispatcher(octx).run_once()
    OrderPoller(octx).run_once()  # first process sees it open, then "dies"
    order_sim.set_price("RELIANCE", "NSE", 1601.0)
    OrderPoller(octx).run_once()  # a fresh process: nothing in memory
    run, (ex,) = run_and_execs(db, run_id)
    assert intent(db, iid).status == "filled" and ex.entry_price == 1600.0 and run.status == "active"


def test_poll_when_the_book_is_unchanged_then_nothing_is_written(db, octx, order_sim):
    watcher = sqlite3.connect(db.path)  # PRAGMA data_version moves when another connection commits a change

    def _data_version(_db) -> int:
        return watcher.execute("PRAGMA data_version").fetchone()[0]
    acct, _ = sim_account(db, order_sim)
    resting = add_intent(db, acct, pricetype="LIMIT", price=1.0, qty=2)  # rests open
    other = add_intent(db, acct, pricetype="LIMIT", price=2.0, qty=1)
    OrderDispatcher(octx).run_once()
    poller = OrderPoller(octx)
    poller.run_once()
    with db.read() as s:
        rows = {b.intent_id: (b.order_status, b.quantity, b.price, b.external, b.updated_at)
                for b in s.scalars(select(BrokerOrder).where(BrokerOrder.account_id == acct))}
    assert [rows[i][:4] for i in (resting, other)] == [("open", 2, 1.0, False), ("open", 1, 2.0, False)]
    before = _data_version(db)
    poller._last_poll.clear()
    poller.run_once()
    assert octx.client(acct).calls["orderbook"] == 2
    assert _data_version(db) == before  # no commit changed the file: the write lock was not even needed

    octx.client(acct).cancelorder(intent(db, other).broker_order_id)  # one order changes at the broker
    poller._last_poll.clear()
    poller.run_once()
    assert _data_version(db) != before
    with db.read() as s:
        after = {b.intent_id: (b.order_status, b.updated_at)
                 for b in s.scalars(select(BrokerOrder).where(BrokerOrder.account_id == acct))}
    assert after[resting] == (rows[resting][0], rows[resting][4])  # untouched, updated_at included
    assert after[other][0] == "cancelled" and after[other][1] > rows[other][4]
    assert intent(db, other).status == "cancelled" and intent(db, resting).status == "placed"
    watcher.close()


def test_behind_book_when_the_book_changes_step_by_step_then_it_agrees_with_what_apply_book_status_writes(db):
    """``behind_book`` (the poller's read-only pre-check) must say True exactly when ``apply_book_status`` would
    change the intent or warn; a False that should be True would leave an intent behind its broker order."""
    from db.accounts import add_account
    from services.order_reports import BookOrder, apply_book_status, behind_book

    acct = add_account(db, "agree", "http://127.0.0.1:1", "ws://127.0.0.1:1", "k" * 32)
    iid = add_intent(db, acct, qty=10, status="placed", broker_order_id="B1")

    def bo(status, filled=0, avg=0.0):
        return BookOrder("B1", "SBIN", "NSE", "BUY", 10, 0.0, 0.0, "MARKET", "MIS", status, filled, avg, None,
                         "", None)

    def row():
        with db.read() as s:
            i = s.get(OrderIntent, iid)
            return i.status, i.broker_status, i.broker_filled_qty, i.broker_avg_price

    steps = [bo("open"), bo("open"), bo("open", 4, 800.5), bo("open", 4, 800.5), bo("open", 7, 800.75),
             bo("complete", 10, 801.0), bo("complete", 10, 801.0), bo("complete", 10, 801.05),
             bo("rejected", 10, 801.05)]  # the last: complete -> rejected is not a valid transition (a warning)
    seen = []
    for book in steps:
        before = row()
        predicted = behind_book(*before, book)
        with db.write() as s:
            _, warning = apply_book_status(s, s.get(OrderIntent, iid), book, "test")
        seen.append((predicted, row() != before or bool(warning)))
    assert [p for p, _ in seen] == [a for _, a in seen], seen
    assert [a for _, a in seen] == [True, False, True, False, True, True, False, True, True]
    assert row() == ("filled", "complete", 10, 801.05)
    # a fill the orderbook gives no average for: the pre-check stays True until the tradebook's average is in
    fill_no_avg = bo("complete", 10, 0.0)
    assert behind_book("filled", "complete", 10, None, fill_no_avg)
    assert not behind_book("filled", "complete", 10, 801.0, fill_no_avg)


def test_poll_now_when_cycle_just_polled_then_reads_again_within_the_flatten_gap_not_a_whole_second(
        db, octx, order_sim):
    """A flatten waiting for its exits' fills must not wait for the next 1 s cycle: poll_now reads the account's
    orderbook after FLATTEN_GAP_S, where the scheduled cycle would skip the account as polled a moment ago."""
    from services.poller import FLATTEN_GAP_S, MIN_GAP_S
    acct, _ = sim_account(db, order_sim)
    order_sim.set_price("HDFCBANK", "NSE", 1000.0)
    run_id, (iid,) = make_strategy_run(db, acct, [dict(symbol="HDFCBANK", action="BUY", qty=3,
                                                       pricetype="LIMIT", price=900.0)])
    OrderDispatcher(octx).run_once()
    poller = OrderPoller(octx)
    poller.run_once()
    assert intent(db, iid).status == "placed"
    order_sim.set_price("HDFCBANK", "NSE", 899.0)
    assert poller.run_once()["accounts"] == 0  # the cycle paces the account: nothing read yet
    assert FLATTEN_GAP_S < MIN_GAP_S
    poller.poll_now(acct)
    assert intent(db, iid).status == "filled" and run_and_execs(db, run_id)[0].status == "active"


def test_apply_when_a_later_chunk_fails_then_earlier_chunks_stay_and_the_rest_lands_next_poll(
        db, octx, order_sim, caplog):
    """A busy book is applied a few intents per transaction (services.poller.APPLY_CHUNK). A fault in a later
    chunk (here a trigger refusing one intent's update, as a full disk or a bad row would) must keep what the
    earlier chunks committed and leave the rest behind the book for the next poll, not lose it or raise."""
    from services.poller import APPLY_CHUNK
    acct, _ = sim_account(db, order_sim)
    ids = [add_intent(db, acct, pricetype="LIMIT", price=1.0 + k) for k in range(APPLY_CHUNK + 2)]  # rest open
    OrderDispatcher(octx).run_once()
    poller = OrderPoller(octx)
    poller.run_once()
    assert {intent(db, i).status for i in ids} == {"placed"}
    for i in ids:  # every order changes at the broker at once
        octx.client(acct).cancelorder(intent(db, i).broker_order_id)
    bad = ids[-1]  # in the second chunk
    raw = sqlite3.connect(db.path)
    raw.execute(f"CREATE TRIGGER refuse_one BEFORE UPDATE ON order_intents WHEN NEW.id = {bad} "
                "BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
    raw.commit()
    poller._last_poll.clear()
    with caplog.at_level("WARNING", logger="services.poller"):
        poller.run_once()
    assert [intent(db, i).status for i in ids] == ["cancelled"] * APPLY_CHUNK + ["placed"] * 2
    assert f"{APPLY_CHUNK} of {len(ids)} book updates applied, the rest next poll" in caplog.text

    raw.execute("DROP TRIGGER refuse_one")
    raw.commit()
    raw.close()
    poller._last_poll.clear()
    poller.run_once()
    assert [intent(db, i).status for i in ids] == ["cancelled"] * len(ids)
    assert [[e[1] for e in events(db, i)].count("cancelled") for i in ids] == [1] * len(ids)  # each applied once
