"""Exit orders of strategy legs: every statement about them (order_intents rows with purpose 'exit', the legs
they close, and the risk events that flag them).

Writers, one rule set (opposite side, the leg's quantity, MARKET, reduce-only; exits that BUY sort first):
    write_run_exit     the whole run at once, on plain sqlite3 statements (the tick -> exit hot path): the run's
                       compare-and-set to 'exiting', one exit per entered leg, its queued entries withdrawn, the
                       risk event; all in the caller's transaction
    write_exit_intent  one leg, through the ORM (retries of failed exits, late fills, late remainders)
Neither commits nor sends anything: the dispatcher's exit writer (services/dispatcher.py ``submit_now``) owns the
transaction, the claim and the POST. The readers below give the risk manager's sweep its repair work.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import and_, func, select

from db.intents import new_client_order_id, transition
from db.models import Execution, OrderEvent, OrderIntent, RiskEvent, Strategy, StrategyRun, utcnow
from db.order_fsm import FAILED, MAY_HOLD_FILL, OPEN, Status, sql_in
from db.rawsql import insert_row, raw_cursor, update_rows
from db.run_fsm import LIVE_RUN, LegStatus, RunStatus

RUNS, EXECUTIONS = StrategyRun.__table__, Execution.__table__
S, L, R = Status, LegStatus, RunStatus


def exit_priority(action: str, leg_no: int) -> int:
    """Exits that BUY (closing shorts) go first: margin is released in the right order."""
    return (0 if action == "BUY" else 20) + leg_no


def exit_intent_fields(account_id: int, run_id: int, tag: str, ex, qty: int | None = None) -> dict:
    """The reduce-only MARKET order that closes one leg (opposite side, same qty); BUY exits sort first."""
    action = "SELL" if ex.action == "BUY" else "BUY"
    return dict(client_order_id=new_client_order_id(), account_id=account_id, run_id=run_id, execution_id=ex.id,
                purpose="exit", source="risk", priority=exit_priority(action, ex.leg_no), strategy_tag=tag[:64],
                symbol=ex.symbol, exchange=ex.exchange, action=action, requested_qty=qty or ex.quantity,
                pricetype="MARKET", product=ex.product)


class ExitLeg(NamedTuple):
    id: int
    leg_no: int
    action: str
    symbol: str
    exchange: str
    quantity: int
    product: str


RUN_TAG_SQL = ("SELECT r.account_id, s.name FROM strategy_runs r JOIN strategies s ON s.id = r.strategy_id "
               "WHERE r.id = ?")
ENTERED_LEGS_SQL = (f"SELECT {', '.join(ExitLeg._fields)} FROM executions WHERE run_id = ? "
                    f"AND status = '{L.ENTERED}' ORDER BY leg_no, id")
QUEUED_ENTRIES_SQL = ("SELECT id, execution_id FROM order_intents WHERE run_id = ? AND purpose = 'entry' "
                      f"AND status = '{S.QUEUED}'")


def write_exit_intent(s, run: StrategyRun, tag: str, ex: Execution, qty: int | None = None) -> OrderIntent:
    """One leg's exit (ORM): the intent, and the leg 'exiting' on it."""
    intent = OrderIntent(**exit_intent_fields(run.account_id, run.id, tag, ex, qty))
    s.add(intent)
    s.flush()
    ex.status, ex.exit_intent_id = L.EXITING.value, intent.id
    return intent


def write_run_exit(s, run_id: int, reason: str, threshold, value, ts_ist: str,
                   tsl: dict | None = None, decided_on: str = "") -> tuple[list[int], int] | None:
    """In the caller's transaction: run -> 'exiting' (CAS from a live status, with the trailing state ``tsl``
    saved), one exit intent per entered leg, queued entries cancelled, the risk event (with ``decided_on``, the
    JSON of the legs' prices the exit was decided on). Returns (intent ids, account id), or None if the run was not
    live (already exiting: idempotent)."""
    now = utcnow()
    cur = raw_cursor(s)
    if update_rows(cur, RUNS, dict(status=R.EXITING.value, exit_reason=reason[:64], exit_requested_at=now,
                                   **(tsl or {})), f"id = ? AND status IN {sql_in(LIVE_RUN)}", (run_id,)) != 1:
        return None
    account_id, tag = cur.execute(RUN_TAG_SQL, (run_id,)).fetchone()
    legs = [ExitLeg(*row) for row in cur.execute(ENTERED_LEGS_SQL, (run_id,)).fetchall()]
    fields = [exit_intent_fields(account_id, run_id, tag, ex) for ex in legs]
    ids = [insert_row(cur, OrderIntent.__table__, f, now) for f in fields]
    for ex, intent_id in zip(legs, ids, strict=True):
        update_rows(cur, EXECUTIONS, dict(status=L.EXITING.value, exit_intent_id=intent_id, updated_at=now),
                    "id = ?", (ex.id,))
    _cancel_queued_entries(s, cur, run_id)
    # re-entries still waiting for their turn will not come: nothing enters an exiting run
    update_rows(cur, EXECUTIONS, dict(status=L.FAILED.value, updated_at=now),
                f"run_id = ? AND status = '{L.PENDING}' AND entry_intent_id IS NULL", (run_id,))
    insert_row(cur, RiskEvent.__table__, dict(
        run_id=run_id, account_id=account_id, event_type=reason[:32], threshold=threshold, value=value,
        action="exit", ts_ist=ts_ist, ts_utc=now, exit_order_ids=json.dumps([f["client_order_id"] for f in fields]),
        message=f"{tag}: {reason} exit of {len(ids)} leg(s)", decided_on=decided_on), now)
    return ids, account_id


