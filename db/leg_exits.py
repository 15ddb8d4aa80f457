"""One leg of a strategy run on its own: its exit (a stop-loss / target / trailing hit, the trader's close_leg), its
re-entry after a stop, its roll to another strike / expiry, and a working order's new price (modify_order).

Every writer works in the caller's transaction and commits nothing; the risk manager's exit writer (the
dispatcher's ``submit_now``) owns the transaction, claims the most urgent intent (BUY first) and POSTs it.

    write_leg_exit     the leg's entered executions -> 'exiting' with one exit each (opposite side, MARKET, the
                       quantity held), by compare-and-set from 'entered', so a leg exits once however many ticks
                       race (and the one-live-exit-per-leg index holds besides); the run stays live with its other
                       legs. After a stop (not a target, not a close) with re-entries left, one re-entry per
                       execution is written beside it as a WAITING execution: 'pending', no entry intent yet,
                       attempt + 1. Persisted there, a restart neither loses nor repeats it.
    write_reentries    a waiting re-entry's turn (the stopped leg's exit filled and, with reentry_wait, the price is
                       back at the first entry's level): its entry intent, with a client_order_id derived from
                       run / leg / attempt / execution, so it is written exactly once. An account that is halted or
                       reducing gets it denied by the dispatcher like any entry: the leg fails, nothing retries it.
    write_roll         roll_leg: the leg's exits and the new contract's entries in one transaction; priorities are
                       the usual ones (exits that BUY, then entries that BUY, then SELL exits, then SELL entries),
                       so BUY orders go first. Idempotent by the command's id (client_order_ids derive from it).
A run exit (db/exits.py ``write_run_exit``) fails the run's waiting re-entries: nothing re-enters an exiting run.
"""
from __future__ import annotations

import json
from typing import NamedTuple

from sqlalchemy import select

from db.commands import CommandError, split_qty
from db.exits import exit_intent_fields
from db.intents import transition
from db.models import Execution, Instrument, OrderEvent, OrderIntent, RiskEvent, Strategy, StrategyRun, utcnow
from db.order_fsm import OPEN, Status, sql_in
from db.prices import fresh_ltp
from db.rawsql import insert_row, raw_cursor, update_rows
from db.run_fsm import ACTIVE_LEG, LIVE_RUN, LegStatus
from db.strategies import LEG_STOP_FIELDS, entry_priority, parse_expiry
from db.vocab import REENTER_AFTER, LegExit, ReentryMode, StopMode

L, S = LegStatus, Status
EXECUTIONS, INTENTS = Execution.__table__, OrderIntent.__table__


class LegRow(NamedTuple):
    id: int
    leg_no: int
    action: str
    symbol: str
    exchange: str
    quantity: int
    product: str
    account_id: int
    entry_price: float | None
    entry_intent_id: int | None
    attempt: int
    reentry_ref: float | None
    sl_mode: str
    sl_value: float | None
    tp_mode: str
    tp_value: float | None
    trail_points: float | None
    reentry_count: int
    reentry_mode: str
    reentry_wait: int


LEG_SQL = f"SELECT {', '.join(LegRow._fields)} FROM executions WHERE run_id = ? AND leg_no = ? "
RUN_SQL = ("SELECT r.account_id, s.name, r.status FROM strategy_runs r JOIN strategies s ON s.id = r.strategy_id "
           "WHERE r.id = ?")
WAITING_WHERE = f"run_id = ? AND leg_no = ? AND status = '{L.PENDING}' AND entry_intent_id IS NULL"
QUEUED_LEG_ENTRIES_SQL = ("SELECT i.id, i.execution_id FROM order_intents i JOIN executions e ON e.id = i.execution_id "
                          f"WHERE e.run_id = ? AND e.leg_no = ? AND i.purpose = 'entry' AND i.status = '{S.QUEUED}'")


def _live_run(cur, run_id: int) -> tuple[int, str] | None:
    row = cur.execute(RUN_SQL, (run_id,)).fetchone()
    if row is None or row[2] not in LIVE_RUN:
        return None
    return row[0], row[1]


def _legs(cur, run_id: int, leg_no: int, status: LegStatus) -> list[LegRow]:
    return [LegRow(*r) for r in cur.execute(LEG_SQL + "AND status = ? ORDER BY id", (run_id, leg_no, status.value))]


