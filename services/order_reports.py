"""Orderbook rows -> BookOrder reports, and broker order status -> intent transitions (shared by poller and
reconciler). The reports are stored in broker_orders by db/broker_orders.py.

All functions take an open write session and never open another one (no service_log inside: callers collect
messages and log after commit, because a nested BEGIN IMMEDIATE on another connection would wait on ourselves).
"""
from __future__ import annotations

import logging
from typing import Callable

from db.broker_orders import BookOrder
from db.executions import Outcome, apply_intent_outcome
from db.intents import transition
from db.models import OrderIntent, utcnow
from db.order_fsm import Status, can_transition, status_from_broker

log = logging.getLogger("services.order_reports")


def target_status(bo: BookOrder) -> Status | None:
    target = status_from_broker(bo.order_status)
    if target == Status.PLACED and 0 < bo.filled_qty < bo.quantity:
        return Status.PARTIALLY_FILLED
    return target


def book_fields(bo: BookOrder, avg: float | None = None) -> dict:
    """The broker_* columns of an intent as its broker order states them (``avg``: the tradebook's average, used
    when the orderbook gives none). Shared by ``apply_book_status`` and its read-only pre-check ``behind_book``."""
    fields = dict(broker_status=bo.order_status[:32], broker_filled_qty=bo.filled_qty)
    avg = bo.avg_price or avg
    if avg:
        fields["broker_avg_price"] = avg
    return fields


def behind_book(status: str, broker_status: str, filled_qty: int, avg_price: float | None, bo: BookOrder) -> bool:
    """Would ``apply_book_status`` change (or warn about) an intent in this state? A read-only pre-check."""
    target = target_status(bo)
    if target is None or target.value != status:
        return True
    have = dict(broker_status=broker_status, broker_filled_qty=filled_qty, broker_avg_price=avg_price)
    if any(have[k] != v for k, v in book_fields(bo).items()):
        return True
    return target == Status.FILLED and avg_price is None  # a fill with no average yet: the tradebook may have it


def apply_book_status(s, intent: OrderIntent, bo: BookOrder, source: str,
                      avg_lookup: Callable[[str], float | None] | None = None) -> tuple[Outcome, str]:
    """Bring ``intent`` in line with its broker order. Returns (bookkeeping outcome, warning or '')."""
    target = target_status(bo)
    if target is None:
        return Outcome(), f"intent {intent.id}: unrecognised broker status '{bo.order_status}' ({bo.orderid})"
    avg = None
    if not bo.avg_price and target == Status.FILLED and avg_lookup is not None:
        avg = avg_lookup(bo.orderid)
    fields = book_fields(bo, avg)
    if not intent.broker_order_id:
        fields["broker_order_id"] = bo.orderid
    current = Status(intent.status)
    if current == target:
        changed = any(getattr(intent, k) != v for k, v in fields.items())
        for k, v in fields.items():
            setattr(intent, k, v)
        if changed:
            intent.updated_at = utcnow()
        return (apply_intent_outcome(s, intent.id) if changed else Outcome()), ""
    path = _path(current, target)
    if path is None:
        return Outcome(), (f"intent {intent.id}: broker says '{bo.order_status}' for {bo.orderid} but "
                           f"{current.value} -> {target.value} is not a valid transition; skipped")
    reason = f"broker order {bo.orderid}: {bo.order_status}"
    for frm, to in path:
        if not transition(s, intent.id, frm, to, source, reason, payload=bo.__dict__, **fields):
            return Outcome(), f"intent {intent.id} changed under us ({frm.value} expected); will retry"
    # no refresh: transition() keeps the loaded intent in line with the row it wrote (db/intents._cas)
    return apply_intent_outcome(s, intent.id), ""


def _path(current: Status, target: Status) -> list[tuple[Status, Status]] | None:
    if can_transition(current, target):
        return [(current, target)]
    if can_transition(current, Status.PLACED) and can_transition(Status.PLACED, target):
        return [(current, Status.PLACED), (Status.PLACED, target)]
    return None
