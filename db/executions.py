"""Execution and strategy-run bookkeeping driven by intent outcomes (service-side only).

Call ``apply_intent_outcome(s, intent_id)`` in the same transaction that moved an intent to a new status. It is
idempotent: it reads the intent's current status and brings its execution (and that execution's run) in line.

    entry filled    -> execution 'entered' (entry_price = fill average)
    entry rejected / cancelled / denied -> execution 'failed'
    exit filled     -> execution 'exited' (exit_price)
    exit rejected / cancelled / denied -> execution stays 'exiting' (the risk manager retries); reported to caller

    run 'entering' -> 'active' once no execution is 'pending' ('failed' if every entry failed)
    run 'exiting' -> 'exited' once every execution is 'exited' or 'failed' ('active' too, if at least one exited)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from sqlalchemy import select

from db.models import Execution, OrderIntent, StrategyRun, utcnow
from db.rawsql import raw_cursor

FAILED_STATUSES = {"rejected", "cancelled", "denied"}


@dataclass
class Outcome:
    """What changed: run ids touched, and exit intents that failed (to be surfaced loudly)."""
    run_ids: set[int] = field(default_factory=set)
    failed_exits: list[int] = field(default_factory=list)

    def merge(self, other: "Outcome") -> "Outcome":
        self.run_ids |= other.run_ids
        self.failed_exits += other.failed_exits
        return self


def apply_intent_outcome(s, intent_id: int) -> Outcome:
    out = Outcome()
    intent = s.get(OrderIntent, intent_id)
    if intent is None or intent.execution_id is None:
        return out
    ex = s.get(Execution, intent.execution_id)
    if ex is None:
        return out
    if intent.purpose == "entry" and ex.entry_intent_id in (None, intent.id):
        changed = _apply_entry(ex, intent)
    elif intent.purpose == "exit":
        changed = _apply_exit(ex, intent)
        if intent.status in FAILED_STATUSES and ex.status == "exiting" and ex.exit_intent_id == intent.id:
            out.failed_exits.append(intent.id)
    else:
        changed = False
    if changed:
        ex.updated_at = utcnow()
    if refresh_run(s, ex.run_id) or changed:
        out.run_ids.add(ex.run_id)
    return out


def _apply_entry(ex: Execution, intent: OrderIntent) -> bool:
    if ex.status != "pending":
        if ex.status == "entered" and ex.entry_price is None and intent.broker_avg_price:
            ex.entry_price = intent.broker_avg_price
            return True
        return False
    if intent.status == "filled":
        ex.status, ex.entry_price = "entered", intent.broker_avg_price
        return True
    if intent.status in FAILED_STATUSES:
        ex.status = "failed"
        return True
    return False


def _apply_exit(ex: Execution, intent: OrderIntent) -> bool:
    if intent.status != "filled" or ex.status == "exited":
        if ex.status == "exited" and ex.exit_price is None and intent.broker_avg_price:
            ex.exit_price = intent.broker_avg_price
            return True
        return False
    if ex.exit_intent_id not in (None, intent.id):
        return False
    ex.status, ex.exit_price, ex.exit_intent_id = "exited", intent.broker_avg_price, intent.id
    return True


def refresh_run(s, run_id: int) -> bool:
    """Derive the run status from its executions. Returns True if the run changed."""
    run = s.get(StrategyRun, run_id)
    if run is None:
        return False
    statuses = list(s.scalars(select(Execution.status).where(Execution.run_id == run_id)))
    new = _run_status(run.status, statuses)
    if new == run.status:
        return False
    run.status = new
    if new in ("exited", "failed") and run.exited_at is None:
        run.exited_at = utcnow()
    return True


def _run_status(current: str, statuses: list[str]) -> str:
    if not statuses:
        return current
    if current == "entering" and "pending" not in statuses:
        if all(x == "failed" for x in statuses):
            return "failed"
        current = "active"
    done = all(x in ("exited", "failed") for x in statuses)
    if (current == "exiting" and done) or (current == "active" and done and "exited" in statuses):
        return "exited"
    return current


SWEEP_SQL = ("SELECT r.id, r.status, e.id, e.status, e.entry_price, e.exit_price, e.entry_intent_id, e.exit_intent_id, "
             "ei.status, ei.broker_avg_price, xi.status, xi.broker_avg_price "
             "FROM strategy_runs r LEFT JOIN executions e ON e.run_id = r.id "
             "LEFT JOIN order_intents ei ON ei.id = e.entry_intent_id "
             "LEFT JOIN order_intents xi ON xi.id = e.exit_intent_id "
             "WHERE r.status IN ('entering', 'active', 'exiting')")


def sweep(s) -> Outcome:
    """Repair pass (start-up and every poll cycle): re-derive executions of unfinished runs from their intents,
    so nothing depends on in-memory state surviving a crash.

    One plain SELECT reads every unfinished run, its executions and their intents; ``_apply_entry`` /
    ``_apply_exit`` / ``_run_status`` are dry-run on copies of those rows, and only the intents and runs they
    would change go through ``apply_intent_outcome`` / ``refresh_run`` (the ORM). A poll cycle where nothing is
    out of line therefore costs one query, not two ORM loads per execution (this runs every second beside the
    market-data thread)."""
    out = Outcome()
    runs, todo = _sweep_plan(s)
    for _, intent_id in todo:
        out.run_ids |= apply_intent_outcome(s, intent_id).run_ids
    touched = {run_id for run_id, _ in todo}
    for run_id, (status, statuses) in runs.items():
        if (run_id in touched or _run_status(status, statuses) != status) and refresh_run(s, run_id):
            out.run_ids.add(run_id)
    return out


def sweep_needed(s) -> bool:
    """Would ``sweep`` change anything? Read-only (a read session will do), so a poll cycle where everything is in
    line does not take the write lock at all."""
    runs, todo = _sweep_plan(s)
    return bool(todo) or any(_run_status(status, statuses) != status for status, statuses in runs.values())


def _sweep_plan(s) -> tuple[dict[int, tuple[str, list[str]]], list[tuple[int, int]]]:
    """(run id -> (run status, execution statuses), [(run id, intent id) whose outcome is not yet applied])."""
    runs: dict[int, tuple[str, list[str]]] = {}
    todo: list[tuple[int, int]] = []
    for (run_id, run_status, ex_id, ex_status, entry_price, exit_price, entry_id, exit_id,
         entry_status, entry_avg, exit_status, exit_avg) in raw_cursor(s).execute(SWEEP_SQL):
        statuses = runs.setdefault(run_id, (run_status, []))[1]
        if ex_id is None:
            continue
        statuses.append(ex_status)
        if ex_status not in ("pending", "exiting", "entered"):
            continue
        row = dict(status=ex_status, entry_price=entry_price, exit_price=exit_price, entry_intent_id=entry_id,
                   exit_intent_id=exit_id)
        if entry_id is not None and _apply_entry(SimpleNamespace(**row), SimpleNamespace(
                id=entry_id, status=entry_status, broker_avg_price=entry_avg)):
            todo.append((run_id, entry_id))
        if exit_id is not None and _apply_exit(SimpleNamespace(**row), SimpleNamespace(
                id=exit_id, status=exit_status, broker_avg_price=exit_avg)):
            todo.append((run_id, exit_id))
    return runs, todo