def fail_waiting(cur, run_id: int, leg_no: int | None = None) -> int:
    """Waiting re-entries of the run (of one leg) -> 'failed': they will not re-enter. Returns how many."""
    if leg_no is None:
        return update_rows(cur, EXECUTIONS, dict(status=L.FAILED.value, updated_at=utcnow()),
                           f"run_id = ? AND status = '{L.PENDING}' AND entry_intent_id IS NULL", (run_id,))
    return update_rows(cur, EXECUTIONS, dict(status=L.FAILED.value, updated_at=utcnow()), WAITING_WHERE,
                       (run_id, leg_no))


def _cancel_queued_leg_entries(s, cur, run_id: int, leg_no: int) -> None:
    for intent_id, ex_id in cur.execute(QUEUED_LEG_ENTRIES_SQL, (run_id, leg_no)).fetchall():
        if transition(s, intent_id, S.QUEUED, S.CANCELLED, "risk", "its leg is exiting"):
            update_rows(cur, EXECUTIONS, dict(status=L.FAILED.value, updated_at=utcnow()),
                        "id = ? AND status = ?", (ex_id, L.PENDING.value))


def describe_leg(leg_no: int, symbol: str, action: str) -> str:
    return f"leg {leg_no} ({action} {symbol})"


def write_leg_exit(s, run_id: int, leg_no: int, kind: str, threshold, value, ts_ist: str,
                   decided_on: str = "", coid_of=None) -> tuple[list[int], int, int] | None:
    """In the caller's transaction: the leg's entered executions -> 'exiting', one exit intent each, its queued
    entries and waiting re-entries withdrawn, the re-entries a stop earns written waiting, the risk event naming
    the leg and the level. Returns (exit intent ids, account id, re-entries written), or None when the run is not
    live or the leg holds nothing entered (exited already: idempotent). ``coid_of(execution_id)``: the exits'
    client_order_ids when a caller must find them again (a command carried out twice), else fresh ones."""
    cur = raw_cursor(s)
    live = _live_run(cur, run_id)
    if live is None:
        return None
    account_id, tag = live
    legs = _legs(cur, run_id, leg_no, L.ENTERED)
    if not legs:
        # closing a leg that waits to re-enter: it will not re-enter
        return ([], account_id, 0) if kind == LegExit.CLOSE and fail_waiting(cur, run_id, leg_no) else None
    now = utcnow()
    fields = [exit_intent_fields(account_id, run_id, tag, ex) for ex in legs]
    if coid_of is not None:
        for ex, f in zip(legs, fields, strict=True):
            f["client_order_id"] = coid_of(ex.id)
    ids = [insert_row(cur, INTENTS, f, now) for f in fields]
    for ex, intent_id in zip(legs, ids, strict=True):
        if update_rows(cur, EXECUTIONS, dict(status=L.EXITING.value, exit_intent_id=intent_id, exit_kind=kind[:16],
                                             updated_at=now), "id = ? AND status = ?", (ex.id, L.ENTERED.value)) != 1:
            raise RuntimeError(f"execution {ex.id} left '{L.ENTERED}' inside its own exit transaction")
    _cancel_queued_leg_entries(s, cur, run_id, leg_no)
    fail_waiting(cur, run_id, leg_no)
    waiting = 0
    if kind in REENTER_AFTER:
        for ex in legs:
            if ex.attempt < (ex.reentry_count or 0):
                _write_waiting(cur, run_id, ex, now)
                waiting += 1
    first = legs[0]
    what = describe_leg(leg_no, first.symbol, first.action)
    level = f" at {threshold:g}" if isinstance(threshold, int | float) else ""
    seen = f" (price {value:g})" if isinstance(value, int | float) else ""
    again = f"; re-entry {first.attempt + 1} of {first.reentry_count} waiting" if waiting else ""
    insert_row(cur, RiskEvent.__table__, dict(
        run_id=run_id, account_id=account_id, event_type=kind[:32], threshold=threshold, value=value,
        action="exit leg", ts_ist=ts_ist, ts_utc=now, exit_order_ids=json.dumps([f["client_order_id"] for f in fields]),
        message=f"{tag}: {kind} {what}{level}{seen}: exit of {len(ids)} order(s){again}"[:512],
        decided_on=decided_on), now)
    return ids, account_id, waiting


def _requested(cur, ex: LegRow) -> int:
    """The quantity the leg asked for at entry (a partly filled entry re-enters its whole slice)."""
    row = cur.execute("SELECT requested_qty FROM order_intents WHERE id = ?", (ex.entry_intent_id,)).fetchone() \
        if ex.entry_intent_id else None
    return int(row[0]) if row else ex.quantity


