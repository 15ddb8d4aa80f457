"""Exit orders: the statements that write a strategy leg's exit intent (order_intents rows with purpose 'exit').

Two writers, one rule set (opposite side, the leg's quantity, MARKET, reduce-only; exits that BUY sort first):
    write_run_exit     the whole run at once, on plain sqlite3 statements (the tick -> exit hot path): the run's
                       compare-and-set to 'exiting', one exit per entered leg, its queued entries withdrawn, the
                       risk event; all in the caller's transaction
    write_exit_intent  one leg, through the ORM (retries of failed exits, late fills, remainders)
Neither commits or sends anything: the dispatcher's exit writer (services/dispatcher.py ``submit_now``) owns the
transaction, the claim and the POST.
"""
from __future__ import annotations

import json
from typing import NamedTuple

from db.intents import new_client_order_id, transition
from db.models import Execution, OrderIntent, RiskEvent, StrategyRun, utcnow
from db.order_fsm import Status
from db.rawsql import insert_row, raw_cursor, update_rows

RUNS, EXECUTIONS = StrategyRun.__table__, Execution.__table__
LIVE_RUN = ("entering", "active")  # the runs the risk manager watches, and the ones an exit can start from
LIVE_IN = f"IN ({', '.join(repr(x) for x in LIVE_RUN)})"  # the same statuses in SQL


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
ENTERED_LEGS_SQL = (f"SELECT {', '.join(ExitLeg._fields)} FROM executions WHERE run_id = ? AND status = 'entered' "
                    "ORDER BY leg_no, id")
QUEUED_ENTRIES_SQL = ("SELECT id, execution_id FROM order_intents WHERE run_id = ? AND purpose = 'entry' "
                      "AND status = 'queued'")


def write_exit_intent(s, run: StrategyRun, tag: str, ex: Execution, qty: int | None = None) -> OrderIntent:
    """One leg's exit (ORM): the intent, and the leg 'exiting' on it."""
    intent = OrderIntent(**exit_intent_fields(run.account_id, run.id, tag, ex, qty))
    s.add(intent)
    s.flush()
    ex.status, ex.exit_intent_id = "exiting", intent.id
    return intent


def write_run_exit(s, run_id: int, reason: str, threshold, value, ts_ist: str,
                   tsl: dict | None = None) -> tuple[list[int], int] | None:
    """In the caller's transaction: run -> 'exiting' (CAS from a live status, with the trailing state ``tsl``
    saved), one exit intent per entered leg, queued entries cancelled, the risk event. Returns (intent ids,
    account id), or None if the run was not live (already exiting: idempotent)."""
    now = utcnow()
    cur = raw_cursor(s)
    if update_rows(cur, RUNS, dict(status="exiting", exit_reason=reason[:64], exit_requested_at=now, **(tsl or {})),
                   f"id = ? AND status {LIVE_IN}", (run_id,)) != 1:
        return None
    account_id, tag = cur.execute(RUN_TAG_SQL, (run_id,)).fetchone()
    legs = [ExitLeg(*row) for row in cur.execute(ENTERED_LEGS_SQL, (run_id,)).fetchall()]
    fields = [exit_intent_fields(account_id, run_id, tag, ex) for ex in legs]
    ids = [insert_row(cur, OrderIntent.__table__, f, now) for f in fields]
    for ex, intent_id in zip(legs, ids, strict=True):
        update_rows(cur, EXECUTIONS, dict(status="exiting", exit_intent_id=intent_id, updated_at=now),
                    "id = ?", (ex.id,))
    _cancel_queued_entries(s, cur, run_id)
    insert_row(cur, RiskEvent.__table__, dict(
        run_id=run_id, account_id=account_id, event_type=reason[:32], threshold=threshold, value=value,
        action="exit", ts_ist=ts_ist, ts_utc=now, exit_order_ids=json.dumps([f["client_order_id"] for f in fields]),
        message=f"{tag}: {reason} exit of {len(ids)} leg(s)"), now)
    return ids, account_id


def _cancel_queued_entries(s, cur, run_id: int) -> None:
    """Entries not yet sent are withdrawn so they cannot open a position after the exit."""
    for intent_id, ex_id in cur.execute(QUEUED_ENTRIES_SQL, (run_id,)).fetchall():
        if transition(s, intent_id, Status.QUEUED, Status.CANCELLED, "risk", "run is exiting"):
            update_rows(cur, EXECUTIONS, dict(status="failed", updated_at=utcnow()),
                        "id = ? AND status = 'pending'", (ex_id,))
