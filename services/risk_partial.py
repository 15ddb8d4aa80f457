"""The risk manager's partial-fill repairs, run by its sweep (``RiskManager._repair_exits``).

* An entry still working at the broker when its run exits: cancelorder for the remainder, so it cannot open a
  position after the exit. What of it filled meanwhile is exited by ``exit_late_remainders``.
* An exit partially filled for ``exit_partial_timeout_s``: flagged once (risk_event 'exit_partial' + service_log
  ERROR naming the leg and the quantities), then cancelorder for its remainder. The poller then sees it
  'cancelled', and the risk manager's ``_retry_failed`` writes ONE new exit for what is left (counted against
  ``exit_retries``). No second exit is written while the first can still fill: one live exit per leg.

Reads first, one short write for the flags, the network calls last: no call inside a write transaction.
"""
from __future__ import annotations

import logging

from db.clock import ist_now_str
from db.executions import filled_units
from db.exits import flag_once, grown_legs, run_tag, stuck_partial_exits, working_entries, write_exit_intent
from db.models import Execution, OrderIntent, StrategyRun
from db.run_fsm import LegStatus, RunStatus
from services.cancels import CancelSender
from services.context import ServiceContext
from services.health import service_log

log = logging.getLogger("services.risk")


def cancel_remainders(ctx: ServiceContext, sender: CancelSender) -> list[int]:
    """Flag stuck partial exits, then cancelorder for them and for the working entries of exiting runs.
    Returns the intent ids a cancel was sent for now."""
    with ctx.db.read() as s:
        working = working_entries(s)
        stuck = stuck_partial_exits(s, ctx.settings.service.exit_partial_timeout_s)
    if stuck:
        with ctx.db.write() as s:
            alerts = [m for m in (flag_exit_partial(s, ctx.settings.service.exit_partial_timeout_s, *row)
                                  for row in stuck) if m]
        for msg in alerts:
            service_log(ctx.db, "risk", "ERROR", msg)
    rows = working + [row[:4] for row in stuck]
    return sender.cancel(rows) if rows else []


def flag_exit_partial(s, timeout_s: float, intent_id, account_id, oid, tag, run_id, leg_no, symbol, requested,
                      filled, age) -> str | None:
    """risk_event 'exit_partial', once per exit order; returns the ERROR line for a new flag (None if flagged)."""
    prefix = f"exit intent {intent_id}:"
    what = (f"{prefix} leg {leg_no} {symbol} exit order {oid} filled {filled} of {requested}, partially filled "
            f"for {age:.0f} s; cancelling the remaining {requested - filled} to re-send it")
    if not flag_once(s, run_id, account_id, "exit_partial", prefix, what, action="cancel_retry",
                     threshold=timeout_s, value=float(filled), ts_ist=ist_now_str()):
        return None
    return f"EXIT PARTIAL: run {run_id} ({tag}) {what}"


def exit_late_remainders(s) -> list[int]:
    """In the caller's write transaction: an exited leg whose entry went on filling (the remainder filled before
    its cancel landed) now holds the entry's whole fill at its average price, and one exit closes the units the
    first exit did not. Returns the accounts of the exits written."""
    queued = []
    for ex_id in grown_legs(s):
        ex = s.get(Execution, ex_id)
        run = s.get(StrategyRun, ex.run_id)
        entry = s.get(OrderIntent, ex.entry_intent_id)
        extra = filled_units(entry.status, entry.broker_filled_qty, entry.requested_qty) - ex.quantity
        if extra <= 0 or ex.status != LegStatus.EXITED or run.status != RunStatus.EXITING:
            continue
        tag = run_tag(s, run)
        ex.quantity, ex.entry_price = ex.quantity + extra, entry.broker_avg_price or ex.entry_price
        write_exit_intent(s, run, tag, ex, extra)
        log.warning("run %s leg %s %s: the entry filled %s more after the exit; exiting them", run.id, ex.leg_no,
                    ex.symbol, extra)
        queued.append(run.account_id)
    return queued