def _write_waiting(cur, run_id: int, ex: LegRow, now) -> int:
    return insert_row(cur, EXECUTIONS, dict(
        run_id=run_id, account_id=ex.account_id, leg_no=ex.leg_no, symbol=ex.symbol, exchange=ex.exchange,
        action=ex.action, quantity=_requested(cur, ex), product=ex.product, status=L.PENDING.value,
        attempt=ex.attempt + 1, reentry_ref=ex.reentry_ref if ex.reentry_ref is not None else ex.entry_price,
        **{f: getattr(ex, f) for f in LEG_STOP_FIELDS}, updated_at=now), now)


def reentry_coid(run_id: int, leg_no: int, attempt: int, execution_id: int) -> str:
    """The entry of a re-entry: one per waiting execution, whoever writes it and however often."""
    return f"re-{run_id}-{leg_no}-{attempt}-{execution_id}"[:40]


class Waiting(NamedTuple):
    """A waiting re-entry as the risk manager watches it."""
    execution_id: int
    run_id: int
    account_id: int
    leg_no: int
    symbol: str
    exchange: str
    action: str
    attempt: int
    ref: float | None
    wait: bool
    ready: bool  # no execution of the leg holds units any more (the stop's exit filled)


WAITING_SQL = ("SELECT e.id, e.run_id, r.account_id, e.leg_no, e.symbol, e.exchange, e.action, e.attempt, "
               "e.reentry_ref, e.reentry_wait, NOT EXISTS (SELECT 1 FROM executions o WHERE o.run_id = e.run_id "
               f"AND o.leg_no = e.leg_no AND o.status IN {sql_in(ACTIVE_LEG)}) "
               "FROM executions e JOIN strategy_runs r ON r.id = e.run_id "
               f"WHERE r.status IN {sql_in(LIVE_RUN)} AND e.status = '{L.PENDING}' AND e.entry_intent_id IS NULL "
               "ORDER BY e.id")


def waiting_reentries(s) -> list[Waiting]:
    return [Waiting(*r[:9], bool(r[9]), bool(r[10])) for r in raw_cursor(s).execute(WAITING_SQL)]


def price_back(action: str, ref: float | None, ltp: float) -> bool:
    """Has the price come back to the first entry's level? A short was stopped above its entry and re-enters once
    the price is back at or below it; a long at or above it."""
    if ref is None:
        return True
    return ltp <= ref if action == "SELL" else ltp >= ref


def _atm_contract(s, run: StrategyRun, symbol: str, exchange: str) -> Instrument:
    """The listed strike nearest the underlying's price now, same expiry and option type as ``symbol``."""
    cur = s.get(Instrument, (symbol, exchange))
    st = s.get(Strategy, run.strategy_id)
    if cur is None or st is None or cur.instrumenttype not in ("CE", "PE"):
        raise CommandError(f"{symbol}: not an option in the symbol master; cannot re-resolve ATM")
    ltp = fresh_ltp(s, st.underlying, st.exchange)
    if ltp is None:
        raise CommandError(f"no live price for {st.underlying}: cannot re-resolve the ATM strike")
    chain = _chain(s, cur)
    return min(chain, key=lambda i: abs(i.strike - ltp))


def _chain(s, inst: Instrument, expiry: str | None = None) -> list[Instrument]:
    return list(s.scalars(select(Instrument).where(
        Instrument.name == inst.name, Instrument.exchange == inst.exchange,
        Instrument.expiry == (expiry or inst.expiry), Instrument.instrumenttype == inst.instrumenttype)
        .order_by(Instrument.strike)))


