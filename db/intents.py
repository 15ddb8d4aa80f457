"""Order-intent persistence: the only code that changes an intent's status.

Every change is a compare-and-set UPDATE (``WHERE id=? AND status=<expected>``) that must report exactly one
row, plus an append-only order_events row, in one BEGIN IMMEDIATE transaction. Two dispatchers racing for the
same intent therefore cannot both claim it; the loser sees rowcount 0 and moves on.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from db.models import OrderEvent, OrderIntent, utcnow
from db.order_fsm import Status, apply

TIME_FIELD = {Status.CLAIMED: "claimed_at", Status.SENT: "sent_at"}


def new_client_order_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class IntentView:
    """A detached, immutable copy of an intent for use outside a session (dispatcher threads)."""
    id: int
    client_order_id: str
    account_id: int
    run_id: int | None
    execution_id: int | None
    purpose: str
    source: str
    strategy_tag: str
    symbol: str
    exchange: str
    action: str
    requested_qty: int
    pricetype: str
    product: str
    limit_price: float
    trigger_price: float
    status: str
    broker_order_id: str | None
    created_at: object
    sent_at: object

    @classmethod
    def of(cls, i: OrderIntent) -> "IntentView":
        return cls(**{f: getattr(i, f) for f in cls.__dataclass_fields__})


def transition(s: Session, intent_id: int, frm: Status | str, to: Status | str, source: str,
               reason: str = "", payload: object = None, **fields) -> bool:
    """CAS the intent from ``frm`` to ``to`` (FSM-checked). Returns False if the row was not in ``frm``."""
    to = apply(frm, to)
    now = utcnow()
    values = {"status": to.value, "updated_at": now, **fields}
    if reason:
        values["status_reason"] = reason[:512]
    if to in TIME_FIELD:
        values[TIME_FIELD[to]] = now
    res = s.execute(update(OrderIntent)
                    .where(OrderIntent.id == intent_id, OrderIntent.status == Status(frm).value)
                    .values(**values))
    if res.rowcount != 1:
        return False
    s.execute(insert(OrderEvent.__table__).values(
        intent_id=intent_id, from_status=Status(frm).value, to_status=to.value, source=source, reason=reason[:512],
        payload=json.dumps(payload, default=str)[:4000] if payload else "", ts_utc=now))
    return True


def claim_path(s: Session, intent_id: int, path: list[Status], source: str, reason: str = "", **fields) -> bool:
    """Walk ``path`` (e.g. queued -> claimed -> sent) as ONE compare-and-set UPDATE on its first state, with one
    order_events row per step. Every step is FSM-checked; False if the row was not in ``path[0]``."""
    for frm, to in zip(path, path[1:], strict=False):
        apply(frm, to)
    now = utcnow()
    values = {"status": Status(path[-1]).value, "updated_at": now, **fields}
    if reason:
        values["status_reason"] = reason[:512]
    for st in path[1:]:
        if Status(st) in TIME_FIELD:
            values[TIME_FIELD[Status(st)]] = now
    res = s.execute(update(OrderIntent)
                    .where(OrderIntent.id == intent_id, OrderIntent.status == Status(path[0]).value)
                    .values(**values))
    if res.rowcount != 1:
        return False
    s.execute(insert(OrderEvent.__table__), [
        dict(intent_id=intent_id, from_status=Status(frm).value, to_status=Status(to).value, source=source,
             reason=reason[:512] if to == path[-1] else "", payload="", ts_utc=now)
        for frm, to in zip(path, path[1:], strict=False)])
    return True


VIEW_COLUMNS = [getattr(OrderIntent, f) for f in IntentView.__dataclass_fields__]


def next_queued_view(s: Session, account_id: int) -> IntentView | None:
    """The account's most urgent queued intent (priority, then FIFO), read with one Core SELECT."""
    row = s.execute(select(*VIEW_COLUMNS).where(
        OrderIntent.account_id == account_id, OrderIntent.status == Status.QUEUED.value)
        .order_by(OrderIntent.priority, OrderIntent.created_at, OrderIntent.id).limit(1)).first()
    return IntentView(**row._mapping) if row else None


def requeue_orphan_claims(s: Session, reason: str = "claimed by a process that stopped before sending") -> int:
    """At service start (single instance, lock held): 'claimed' rows were never sent ('sent' is committed
    before any network call), so they can safely go back to the queue."""
    ids = list(s.scalars(select(OrderIntent.id).where(OrderIntent.status == Status.CLAIMED.value)))
    return sum(transition(s, i, Status.CLAIMED, Status.QUEUED, "reconciler", reason, claimed_by="") for i in ids)
