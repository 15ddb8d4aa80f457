"""Quick Order stop-loss / target (quick_stops rows; states db.vocab.StopStatus): every statement the service's
stop watcher (services/stops.py), the flatten and the cancel_stop command run on them.

Exactly once: a stop's exit intent is written in the transaction that moves the stop 'armed' -> 'triggered' by
compare-and-set, and its client_order_id derives from the stop and the attempt (``stop_exit_coid``), so however
many ticks, sweeps or restarts see the level crossed, one exit is written.

Never a reversal: the exit closes min(the stop's quantity, what the account still holds in that direction), read
from the stored positionbook (account sync) net of the exits of ours still working on that position. The stored
book is trusted only when it was read after every fill of ours on that position and no order of ours on it has an
outcome still unknown (``book_available`` returns None otherwise: the watcher latches the hit, asks for a sync and
decides then). A position already flat cancels the stop instead.
"""
from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

from sqlalchemy import or_, select, update

from db.exits import exit_priority
from db.models import Account, OrderIntent, Position, QuickStop, RiskEvent, utcnow
from db.order_fsm import INFLIGHT, LIVE, OPEN, TERMINAL, Status
from db.stop_levels import StopSpec, levels
from db.vocab import LIVE_STOP, StopStatus

SOURCE = "stop"  # order_intents.source of a stop's exit
T = StopStatus


def stop_exit_coid(stop_id: int, attempt: int) -> str:
    return hashlib.sha1(f"stop:{stop_id}:{attempt}".encode()).hexdigest()[:32]


def opposite(side: str) -> str:
    return "SELL" if side == "BUY" else "BUY"


def _filled(status: str, filled_qty: int | None, requested: int) -> int:
    return filled_qty or (requested if status == Status.FILLED else 0)


def _spec(st) -> StopSpec:
    return StopSpec(st.sl_mode or "points", st.sl_value, st.tp_mode or "points", st.tp_value)


# ---- arming: the entry filled (or failed) -------------------------------------------------------------------------
class EntryRow(NamedTuple):
    stop_id: int
    account_id: int
    status: str
    quantity: int
    hit_kind: str
    entry_status: str
    entry_filled: int | None
    entry_requested: int
    entry_avg: float | None


def live_stop_entries(s) -> list[EntryRow]:
    """Every pending / armed stop with its entry intent's fill (one plain SELECT; runs every second)."""
    return [EntryRow(*r) for r in s.execute(
        select(QuickStop.id, QuickStop.account_id, QuickStop.status, QuickStop.quantity, QuickStop.hit_kind,
               OrderIntent.status, OrderIntent.broker_filled_qty, OrderIntent.requested_qty,
               OrderIntent.broker_avg_price)
        .join(OrderIntent, OrderIntent.id == QuickStop.entry_intent_id)
        .where(QuickStop.status.in_(LIVE_STOP)))]


def arming_change(r: EntryRow) -> str:
    """What the entry's fill asks of the stop: 'arm' (first fill, or more filled since), 'cancel' (the entry ended
    with nothing filled) or ''."""
    filled = _filled(r.entry_status, r.entry_filled, r.entry_requested)
    if r.status == T.PENDING:
        if filled > 0 and r.entry_avg:
            return "arm"
        if filled == 0 and r.entry_status in TERMINAL:
            return "cancel"
    elif r.status == T.ARMED and not r.hit_kind and filled > r.quantity and r.entry_avg:
        return "arm"  # a partly filled entry filled more: protect that too, at the new average
    return ""


def arm_stop(s, stop_id: int) -> bool:
    """Levels from the entry's average fill price on its filled quantity; pending -> armed (or armed with more
    filled). False if the stop changed meanwhile."""
    st = s.get(QuickStop, stop_id)
    entry = s.get(OrderIntent, st.entry_intent_id) if st is not None else None
    if entry is None or st.status not in LIVE_STOP or st.hit_kind or not entry.broker_avg_price:
        return False
    filled = _filled(entry.status, entry.broker_filled_qty, entry.requested_qty)
    if filled <= 0 or (st.status == T.ARMED and filled <= st.quantity):
        return False
    sl, tp = levels(_spec(st), st.side, float(entry.broker_avg_price))
    now = utcnow()
    st.quantity, st.entry_price, st.sl_level, st.tp_level, st.updated_at = filled, entry.broker_avg_price, sl, tp, now
    if st.status == T.PENDING:
        st.status, st.armed_at = T.ARMED.value, now
        st.status_reason = f"entry filled {filled} @ {entry.broker_avg_price}"
    return True