def write_reentries(s, run_id: int, leg_no: int, ts_ist: str) -> tuple[list[int], int] | None:
    """In the caller's transaction: every waiting re-entry of the leg gets its entry intent (ATM re-resolved now
    for reentry_mode 'atm'). Returns (entry intent ids, account id), or None when there is nothing to do: the run is
    not live, the leg still holds units, or it has no waiting re-entry (written already)."""
    cur = raw_cursor(s)
    live = _live_run(cur, run_id)
    if live is None:
        return None
    account_id, tag = live
    if cur.execute(f"SELECT 1 FROM executions WHERE run_id = ? AND leg_no = ? AND status IN {sql_in(ACTIVE_LEG)}",
                   (run_id, leg_no)).fetchone():
        return None
    waiting = list(s.scalars(select(Execution).where(
        Execution.run_id == run_id, Execution.leg_no == leg_no, Execution.status == L.PENDING,
        Execution.entry_intent_id.is_(None)).order_by(Execution.id)))
    if not waiting:
        return None
    run = s.get(StrategyRun, run_id)
    ids = []
    for ex in waiting:
        if ex.reentry_mode == ReentryMode.ATM:
            inst = _atm_contract(s, run, ex.symbol, ex.exchange)
            old = s.get(Instrument, (ex.symbol, ex.exchange))
            lots = ex.quantity // max(1, old.lotsize if old else 1)
            ex.symbol, ex.exchange, ex.quantity = inst.symbol, inst.exchange, lots * inst.lotsize
        coid = reentry_coid(run_id, leg_no, ex.attempt, ex.id)
        if s.scalar(select(OrderIntent.id).where(OrderIntent.client_order_id == coid)):
            continue  # cannot happen while the execution has no entry intent; the key is the guard
        intent = OrderIntent(client_order_id=coid, account_id=account_id, run_id=run_id, execution_id=ex.id,
                             purpose="entry", source="risk", priority=entry_priority(ex.action, ex.leg_no),
                             strategy_tag=tag[:64], symbol=ex.symbol, exchange=ex.exchange, action=ex.action,
                             requested_qty=ex.quantity, pricetype="MARKET", product=ex.product)
        s.add(intent)
        s.flush()
        ex.entry_intent_id = intent.id
        ids.append(intent.id)
    first = waiting[0]
    s.add(RiskEvent(run_id=run_id, account_id=account_id, event_type="leg_reentry", action="enter leg",
                    ts_ist=ts_ist, exit_order_ids=json.dumps([reentry_coid(run_id, leg_no, e.attempt, e.id)
                                                              for e in waiting]),
                    message=f"{tag}: re-entry {first.attempt} of {first.reentry_count} of "
                            f"{describe_leg(leg_no, first.symbol, first.action)}: {len(ids)} order(s)"[:512]))
    return ids, account_id


# ---- roll_leg ---------------------------------------------------------------------------------------------------
def roll_coid(command_id: int, execution_id: int, part: str) -> str:
    return f"roll-{command_id}-{execution_id}-{part}"[:40]


def _roll_target(s, inst: Instrument, strike, offset, expiry: str | None) -> Instrument:
    """The contract a leg rolls to: ``strike`` (listed), or ``offset`` listed strikes from the leg's own (+ higher),
    in ``expiry`` (default: the leg's)."""
    chain = _chain(s, inst, expiry)
    if not chain:
        raise CommandError(f"no {inst.name} {inst.instrumenttype} contracts expiring {expiry or inst.expiry}")
    if strike is not None:
        for c in chain:
            if abs(c.strike - float(strike)) < 1e-6:
                return c
        raise CommandError(f"strike {float(strike):g} is not listed for {expiry or inst.expiry}")
    base = min(range(len(chain)), key=lambda i: abs(chain[i].strike - inst.strike))
    idx = base + int(offset or 0)
    if not 0 <= idx < len(chain):
        raise CommandError(f"{offset:+d} strikes from {inst.strike:g} is outside the listed strikes")
    return chain[idx]


