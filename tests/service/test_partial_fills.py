"""Partial fills in the bookkeeping and the risk valuation (real SQLite; broker orders as the poller sees them)."""
from __future__ import annotations

from sqlalchemy import select

from db.executions import sweep, sweep_needed
from db.models import Execution, OrderIntent, StrategyRun
from services.order_reports import BookOrder, apply_book_status
from services.risk import RiskManager
from tests.harness import queue_runs
from tests.service.fixtures_md import account, ctx, md, tick  # noqa: F401


def _entry_run(db, acct, qty=100, action="BUY", symbol="SBIN", exchange="NSE"):
    [(run_id, [iid])] = queue_runs(db, [acct], [dict(symbol=symbol, exchange=exchange, action=action, qty=qty)],
                                   "partial")
    with db.write() as s:  # what the dispatcher leaves: placed, with the broker's order id
        i = s.get(OrderIntent, iid)
        i.status, i.broker_order_id = "placed", f"B{iid}"
    return run_id, iid


def _book(db, iid, status, filled, avg):
    with db.write() as s:
        i = s.get(OrderIntent, iid)
        bo = BookOrder(i.broker_order_id, i.symbol, i.exchange, i.action, i.requested_qty, 0.0, 0.0, "MARKET",
                       "MIS", status, filled, avg, None, "", None)
        _, warning = apply_book_status(s, i, bo, "poller")
        assert not warning


def _state(db, run_id):
    with db.read() as s:
        ex = s.scalar(select(Execution).where(Execution.run_id == run_id))
        return s.get(StrategyRun, run_id).status, ex.status, ex.quantity, ex.entry_price


def test_entry_when_partially_filled_then_execution_entered_on_the_filled_part_and_run_active(db):
    run_id, iid = _entry_run(db, account(db))
    _book(db, iid, "open", 50, 800.0)
    assert _state(db, run_id) == ("active", "entered", 50, 800.0)
    _book(db, iid, "open", 80, 801.0)  # more of it fills: the leg holds more, at the new average
    assert _state(db, run_id) == ("active", "entered", 80, 801.0)
    with db.read() as s:
        assert not sweep_needed(s)  # the repair sweep agrees with what apply_intent_outcome wrote


def test_entry_remainder_when_cancelled_after_a_partial_fill_then_execution_and_run_stay_live(db):
    run_id, iid = _entry_run(db, account(db))
    _book(db, iid, "open", 50, 800.0)
    _book(db, iid, "cancelled", 50, 800.0)
    assert _state(db, run_id) == ("active", "entered", 50, 800.0)
    with db.read() as s:
        assert s.get(OrderIntent, iid).status == "cancelled" and not sweep_needed(s)


def test_entry_when_cancelled_with_nothing_filled_then_execution_and_run_failed(db):
    run_id, iid = _entry_run(db, account(db))
    _book(db, iid, "cancelled", 0, 0.0)
    assert _state(db, run_id) == ("failed", "failed", 100, None)


def test_sweep_when_partial_fill_recorded_without_bookkeeping_then_repairs_it_like_apply_intent_outcome(db):
    run_id, iid = _entry_run(db, account(db))
    with db.write() as s:  # a crash between the intent's update and its bookkeeping
        i = s.get(OrderIntent, iid)
        i.status, i.broker_filled_qty, i.broker_avg_price = "cancelled", 40, 799.5
    with db.read() as s:
        assert sweep_needed(s)
    with db.write() as s:
        assert run_id in sweep(s).run_ids
    assert _state(db, run_id) == ("active", "entered", 40, 799.5)
    with db.read() as s:
        assert not sweep_needed(s)