def cancel_stop_in(s, stop_id: int, reason: str, only: frozenset = LIVE_STOP) -> bool:
    """Compare-and-set a stop from one of ``only`` to 'cancelled' with the reason. False if it was not in one."""
    return s.execute(update(QuickStop).where(QuickStop.id == stop_id, QuickStop.status.in_(only)).values(
        status=T.CANCELLED.value, status_reason=reason[:256], updated_at=utcnow())).rowcount == 1


def cancel_account_stops(s, account_id: int, reason: str, product: str | None = None) -> int:
    """A flatten closes everything the account holds (a square-off: everything of ``product``): its stops (of that
    product) that may still act are cancelled with it."""
    q = update(QuickStop).where(QuickStop.account_id == account_id, QuickStop.status.in_(LIVE_STOP))
    if product is not None:
        q = q.where(QuickStop.product == product)
    return s.execute(q.values(status=T.CANCELLED.value, status_reason=reason[:256], updated_at=utcnow())).rowcount


def cancel_position_stops(s, account_id: int, symbol: str, exchange: str, product: str, reason: str) -> int:
    """A square-off of one position closes what its stops protect: those that may still act are cancelled."""
    return s.execute(update(QuickStop).where(
        QuickStop.account_id == account_id, QuickStop.symbol == symbol, QuickStop.exchange == exchange,
        QuickStop.product == product, QuickStop.status.in_(LIVE_STOP)).values(
        status=T.CANCELLED.value, status_reason=reason[:256], updated_at=utcnow())).rowcount


def stop_status(s, stop_id: int) -> tuple[str, str, int | None] | None:
    """(status, reason, exit intent id) of a stop, None if there is no such stop."""
    r = s.execute(select(QuickStop.status, QuickStop.status_reason, QuickStop.exit_intent_id)
                  .where(QuickStop.id == stop_id)).first()
    return None if r is None else tuple(r)


# ---- watching ---------------------------------------------------------------------------------------------------
class WatchedStop(NamedTuple):
    id: int
    account_id: int
    symbol: str
    exchange: str
    product: str
    side: str
    quantity: int
    sl_level: float | None
    tp_level: float | None
    hit_kind: str
    hit_price: float | None


def armed_stops(s) -> list[WatchedStop]:
    return [WatchedStop(*r) for r in s.execute(select(*(getattr(QuickStop, f) for f in WatchedStop._fields))
                                               .where(QuickStop.status == T.ARMED).order_by(QuickStop.id))]


def book_available(s, account_id: int, symbol: str, exchange: str, product: str, side: str) -> int | None:
    """Units the account still holds in the direction of an entry on ``side`` (BUY: long), by the stored
    positionbook, less what our exits still working on that position will close. None when the stored book cannot
    be trusted yet: never read, read before one of our fills on that position was recorded, or an order of ours on
    it has an outcome not yet known (it may have filled)."""
    synced = s.scalar(select(Account.positions_synced_at).where(Account.id == account_id))
    if synced is None:
        return None
    rows = s.execute(select(OrderIntent.status, OrderIntent.purpose, OrderIntent.action, OrderIntent.requested_qty,
                            OrderIntent.broker_filled_qty, OrderIntent.updated_at).where(
        OrderIntent.account_id == account_id, OrderIntent.symbol == symbol, OrderIntent.exchange == exchange,
        OrderIntent.product == product,
        or_(OrderIntent.status.in_(LIVE), OrderIntent.updated_at >= synced))).all()
    closing = 0
    for status, purpose, action, requested, filled, updated in rows:
        if status in INFLIGHT:
            return None
        if updated >= synced and _filled(status, filled, requested) > 0:
            return None  # a fill recorded after the book was read: the book may not show it
        if status in LIVE and purpose == "exit" and action == opposite(side):
            closing += max(0, requested - (filled or 0))
    held = s.scalar(select(Position.quantity).where(
        Position.account_id == account_id, Position.symbol == symbol, Position.exchange == exchange,
        Position.product == product)) or 0
    return (held if side == "BUY" else -held) - closing