def _cancel_queued_entries(s, cur, run_id: int) -> None:
    """Entries not yet sent are withdrawn so they cannot open a position after the exit."""
    for intent_id, ex_id in cur.execute(QUEUED_ENTRIES_SQL, (run_id,)).fetchall():
        if transition(s, intent_id, S.QUEUED, S.CANCELLED, "risk", "run is exiting"):
            update_rows(cur, EXECUTIONS, dict(status=L.FAILED.value, updated_at=utcnow()),
                        "id = ? AND status = ?", (ex_id, L.PENDING.value))


# ---- the sweep's repair work ------------------------------------------------------------------------------------
FAILED_EXITS = (select(Execution, OrderIntent, StrategyRun, Strategy.name)
                .join(OrderIntent, OrderIntent.id == Execution.exit_intent_id)
                .join(StrategyRun, StrategyRun.id == Execution.run_id)
                .join(Strategy, Strategy.id == StrategyRun.strategy_id)
                .where(Execution.status == L.EXITING, OrderIntent.status.in_(FAILED)))
LATE_FILLS = (select(Execution, StrategyRun, Strategy.name)
              .join(StrategyRun, StrategyRun.id == Execution.run_id)
              .join(Strategy, Strategy.id == StrategyRun.strategy_id)
              .where(Execution.status == L.ENTERED, StrategyRun.status == R.EXITING))
WORKING_ENTRIES_SQL = ("SELECT i.id, i.account_id, i.broker_order_id, i.strategy_tag FROM order_intents i "
                       f"JOIN strategy_runs r ON r.id = i.run_id WHERE r.status = '{R.EXITING}' "
                       f"AND i.purpose = 'entry' AND i.status IN {sql_in(OPEN)} AND i.broker_order_id IS NOT NULL "
                       "ORDER BY i.id")
# Exited legs of exiting runs whose entry filled more than the leg held when it was exited.
GROWN_SQL = ("SELECT e.id FROM executions e JOIN strategy_runs r ON r.id = e.run_id "
             "JOIN order_intents ei ON ei.id = e.entry_intent_id "
             f"WHERE r.status = '{R.EXITING}' AND e.status = '{L.EXITED}' "
             f"AND ei.status IN {sql_in(MAY_HOLD_FILL)} "
             "AND (CASE WHEN ei.broker_filled_qty > 0 THEN ei.broker_filled_qty "
             f"WHEN ei.status = '{S.FILLED}' THEN ei.requested_qty ELSE 0 END) > e.quantity ORDER BY e.id")


def repairs_due(s) -> bool:
    """Read-only: is there a failed exit to retry, a late fill or a grown leg to exit?"""
    return any(x is not None for x in (
        s.scalar(FAILED_EXITS.with_only_columns(Execution.id).limit(1)),
        s.scalar(LATE_FILLS.with_only_columns(Execution.id).limit(1)),
        raw_cursor(s).execute(GROWN_SQL).fetchone()))


def failed_exits(s) -> list:
    """(execution, failed exit intent, run, strategy name) of every leg whose exit ended without filling."""
    return list(s.execute(FAILED_EXITS).all())


def late_fills(s) -> list:
    """(execution, run, strategy name) of legs that filled after their run started exiting."""
    return list(s.execute(LATE_FILLS).all())


def grown_legs(s) -> list[int]:
    return [ex_id for (ex_id,) in raw_cursor(s).execute(GROWN_SQL).fetchall()]


def working_entries(s) -> list[tuple]:
    """(intent id, account id, broker order id, tag) of entries still working at the broker for exiting runs."""
    return [tuple(r) for r in raw_cursor(s).execute(WORKING_ENTRIES_SQL).fetchall()]


def stuck_partial_exits(s, timeout_s: float, now: datetime | None = None) -> list[tuple]:
    """Exits partially filled (since their first partial fill in order_events) for ``timeout_s`` or more:
    (intent id, account id, broker order id, tag, run id, leg no, symbol, requested, filled, seconds)."""
    since = func.min(OrderEvent.ts_utc)
    rows = s.execute(
        select(OrderIntent.id, OrderIntent.account_id, OrderIntent.broker_order_id, OrderIntent.strategy_tag,
               OrderIntent.run_id, Execution.leg_no, Execution.symbol, OrderIntent.requested_qty,
               OrderIntent.broker_filled_qty, since)
        .join(Execution, Execution.exit_intent_id == OrderIntent.id)
        .join(OrderEvent, and_(OrderEvent.intent_id == OrderIntent.id,
                               OrderEvent.to_status == S.PARTIALLY_FILLED))
        .where(OrderIntent.purpose == "exit", OrderIntent.status == S.PARTIALLY_FILLED,
               OrderIntent.broker_order_id.is_not(None))
        .group_by(OrderIntent.id)).all()
    now = now or utcnow()
    return [(*r[:9], (now - r[9]).total_seconds()) for r in rows
            if r[9] is not None and (now - r[9]).total_seconds() >= timeout_s]


def flag_once(s, run_id: int, account_id: int, event_type: str, prefix: str, message: str, **fields) -> bool:
    """A risk event flagging an exit (``event_type`` 'exit_failed', 'exit_partial'), once per ``prefix`` (which
    names the execution or the order). Returns False if it was flagged already."""
    if s.scalar(select(RiskEvent.id).where(RiskEvent.run_id == run_id, RiskEvent.event_type == event_type,
                                           RiskEvent.message.startswith(prefix)).limit(1)):
        return False
    s.add(RiskEvent(run_id=run_id, account_id=account_id, event_type=event_type, message=message[:512], **fields))
    return True


def run_tag(s, run: StrategyRun) -> str:
    """The strategy name an exit order carries as its tag."""
    return s.scalar(select(Strategy.name).where(Strategy.id == run.strategy_id))