def write_roll(s, command_id: int, run_id: int, leg_no: int, strike=None, offset=None,
               expiry: str | None = None, ts_ist: str = "") -> tuple[list[int], int, str] | None:
    """In the caller's transaction: close the leg's entered executions and open the same lots of the new contract
    (new executions carrying the leg's stops). Returns (intent ids, account id, what) or None when this command was
    carried out already (its first client_order_id exists). CommandError when the run is not live, the leg holds
    nothing entered, or the contract cannot be found; nothing is written then."""
    cur = raw_cursor(s)
    live = _live_run(cur, run_id)
    if live is None:
        raise CommandError(f"run {run_id} is not live; nothing to roll")
    account_id, tag = live
    legs = _legs(cur, run_id, leg_no, L.ENTERED)
    if not legs:
        if s.scalar(select(OrderIntent.id).where(OrderIntent.client_order_id.like(f"roll-{command_id}-%")).limit(1)):
            return None
        raise CommandError(f"run {run_id} leg {leg_no} holds nothing entered; nothing to roll")
    inst = s.get(Instrument, (legs[0].symbol, legs[0].exchange))
    if inst is None or inst.instrumenttype not in ("CE", "PE"):
        raise CommandError(f"leg {leg_no} ({legs[0].symbol}) is not an option in the symbol master; cannot roll it")
    if expiry is not None and not any(expiry == e for e in _expiries(s, inst)):
        raise CommandError(f"no {inst.name} {inst.instrumenttype} expiring {expiry}")
    target = _roll_target(s, inst, strike, offset, expiry)
    if target.symbol == inst.symbol:
        raise CommandError(f"leg {leg_no} already holds {inst.symbol}")
    lots = sum(ex.quantity for ex in legs) // max(1, inst.lotsize)
    if lots <= 0:
        raise CommandError(f"leg {leg_no} holds less than a lot; cannot roll it")
    now = utcnow()
    ids = []
    for ex in legs:
        f = exit_intent_fields(account_id, run_id, tag, ex)
        f["client_order_id"] = roll_coid(command_id, ex.id, "x")
        iid = insert_row(cur, INTENTS, f, now)
        update_rows(cur, EXECUTIONS, dict(status=L.EXITING.value, exit_intent_id=iid, exit_kind=LegExit.ROLL.value,
                                          updated_at=now), "id = ? AND status = ?", (ex.id, L.ENTERED.value))
        ids.append(iid)
    fail_waiting(cur, run_id, leg_no)
    first = legs[0]
    for n, qty in enumerate(split_qty(lots * target.lotsize, target.freeze_qty, target.lotsize), start=1):
        ex = Execution(run_id=run_id, account_id=account_id, leg_no=leg_no, symbol=target.symbol,
                       exchange=target.exchange, action=first.action, quantity=qty, product=first.product,
                       attempt=first.attempt, **{f: getattr(first, f) for f in LEG_STOP_FIELDS})
        s.add(ex)
        s.flush()
        intent = OrderIntent(client_order_id=roll_coid(command_id, first.id, f"e{n}"), account_id=account_id,
                             run_id=run_id, execution_id=ex.id, purpose="entry", source="risk",
                             priority=entry_priority(first.action, leg_no), strategy_tag=tag[:64],
                             symbol=target.symbol, exchange=target.exchange, action=first.action, requested_qty=qty,
                             pricetype="MARKET", product=first.product)
        s.add(intent)
        s.flush()
        ex.entry_intent_id = intent.id
        ids.append(intent.id)
    what = f"{describe_leg(leg_no, inst.symbol, first.action)} rolled to {target.symbol} ({lots} lot(s))"
    s.add(RiskEvent(run_id=run_id, account_id=account_id, event_type=LegExit.ROLL.value, action="roll leg",
                    ts_ist=ts_ist, message=f"{tag}: {what}"[:512],
                    exit_order_ids=json.dumps([roll_coid(command_id, ex.id, "x") for ex in legs])))
    return ids, account_id, what


def _expiries(s, inst: Instrument) -> list[str]:
    return sorted(set(s.scalars(select(Instrument.expiry).where(
        Instrument.name == inst.name, Instrument.exchange == inst.exchange,
        Instrument.instrumenttype == inst.instrumenttype))), key=parse_expiry)


def check_roll_leg(s, run_id: int, leg_no: int) -> None:
    """For the form: the run and its leg exist (CommandError otherwise)."""
    if s.get(StrategyRun, run_id) is None:
        raise CommandError(f"no run with id {run_id}")
    if s.scalar(select(Execution.id).where(Execution.run_id == run_id, Execution.leg_no == leg_no).limit(1)) is None:
        raise CommandError(f"run {run_id} has no leg {leg_no}")


# ---- modify_order -----------------------------------------------------------------------------------------------
MODIFIABLE = frozenset({"LIMIT", "SL"})


def modifiable(s, intent_id: int, price: float, quantity: int | None = None) -> OrderIntent:
    """The working LIMIT / SL intent whose price may become ``price`` (and its quantity ``quantity``), or
    CommandError saying why not. Only a Quick Order's quantity can change: a strategy leg's quantity is its run's,
    and an exit's is what it closes."""
    intent = s.get(OrderIntent, intent_id)
    if intent is None:
        raise CommandError(f"no order intent {intent_id}")
    if intent.pricetype not in MODIFIABLE:
        raise CommandError(f"intent {intent_id} is a {intent.pricetype} order: only a LIMIT or SL order has a price "
                           f"to modify")
    if intent.status not in OPEN or not intent.broker_order_id:
        raise CommandError(f"intent {intent_id} is '{intent.status}': only an order working at the broker can be "
                           f"modified")
    inst = s.get(Instrument, (intent.symbol, intent.exchange))
    tick = (inst.tick_size if inst else 0.05) or 0.05
    if abs(round(price / tick) * tick - price) > 1e-6:
        raise CommandError(f"Price must be a multiple of the tick size {tick}")
    if quantity is not None and quantity != intent.requested_qty:
        _check_new_quantity(intent, inst, quantity)
    return intent