def test_exited_run_when_its_entry_is_still_working_then_it_stays_exiting_until_the_remainder_is_cancelled(db):
    run_id, iid = _entry_run(db, account(db))
    _book(db, iid, "open", 50, 800.0)
    with db.write() as s:  # the risk manager's exit of the filled 50, filled at the broker
        run, ex = s.get(StrategyRun, run_id), s.scalar(select(Execution).where(Execution.run_id == run_id))
        run.status = "exiting"
        x = OrderIntent(client_order_id="x1", account_id=run.account_id, run_id=run_id, execution_id=ex.id,
                        purpose="exit", source="risk", symbol="SBIN", exchange="NSE", action="SELL",
                        requested_qty=50, status="placed", broker_order_id="X1")
        s.add(x)
        s.flush()
        ex.status, ex.exit_intent_id = "exiting", x.id
        xid = x.id
    _book(db, xid, "complete", 50, 790.0)
    assert _state(db, run_id)[:3] == ("exiting", "exited", 50)  # the entry's remainder can still fill
    with db.read() as s:
        assert not sweep_needed(s)
    _book(db, iid, "cancelled", 50, 800.0)
    assert _state(db, run_id)[:2] == ("exited", "exited")


def test_risk_when_entry_partially_filled_then_run_valued_and_exited_on_the_filled_quantity(db, ctx, md):
    run_id, iid = _entry_run(db, account(db), qty=100, symbol="NIFTY30DEC2526000CE", exchange="NFO")
    with db.write() as s:
        s.get(StrategyRun, run_id).max_loss = 1000
    _book(db, iid, "open", 50, 100.0)
    risk = RiskManager(ctx, md, lambda: None)
    tick(md, "NIFTY30DEC2526000CE", 100.0)
    risk.reload()
    assert risk.run_state(run_id) is not None  # a partly filled run is watched
    tick(md, "NIFTY30DEC2526000CE", 81.0)  # -19 x 50 = -950: inside the limit (on 100 units it would be -1900)
    assert risk.run_state(run_id).pnl == -950.0
    tick(md, "NIFTY30DEC2526000CE", 79.0)  # -1050
    with db.read() as s:
        exits = list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id,
                                                         OrderIntent.purpose == "exit")))
    assert [(x.action, x.requested_qty) for x in exits] == [("SELL", 50)]


def test_entry_remainder_when_it_fills_after_the_leg_exited_then_the_sweep_exits_the_extra_units(db, ctx, md):
    """The remainder filled (20 more) before its cancel landed: the leg's first exit covered 50, one more exit
    closes the 20 and the run stays 'exiting' until it fills."""
    run_id, iid = _entry_run(db, account(db))
    _book(db, iid, "open", 50, 800.0)
    with db.write() as s:
        run, ex = s.get(StrategyRun, run_id), s.scalar(select(Execution).where(Execution.run_id == run_id))
        run.status = "exiting"
        x = OrderIntent(client_order_id="x1", account_id=run.account_id, run_id=run_id, execution_id=ex.id,
                        purpose="exit", source="risk", symbol="SBIN", exchange="NSE", action="SELL",
                        requested_qty=50, status="placed", broker_order_id="X1")
        s.add(x)
        s.flush()
        ex.status, ex.exit_intent_id = "exiting", x.id
        xid = x.id
    _book(db, xid, "complete", 50, 790.0)
    _book(db, iid, "cancelled", 70, 801.0)
    assert _state(db, run_id) == ("exiting", "exited", 50, 800.0)  # 20 units the exit did not cover
    RiskManager(ctx, md, lambda: None).sweep()
    with db.read() as s:
        exits = list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id, OrderIntent.purpose == "exit")
                               .order_by(OrderIntent.id)))
    assert [(x.requested_qty, x.status) for x in exits] == [(50, "filled"), (20, "queued")]
    assert _state(db, run_id) == ("exiting", "exiting", 70, 801.0)
    RiskManager(ctx, md, lambda: None).sweep()  # the exit is live: nothing more is written
    with db.read() as s:
        assert s.scalar(select(OrderIntent.id).where(OrderIntent.run_id == run_id, OrderIntent.purpose == "exit")
                        .order_by(OrderIntent.id.desc())) == exits[1].id
    with db.write() as s:
        i = s.get(OrderIntent, exits[1].id)
        i.status, i.broker_order_id = "placed", "X2"
    _book(db, exits[1].id, "complete", 20, 789.0)
    assert _state(db, run_id)[:3] == ("exited", "exited", 70)
