"""Execution and strategy-run bookkeeping driven by intent outcomes (service-side only).

Call ``apply_intent_outcome(s, intent_id)`` in the same transaction that moved an intent to a new status. It is
idempotent: it reads the intent's current status and brings its execution (and that execution's run) in line.

    entry filled, or partially filled -> execution 'entered' with quantity = the units filled so far and
                    entry_price = their average; later fills of the same entry raise both while it is 'entered'
    entry cancelled with a fill (the remainder cancelled) -> stays / becomes 'entered' with the filled units
    entry rejected / cancelled / denied with nothing filled -> execution 'failed'
    exit filled     -> execution 'exited' (exit_price)
    exit rejected / cancelled / denied -> execution stays 'exiting' (the risk manager retries); reported to caller

    run 'entering' -> 'active' once no execution is 'pending' ('failed' if every entry failed)
    run 'exiting' -> 'exited' once every execution is 'exited' or 'failed' ('active' too, if at least one exited)
                     and no leg can still grow: an entry still working at the broker, or an entry that filled more
                     than its execution holds (a remainder that filled after the exit was written), keeps the run
                     'exiting' for the risk manager (it cancels the one and exits the other)

``Execution.quantity`` is the quantity the leg holds at the broker: the requested quantity until the entry fills,
then the filled units. The requested quantity stays on the entry intent (``requested_qty``). Everything that values
or closes a leg (risk, positions, the exit order) reads ``quantity`` and so works on what was really filled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from sqlalchemy import select

from db.models import Execution, OrderIntent, StrategyRun, utcnow
from db.order_fsm import FAILED, MAY_HOLD_FILL, OPEN, Status, sql_in
from db.rawsql import raw_cursor
from db.run_fsm import DONE_LEG, FILLED_LEG, FINISHED_RUN, OPEN_LEG, UNFINISHED_RUN, LegStatus, RunStatus, apply_leg, \
    apply_run


def filled_units(status: str, broker_filled_qty: int | None, requested_qty: int) -> int:
    """Units an intent has filled: the broker's filled quantity, or all of it for a fill the book gave no
    quantity for."""
    return broker_filled_qty or (requested_qty if status == Status.FILLED else 0)


def leg_unsettled(ex_status: str, ex_qty: int, entry_status: str | None, entry_filled: int) -> bool:
    """Can this leg still change at the broker without a new order of ours? Its entry is still working, or filled
    more than the execution holds (the risk manager exits the difference)."""
    if ex_status not in FILLED_LEG or entry_status is None:
        return False
    return entry_status in OPEN or entry_filled > ex_qty  # OPEN: more of it can still fill


@dataclass
class Outcome:
    """What changed: run ids touched, and exit intents that failed (to be surfaced loudly)."""
    run_ids: set[int] = field(default_factory=set)
    failed_exits: list[int] = field(default_factory=list)

    def merge(self, other: "Outcome") -> "Outcome":
        self.run_ids |= other.run_ids
        self.failed_exits += other.failed_exits
        return self


def load_outcome_rows(s, intents: list[OrderIntent]) -> list:
    """Load the executions and runs ``apply_intent_outcome`` will read for ``intents`` in two queries, into the
    session (its ``s.get`` then finds them without a query each: the poller applies a chunk of intents in one
    write transaction, and two ORM loads per intent were a third of its time under the writer lock). The session
    holds its objects weakly: keep the returned list referenced while applying."""
    ex_ids = [i.execution_id for i in intents if i.execution_id is not None]
    if not ex_ids:
        return []
    executions = list(s.scalars(select(Execution).where(Execution.id.in_(ex_ids))))
    run_ids = {e.run_id for e in executions}
    return executions + list(s.scalars(select(StrategyRun).where(StrategyRun.id.in_(run_ids))))


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
        if intent.status in FAILED and ex.status == LegStatus.EXITING and ex.exit_intent_id == intent.id:
            out.failed_exits.append(intent.id)
    else:
        changed = False
    if changed:
        ex.updated_at = utcnow()
    if refresh_run(s, ex.run_id) or changed:
        out.run_ids.add(ex.run_id)
    return out


def _apply_entry(ex: Execution, intent: OrderIntent) -> bool:
    filled = filled_units(intent.status, intent.broker_filled_qty, intent.requested_qty)
    if ex.status == LegStatus.ENTERED and intent.status in MAY_HOLD_FILL and filled > ex.quantity:
        ex.quantity, ex.entry_price = filled, intent.broker_avg_price or ex.entry_price  # more of it filled
        return True
    if ex.status != LegStatus.PENDING:
        if ex.status == LegStatus.ENTERED and ex.entry_price is None and intent.broker_avg_price:
            ex.entry_price = intent.broker_avg_price
            return True
        return False
    if intent.status in MAY_HOLD_FILL and filled > 0:
        ex.status, ex.quantity, ex.entry_price = apply_leg(ex.status, LegStatus.ENTERED).value, filled, \
            intent.broker_avg_price
        return True
    if intent.status in FAILED:
        ex.status = apply_leg(ex.status, LegStatus.FAILED).value
        return True
    return False


def _apply_exit(ex: Execution, intent: OrderIntent) -> bool:
    if intent.status != Status.FILLED or ex.status == LegStatus.EXITED:
        if ex.status == LegStatus.EXITED and ex.exit_price is None and intent.broker_avg_price:
            ex.exit_price = intent.broker_avg_price
            return True
        return False
    if ex.exit_intent_id not in (None, intent.id):
        return False
    ex.status, ex.exit_price, ex.exit_intent_id = LegStatus.EXITED.value, intent.broker_avg_price, intent.id
    return True


# refresh_run's one read, as plain SQL: it runs once per applied intent, under the writer lock (the ORM select
# was most of the poller's time there)
RUN_LEGS_SQL = ("SELECT e.status, e.quantity, i.status, i.broker_filled_qty, i.requested_qty FROM executions e "
                "LEFT JOIN order_intents i ON i.id = e.entry_intent_id WHERE e.run_id = ?")


def refresh_run(s, run_id: int) -> bool:
    """Derive the run status from its executions. Returns True if the run changed."""
    run = s.get(StrategyRun, run_id)
    if run is None:
        return False
    rows = raw_cursor(s).execute(RUN_LEGS_SQL, (run_id,)).fetchall()  # pending ORM changes flushed first
    statuses = [r[0] for r in rows]
    unsettled = any(leg_unsettled(st, qty, ei, filled_units(ei, filled, req) if ei else 0)
                    for st, qty, ei, filled, req in rows)
    new = _run_status(run.status, statuses, unsettled)
    if new == run.status:
        return False
    run.status = apply_run(run.status, new).value
    if new in FINISHED_RUN and run.exited_at is None:
        run.exited_at = utcnow()
    return True


def _run_status(current: str, statuses: list[str], unsettled: bool = False) -> str:
    """``unsettled``: some leg can still grow at the broker (``leg_unsettled``): the run cannot be 'exited'."""
    if not statuses:
        return current
    if current == RunStatus.ENTERING and LegStatus.PENDING not in statuses:
        if all(x == LegStatus.FAILED for x in statuses):
            return RunStatus.FAILED.value
        current = RunStatus.ACTIVE.value
    done = all(x in DONE_LEG for x in statuses) and not unsettled
    exited_one = LegStatus.EXITED in statuses
    if done and (current == RunStatus.EXITING or (current == RunStatus.ACTIVE and exited_one)):
        return RunStatus.EXITED.value
    return current


SWEEP_SQL = ("SELECT r.id, r.status, e.id, e.status, e.quantity, e.entry_price, e.exit_price, e.entry_intent_id, "
             "e.exit_intent_id, ei.status, ei.broker_avg_price, ei.broker_filled_qty, ei.requested_qty, "
             "xi.status, xi.broker_avg_price "
             "FROM strategy_runs r LEFT JOIN executions e ON e.run_id = r.id "
             "LEFT JOIN order_intents ei ON ei.id = e.entry_intent_id "
             "LEFT JOIN order_intents xi ON xi.id = e.exit_intent_id "
             f"WHERE r.status IN {sql_in(UNFINISHED_RUN)}")


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
    for run_id, (status, statuses, unsettled) in runs.items():
        if (run_id in touched or _run_status(status, statuses, unsettled) != status) and refresh_run(s, run_id):
            out.run_ids.add(run_id)
    return out


def sweep_needed(s) -> bool:
    """Would ``sweep`` change anything? Read-only (a read session will do), so a poll cycle where everything is in
    line does not take the write lock at all."""
    runs, todo = _sweep_plan(s)
    return bool(todo) or any(_run_status(status, statuses, unsettled) != status
                             for status, statuses, unsettled in runs.values())


def _sweep_plan(s) -> tuple[dict[int, tuple[str, list[str], bool]], list[tuple[int, int]]]:
    """(run id -> (run status, execution statuses, a leg unsettled), [(run id, intent id) whose outcome is not
    yet applied])."""
    runs: dict[int, list] = {}
    todo: list[tuple[int, int]] = []
    for (run_id, run_status, ex_id, ex_status, qty, entry_price, exit_price, entry_id, exit_id,
         entry_status, entry_avg, entry_filled, entry_req, exit_status, exit_avg) in raw_cursor(s).execute(SWEEP_SQL):
        plan = runs.setdefault(run_id, [run_status, [], False])
        if ex_id is None:
            continue
        plan[1].append(ex_status)
        filled = filled_units(entry_status, entry_filled, entry_req) if entry_status else 0
        plan[2] = plan[2] or leg_unsettled(ex_status, qty, entry_status, filled)
        if ex_status not in OPEN_LEG:
            continue
        row = dict(status=ex_status, quantity=qty, entry_price=entry_price, exit_price=exit_price,
                   entry_intent_id=entry_id, exit_intent_id=exit_id)
        if entry_id is not None and _apply_entry(SimpleNamespace(**row), SimpleNamespace(
                id=entry_id, status=entry_status, broker_avg_price=entry_avg, broker_filled_qty=entry_filled,
                requested_qty=entry_req)):
            todo.append((run_id, entry_id))
        if exit_id is not None and _apply_exit(SimpleNamespace(**row), SimpleNamespace(
                id=exit_id, status=exit_status, broker_avg_price=exit_avg)):
            todo.append((run_id, exit_id))
    return {run_id: tuple(plan) for run_id, plan in runs.items()}, todo