def _check_new_quantity(intent: OrderIntent, inst: Instrument | None, quantity: int) -> None:
    if intent.purpose != "manual" or intent.execution_id is not None:
        raise CommandError(f"intent {intent.id} is a strategy or exit order: only its price can change")
    lot = max(1, (inst.lotsize if inst else 1) or 1)
    if quantity % lot:
        raise CommandError(f"Quantity must be a multiple of the lot size {lot}")
    if quantity <= (intent.broker_filled_qty or 0):
        raise CommandError(f"Quantity must stay above the {intent.broker_filled_qty} already filled")
    if inst is not None and inst.freeze_qty and quantity > inst.freeze_qty:
        raise CommandError(f"Quantity must be at most the freeze quantity {inst.freeze_qty} (one order)")


def record_modified(s, intent_id: int, price: float, old: float, quantity: int | None = None) -> None:
    """The broker accepted the new price (and quantity): the intent carries it, and its audit trail says so."""
    intent = s.get(OrderIntent, intent_id)
    what = f"price modified {old:g} -> {price:g}"
    if quantity is not None and quantity != intent.requested_qty:
        what += f", quantity {intent.requested_qty} -> {quantity}"
        intent.requested_qty = quantity
    intent.limit_price, intent.updated_at = price, utcnow()
    s.add(OrderEvent(intent_id=intent_id, from_status=intent.status, to_status=intent.status, source="ui",
                     reason=what))


def run_legs(db, run_id: int) -> list[dict]:
    """The Risk Monitor's legs of a run (see ``leg_summary``)."""
    with db.read() as s:
        return leg_summary(s, run_id)


def working_priced_orders(db, limit: int = 200) -> list[dict]:
    """LIMIT / SL intents working at the broker (the Risk Monitor's Modify price): newest first."""
    with db.read() as s:
        rows = s.scalars(select(OrderIntent).where(OrderIntent.pricetype.in_(tuple(MODIFIABLE)),
                                                  OrderIntent.status.in_(tuple(OPEN)),
                                                  OrderIntent.broker_order_id.is_not(None))
                         .order_by(OrderIntent.id.desc()).limit(limit))
        return [dict(id=i.id, status=i.status, account_id=i.account_id, run_id=i.run_id, symbol=i.symbol,
                     action=i.action, qty=i.requested_qty, filled=i.broker_filled_qty, pricetype=i.pricetype,
                     price=i.limit_price, broker_order_id=i.broker_order_id) for i in rows]


def leg_summary(s, run_id: int) -> list[dict]:
    """Per leg of a run (the Risk Monitor's leg actions): leg_no, symbol(s) held, action, quantity entered, stops."""
    out: dict[int, dict] = {}
    for ex in s.scalars(select(Execution).where(Execution.run_id == run_id).order_by(Execution.leg_no, Execution.id)):
        row = out.setdefault(ex.leg_no, dict(leg_no=ex.leg_no, symbol=ex.symbol, action=ex.action, held=0,
                                             state=ex.status, stops=_stops_text(ex), attempt=ex.attempt))
        if ex.status in ACTIVE_LEG:
            row["held"] += ex.quantity
            row["symbol"], row["state"] = ex.symbol, ex.status
        elif row["held"] == 0:
            row["state"], row["symbol"], row["attempt"] = ex.status, ex.symbol, ex.attempt
    return list(out.values())


def _stops_text(ex) -> str:
    parts = []
    if ex.sl_value is not None:
        parts.append(f"SL {ex.sl_value:g}{' %' if ex.sl_mode == StopMode.PCT else ' pts'}")
    if ex.tp_value is not None:
        parts.append(f"TP {ex.tp_value:g}{' %' if ex.tp_mode == StopMode.PCT else ' pts'}")
    if ex.trail_points is not None:
        parts.append(f"trail {ex.trail_points:g} pts")
    if ex.reentry_count:
        parts.append(f"re-entry ×{ex.reentry_count} {ex.reentry_mode}{' after return' if ex.reentry_wait else ''}")
    return ", ".join(parts) or "—"
