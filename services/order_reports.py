"""Orderbook rows -> BookOrder reports, and broker order status -> intent transitions (shared by poller and
reconciler). The reports are stored in broker_orders by db/broker_orders.py.

All functions take an open write session and never open another one (no service_log inside: callers collect
messages and log after commit, because a nested BEGIN IMMEDIATE on another connection would wait on ourselves).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Callable

from db.executions import Outcome, apply_intent_outcome
from db.intents import transition
from db.models import OrderIntent, utcnow
from db.order_fsm import Status, can_transition, status_from_broker

log = logging.getLogger("services.order_reports")
IST_OFFSET = timedelta(hours=5, minutes=30)
TS_FORMATS = ("%Y-%m-%d %H:%M:%S", "%d-%b-%Y %H:%M:%S", "%d-%m-%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
              "%d/%m/%Y %H:%M:%S", "%H:%M:%S %d-%m-%Y")


def _f(v, default: float = 0.0) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


@lru_cache(maxsize=8192)
def parse_ts(raw: str) -> datetime | None:
    """Broker timestamps are naive IST strings in a broker-specific format -> naive UTC (None if unparseable).
    Memoised: every poll sees the day's orders again, and strptime costs tens of microseconds per try."""
    raw = (raw or "").strip()
    for fmt in TS_FORMATS:
        try:
            return datetime.strptime(raw[:19] if "T" in fmt else raw, fmt) - IST_OFFSET
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class BookOrder:
    orderid: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    price: float
    trigger_price: float
    pricetype: str
    product: str
    order_status: str
    filled_qty: int
    avg_price: float
    strategy: str | None  # None when the broker does not report the tag
    timestamp: str
    ts_utc: datetime | None

    @classmethod
    def parse(cls, r: dict) -> "BookOrder | None":
        oid = str(r.get("orderid") or "").strip()
        if not oid:
            return None
        qty = int(_f(r.get("quantity")))
        status = str(r.get("order_status") or "").strip().lower()
        filled = r.get("filled_quantity")
        filled_qty = int(_f(filled)) if filled is not None else (qty if status == "complete" else 0)
        ts = str(r.get("timestamp") or "")
        return cls(oid, str(r.get("symbol") or ""), str(r.get("exchange") or ""),
                   str(r.get("action") or "").upper(), qty, _f(r.get("price")), _f(r.get("trigger_price")),
                   str(r.get("pricetype") or r.get("price_type") or ""), str(r.get("product") or ""), status,
                   filled_qty, _f(r.get("average_price")),
                   str(r["strategy"]) if r.get("strategy") is not None else None, ts, parse_ts(ts))


def parse_book(rows: list[dict]) -> list[BookOrder]:
    return [b for b in (BookOrder.parse(r) for r in rows if isinstance(r, dict)) if b is not None]


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
    s.refresh(intent)
    return apply_intent_outcome(s, intent.id), ""


def _path(current: Status, target: Status) -> list[tuple[Status, Status]] | None:
    if can_transition(current, target):
        return [(current, target)]
    if can_transition(current, Status.PLACED) and can_transition(Status.PLACED, target):
        return [(current, Status.PLACED), (Status.PLACED, target)]
    return None
