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

from sqlalchemy import and_, func, select

from db.executions import filled_units
from db.models import Execution, OrderEvent, OrderIntent, RiskEvent, Strategy, StrategyRun, utcnow
from db.rawsql import raw_cursor
from services.cancels import CANCELLABLE, CancelSender
from services.context import ServiceContext, ist_now_str
from services.health import service_log

log = logging.getLogger("services.risk")
IN_CANCELLABLE = f"IN ({', '.join(repr(x) for x in CANCELLABLE)})"
WORKING_ENTRIES_SQL = ("SELECT i.id, i.account_id, i.broker_order_id, i.strategy_tag FROM order_intents i "
                       "JOIN strategy_runs r ON r.id = i.run_id WHERE r.status = 'exiting' AND i.purpose = 'entry' "
                       f"AND i.status {IN_CANCELLABLE} AND i.broker_order_id IS NOT NULL ORDER BY i.id")
# Exited legs of exiting runs whose entry filled more than the leg held when it was exited.
GROWN_SQL = ("SELECT e.id FROM executions e JOIN strategy_runs r ON r.id = e.run_id "
             "JOIN order_intents ei ON ei.id = e.entry_intent_id "
             "WHERE r.status = 'exiting' AND e.status = 'exited' "
             "AND ei.status IN ('filled', 'partially_filled', 'cancelled') "
             "AND (CASE WHEN ei.broker_filled_qty > 0 THEN ei.broker_filled_qty "
             "WHEN ei.status = 'filled' THEN ei.requested_qty ELSE 0 END) > e.quantity ORDER BY e.id")


def cancel_remainders(ctx: ServiceContext, sender: CancelSender) -> list[int]:
    """Flag stuck partial exits, then cancelorder for them and for the working entries of exiting runs.
    Returns the intent ids a cancel was sent for now."""
    with ctx.db.read() as s:
        working = [tuple(r) for r in raw_cursor(s).execute(WORKING_ENTRIES_SQL).fetchall()]
        stuck = stuck_exits(s, ctx.settings.service.exit_partial_timeout_s)
    if stuck:
        with ctx.db.write() as s:
            alerts = [m for m in (flag_exit_partial(s, ctx.settings.service.exit_partial_timeout_s, *row)
                                  for row in stuck) if m]
        for msg in alerts:
            service_log(ctx.db, "risk", "ERROR", msg)
    rows = working + [row[:4] for row in stuck]
    return sender.cancel(rows) if rows else []


def stuck_exits(s, timeout_s: float) -> list[tuple]:
    """Exits partially filled (since their first partial fill in order_events) for ``timeout_s`` or more:
    (intent id, account id, broker order id, tag, run id, leg no, symbol, requested, filled, seconds)."""
    since = func.min(OrderEvent.ts_utc)
    rows = s.execute(
        select(OrderIntent.id, OrderIntent.account_id, OrderIntent.broker_order_id, OrderIntent.strategy_tag,
               OrderIntent.run_id, Execution.leg_no, Execution.symbol, OrderIntent.requested_qty,
               OrderIntent.broker_filled_qty, since)
        .join(Execution, Execution.exit_intent_id == OrderIntent.id)
        .join(OrderEvent, and_(OrderEvent.intent_id == OrderIntent.id, OrderEvent.to_status == "partially_filled"))
        .where(OrderIntent.purpose == "exit", OrderIntent.status == "partially_filled",
               OrderIntent.broker_order_id.is_not(None))
        .group_by(OrderIntent.id)).all()
    now = utcnow()
    return [(*r[:9], (now - r[9]).total_seconds()) for r in rows
            if r[9] is not None and (now - r[9]).total_seconds() >= timeout_s]


def flag_exit_partial(s, timeout_s: float, intent_id, account_id, oid, tag, run_id, leg_no, symbol, requested,
                      filled, age) -> str | None:
    """risk_event 'exit_partial', once per exit order; returns the ERROR line for a new flag (None if flagged)."""
    prefix = f"exit intent {intent_id}:"
    if s.scalar(select(RiskEvent.id).where(RiskEvent.run_id == run_id, RiskEvent.event_type == "exit_partial",
                                           RiskEvent.message.startswith(prefix)).limit(1)):
        return None
    what = (f"{prefix} leg {leg_no} {symbol} exit order {oid} filled {filled} of {requested}, partially filled "
            f"for {age:.0f} s; cancelling the remaining {requested - filled} to re-send it")
    s.add(RiskEvent(run_id=run_id, account_id=account_id, event_type="exit_partial", action="cancel_retry",
                    threshold=timeout_s, value=float(filled), ts_ist=ist_now_str(), message=what[:512]))
    return f"EXIT PARTIAL: run {run_id} ({tag}) {what}"


def exit_late_remainders(s) -> int:
    """In the caller's write transaction: an exited leg whose entry went on filling (the remainder filled before
    its cancel landed) now holds the entry's whole fill at its average price, and one exit closes the units the
    first exit did not. Returns the exits written."""
    from services.risk import write_exit_intent  # the one exit-intent writer

    queued = 0
    for (ex_id,) in raw_cursor(s).execute(GROWN_SQL).fetchall():
        ex = s.get(Execution, ex_id)
        run = s.get(StrategyRun, ex.run_id)
        entry = s.get(OrderIntent, ex.entry_intent_id)
        extra = filled_units(entry.status, entry.broker_filled_qty, entry.requested_qty) - ex.quantity
        if extra <= 0 or ex.status != "exited" or run.status != "exiting":
            continue
        tag = s.scalar(select(Strategy.name).where(Strategy.id == run.strategy_id))
        ex.quantity, ex.entry_price = ex.quantity + extra, entry.broker_avg_price or ex.entry_price
        write_exit_intent(s, run, tag, ex, extra)
        log.warning("run %s leg %s %s: the entry filled %s more after the exit; exiting them", run.id, ex.leg_no,
                    ex.symbol, extra)
        queued += 1
    return queued