def latch_hit(s, stop_id: int, kind: str, price: float) -> bool:
    """Remember a crossed level (the book was not to be trusted yet): the exit is decided once it is."""
    return s.execute(update(QuickStop).where(QuickStop.id == stop_id, QuickStop.status == T.ARMED,
                                             QuickStop.hit_kind == "")
                     .values(hit_kind=kind, hit_price=price, hit_at=utcnow(), updated_at=utcnow())).rowcount == 1


class StopAct(NamedTuple):
    """What ``write_stop_exit`` did: 'exit' (intent written), 'closed' (already flat: cancelled), 'unsettled'
    (book not to be trusted yet: hit latched), 'gone' (no longer armed)."""
    what: str
    account_id: int | None = None
    intent_id: int | None = None
    message: str = ""


def _exit_intent(s, st: QuickStop, qty: int, attempt: int) -> OrderIntent:
    entry = s.get(OrderIntent, st.entry_intent_id)
    action = opposite(st.side)
    intent = OrderIntent(client_order_id=stop_exit_coid(st.id, attempt), account_id=st.account_id, purpose="exit",
                         source=SOURCE, priority=exit_priority(action, 0),
                         strategy_tag=(entry.strategy_tag if entry else "AlgoMirror")[:64], symbol=st.symbol,
                         exchange=st.exchange, action=action, requested_qty=qty, pricetype="MARKET",
                         product=st.product, created_at=utcnow())
    s.add(intent)
    s.flush()
    return intent


def describe(st: QuickStop) -> str:
    return f"Quick Order stop #{st.id}: {st.side} {st.quantity} {st.symbol} ({st.exchange} {st.product})"


def write_stop_exit(s, stop_id: int, kind: str, level: float, ltp: float, ts_ist: str) -> StopAct:
    """In the caller's write transaction: the stop's level was crossed at ``ltp``. armed -> triggered (CAS) with ONE
    exit intent for min(its quantity, what the account still holds) and the risk event; or armed -> cancelled if
    the position is already flat; or the hit latched while the book cannot be trusted."""
    st = s.get(QuickStop, stop_id)
    if st is None or st.status != T.ARMED:
        return StopAct("gone")
    avail = book_available(s, st.account_id, st.symbol, st.exchange, st.product, st.side)
    what = f"{describe(st)}: {kind.replace('_', '-')} {level:g} hit at {ltp:g}"
    if avail is None:
        latch_hit(s, stop_id, kind, ltp)
        return StopAct("unsettled", st.account_id, message=what)
    if avail <= 0:
        cancel_stop_in(s, stop_id, f"position already closed when the {kind.replace('_', '-')} was hit", {T.ARMED})
        return StopAct("closed", st.account_id, message=f"{what}: the position is already closed; stop cancelled")
    qty = min(st.quantity, avail)
    now = utcnow()
    if s.execute(update(QuickStop).where(QuickStop.id == stop_id, QuickStop.status == T.ARMED).values(
            status=T.TRIGGERED.value, hit_kind=kind, hit_price=ltp, hit_at=st.hit_at or now, exit_attempts=1,
            status_reason=f"{kind} {level:g} hit at {ltp:g}", updated_at=now)).rowcount != 1:
        return StopAct("gone")
    intent = _exit_intent(s, st, qty, 1)
    st.exit_intent_id = intent.id
    message = f"{what}: exit {intent.action} {qty} (intent {intent.id})"
    s.add(RiskEvent(account_id=st.account_id, event_type=kind, threshold=level, value=ltp, action="exit",
                    exit_order_ids=json.dumps([intent.client_order_id]), message=message[:512], ts_ist=ts_ist))
    return StopAct("exit", st.account_id, intent.id, message)


