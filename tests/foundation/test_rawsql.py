"""db/rawsql.py and the plain-SQL hot paths built on it: rows they write must read back through the ORM exactly
like ORM-written rows, loaded objects must follow, and bad column names must be refused."""
from datetime import datetime

import pytest
from sqlalchemy import select

from db.executions import sweep, sweep_needed
from db.intents import claim_path, new_client_order_id, transition
from db.models import Execution, OrderEvent, OrderIntent, RiskEvent, StrategyRun, utcnow
from db.order_fsm import Status
from db.rawsql import insert_row, raw_cursor, sql_ts, update_rows
from tests.builders import make_account
from tests.harness import queue_runs

FIELDS = dict(account_id=None, purpose="exit", source="risk", priority=3, strategy_tag="t", symbol="SBIN",
              exchange="NSE", action="BUY", requested_qty=5, pricetype="MARKET", product="MIS")


def columns(obj) -> dict:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns if c.key not in ("id", "client_order_id")}


def test_insert_row_when_read_through_the_orm_then_equal_to_an_orm_written_row(seeded_db):
    acct = make_account(seeded_db)
    now = utcnow().replace(microsecond=0)  # the edge case: str() of such a datetime has no fraction
    fields = dict(FIELDS, account_id=acct)
    with seeded_db.write() as s:
        orm = OrderIntent(client_order_id=new_client_order_id(), **fields, created_at=now, updated_at=now)
        s.add(orm)
        s.flush()
        raw_id = insert_row(raw_cursor(s), OrderIntent.__table__, dict(fields, client_order_id=new_client_order_id()),
                            now)
        ev_id = insert_row(raw_cursor(s), RiskEvent.__table__, dict(event_type="max_loss", ts_utc=now), now)
    with seeded_db.read() as s:
        a, b = s.get(OrderIntent, orm.id), s.get(OrderIntent, raw_id)
        assert columns(b) == columns(a)
        assert b.created_at == now and isinstance(b.created_at, datetime)
        ev = s.get(RiskEvent, ev_id)
        assert (ev.exit_order_ids, ev.action, ev.ts_utc) == ("[]", "", now)  # model defaults applied
        raw = raw_cursor(s).execute("SELECT created_at FROM order_intents WHERE id = ?", (raw_id,)).fetchone()[0]
        assert raw == sql_ts(now) == now.strftime("%Y-%m-%d %H:%M:%S.000000")


def test_transition_when_the_intent_is_loaded_then_the_object_follows_and_pending_changes_are_kept(seeded_db):
    acct = make_account(seeded_db)
    [(_, [iid])] = queue_runs(seeded_db, [acct], [dict(symbol="SBIN", action="BUY", qty=1)], "rawsql")
    with seeded_db.write() as s:
        intent = s.get(OrderIntent, iid)
        intent.strategy_tag = "edited"  # pending ORM change: must be flushed, not lost
        assert claim_path(s, iid, [Status.QUEUED, Status.CLAIMED, Status.SENT], "dispatcher", "sent", claimed_by="w")
        assert (intent.status, intent.claimed_by, intent.status_reason) == ("sent", "w", "sent")
        assert intent.sent_at is not None and intent.sent_at == intent.claimed_at
        assert transition(s, iid, Status.SENT, Status.PLACED, "dispatcher", "ok", broker_order_id="B1")
        assert (intent.status, intent.broker_order_id) == ("placed", "B1")
        assert not transition(s, iid, Status.SENT, Status.PLACED, "dispatcher")  # CAS: no longer 'sent'
    with seeded_db.read() as s:
        row = s.get(OrderIntent, iid)
        assert (row.status, row.strategy_tag, row.broker_order_id) == ("placed", "edited", "B1")
        steps = [(e.from_status, e.to_status) for e in s.scalars(
            select(OrderEvent).where(OrderEvent.intent_id == iid).order_by(OrderEvent.id))]
    assert steps == [("queued", "claimed"), ("claimed", "sent"), ("sent", "placed")]


@pytest.mark.parametrize("call", [
    lambda cur, now: insert_row(cur, OrderIntent.__table__, {"symbol": "X", "nope; DROP TABLE x": 1}, now),
    lambda cur, now: update_rows(cur, OrderIntent.__table__, {"status = 'x', symbol": 1}, "id = ?", (1,)),
])
def test_raw_statements_when_a_column_name_is_not_in_the_table_then_refused_and_nothing_written(seeded_db, call):
    with pytest.raises(ValueError, match="not order_intents columns"):
        with seeded_db.write() as s:
            call(raw_cursor(s), utcnow())
    with seeded_db.read() as s:
        assert s.scalar(select(OrderIntent.id)) is None


def _run_with_filled_entry(db, avg):
    acct = make_account(db)
    [(run_id, [iid])] = queue_runs(db, [acct], [dict(symbol="SBIN", action="BUY", qty=1)], "sweep")
    with db.write() as s:
        assert claim_path(s, iid, [Status.QUEUED, Status.CLAIMED, Status.SENT], "dispatcher")
        assert transition(s, iid, Status.SENT, Status.PLACED, "dispatcher", broker_order_id="B1")
        # the fill was recorded but the execution was not updated (e.g. the process died in between)
        s.execute(OrderIntent.__table__.update().where(OrderIntent.id == iid)
                  .values(status="filled", broker_avg_price=avg, broker_filled_qty=1))
    return run_id


def test_sweep_when_an_execution_lags_its_filled_entry_then_repaired_and_run_active(seeded_db):
    run_id = _run_with_filled_entry(seeded_db, 812.5)
    with seeded_db.read() as s:
        assert sweep_needed(s)  # the poller's read-only check: this one needs the write lock
    with seeded_db.write() as s:
        out = sweep(s)
    assert out.run_ids == {run_id}
    with seeded_db.read() as s:
        ex = s.scalar(select(Execution).where(Execution.run_id == run_id))
        assert (ex.status, ex.entry_price, s.get(StrategyRun, run_id).status) == ("entered", 812.5, "active")
    with seeded_db.write() as s:  # now consistent: a second pass changes nothing
        assert sweep(s).run_ids == set()
    with seeded_db.read() as s:
        assert not sweep_needed(s)


def test_sweep_when_everything_is_consistent_then_nothing_reported(seeded_db):
    acct = make_account(seeded_db)
    queue_runs(seeded_db, [acct], [dict(symbol="SBIN", action="BUY", qty=1)], "sweep")  # entering, queued entry
    with seeded_db.write() as s:
        assert sweep(s).run_ids == set()
    with seeded_db.read() as s:
        assert not sweep_needed(s)