def closed_candidates(s) -> list[int]:
    """Armed stops whose position the (trusted) stored book shows flat already: closed by hand, by a square-off,
    by an order placed elsewhere. Read-only; ``cancel_if_closed`` re-checks under the write lock."""
    out = []
    for w in armed_stops(s):
        avail = None if w.hit_kind else book_available(s, w.account_id, w.symbol, w.exchange, w.product, w.side)
        if avail is not None and avail <= 0:
            out.append(w.id)
    return out


def cancel_if_closed(s, stop_id: int) -> bool:
    st = s.get(QuickStop, stop_id)
    if st is None or st.status != T.ARMED or st.hit_kind:
        return False
    avail = book_available(s, st.account_id, st.symbol, st.exchange, st.product, st.side)
    return avail is not None and avail <= 0 and cancel_stop_in(
        s, stop_id, "position closed (flat in the positionbook)", {T.ARMED})


def working_entries_of_triggered(s) -> list[tuple]:
    """(intent id, account id, broker order id, tag) of entries still working at the broker whose stop has fired:
    their remainder is cancelled, so it cannot reopen the position the stop closed."""
    return [tuple(r) for r in s.execute(
        select(OrderIntent.id, OrderIntent.account_id, OrderIntent.broker_order_id, OrderIntent.strategy_tag)
        .join(QuickStop, QuickStop.entry_intent_id == OrderIntent.id)
        .where(QuickStop.status.in_((T.TRIGGERED, T.EXITED)), OrderIntent.status.in_(OPEN),
               OrderIntent.broker_order_id.is_not(None)))]


# ---- the exit's outcome -----------------------------------------------------------------------------------------
EXITS_SETTLED = (select(QuickStop, OrderIntent).join(OrderIntent, OrderIntent.id == QuickStop.exit_intent_id)
                 .where(QuickStop.status == T.TRIGGERED, OrderIntent.status.in_(TERMINAL)))


def exits_settled_due(s) -> bool:
    return s.scalar(EXITS_SETTLED.with_only_columns(QuickStop.id).limit(1)) is not None


def follow_exits(s, retries: int) -> tuple[list[int], list[tuple[int, str]], set[int]]:
    """Triggered stops whose exit ended: filled -> 'exited'; failed -> a new exit for what is left (up to
    ``retries`` more), or 'exited' if the position is flat by now, else 'failed'. Returns (accounts with a new
    exit to send, (stop id, alarm message) of the stops that failed, accounts whose book must be read first)."""
    accounts, alarms, unsettled = [], [], set()
    for st, ex in s.execute(EXITS_SETTLED).all():
        now = utcnow()
        if ex.status == Status.FILLED:
            st.status, st.updated_at = T.EXITED.value, now
            st.status_reason = f"exit filled {ex.broker_filled_qty or ex.requested_qty} @ {ex.broker_avg_price}"
            continue
        avail = book_available(s, st.account_id, st.symbol, st.exchange, st.product, st.side)
        if avail is None:
            unsettled.add(st.account_id)
            continue  # decided once the book shows what the failed exit did fill
        if avail <= 0:
            st.status, st.updated_at, st.status_reason = T.EXITED.value, now, "position closed"
        elif st.exit_attempts <= retries:
            st.exit_attempts += 1
            left = max(1, ex.requested_qty - (ex.broker_filled_qty or 0))
            st.exit_intent_id = _exit_intent(s, st, min(left, avail), st.exit_attempts).id
            st.updated_at = now
            accounts.append(st.account_id)
        else:
            st.status, st.updated_at = T.FAILED.value, now
            st.status_reason = f"exit {ex.status} after {st.exit_attempts} attempt(s): {ex.status_reason}"[:256]
            alarms.append((st.id, f"STOP EXIT FAILED: {describe(st)}: exit order {ex.status} after "
                                  f"{st.exit_attempts} attempt(s) ({ex.status_reason}); position still open, act "
                                  "manually"))
    return accounts, alarms, unsettled

