"""Order-intent state machine.

    queued ──► claimed ──► sent ──► placed ──► filled
      │           │          │         ├─────► partially_filled ──► filled | cancelled
      │           │          │         ├─────► cancelled ──► filled   (fill raced the cancel)
      │           │          │         └─────► rejected               (broker rejected after accepting)
      │           │          ├─► rejected        (the API answered with an error: never reached the book)
      │           │          ├─► queued          (definitely not processed: connect refused, or HTTP 429)
      │           │          └─► unknown ──► placed | filled | rejected   (reconciled against the orderbook)
      │           └─► queued  (claimed by a process that died before writing 'sent': nothing was sent)
      └─► denied / cancelled (never sent: risk gate, validation, or withdrawn by the user)

A row in 'sent' or 'unknown' belongs to the reconciler, never to the dispatcher: placeorder is never retried.
"""
from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    SENT = "sent"
    PLACED = "placed"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    DENIED = "denied"
    UNKNOWN = "unknown"


S = Status
TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset({
    (S.QUEUED, S.CLAIMED), (S.QUEUED, S.DENIED), (S.QUEUED, S.CANCELLED),
    (S.CLAIMED, S.SENT), (S.CLAIMED, S.QUEUED), (S.CLAIMED, S.DENIED),
    (S.SENT, S.PLACED), (S.SENT, S.REJECTED), (S.SENT, S.UNKNOWN), (S.SENT, S.FILLED), (S.SENT, S.CANCELLED),
    (S.SENT, S.QUEUED),
    (S.UNKNOWN, S.PLACED), (S.UNKNOWN, S.FILLED), (S.UNKNOWN, S.REJECTED), (S.UNKNOWN, S.CANCELLED),
    (S.PLACED, S.PARTIALLY_FILLED), (S.PLACED, S.FILLED), (S.PLACED, S.CANCELLED), (S.PLACED, S.REJECTED),
    (S.PARTIALLY_FILLED, S.FILLED), (S.PARTIALLY_FILLED, S.CANCELLED),
    (S.CANCELLED, S.FILLED),
})

TERMINAL = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.DENIED})
INFLIGHT = frozenset({S.CLAIMED, S.SENT, S.UNKNOWN})  # outcome at the broker not yet known
OPEN = frozenset({S.PLACED, S.PARTIALLY_FILLED})  # resting at the broker
# Not terminal: the order may still be sent, rest at the broker, or fill. db/models.py builds the
# one-exit-per-leg unique index from this set, so a status added here is covered there too.
LIVE = frozenset(Status) - TERMINAL
# Broker order_status (OpenAlgo canonical, lower case) -> intent status after placement.
BROKER_STATUS_MAP = {
    "open": S.PLACED, "trigger pending": S.PLACED, "validation pending": S.PLACED, "pending": S.PLACED,
    "after market order req received": S.PLACED, "complete": S.FILLED, "cancelled": S.CANCELLED,
    "rejected": S.REJECTED, "expired": S.CANCELLED,
}


class InvalidTransition(ValueError):
    pass


def is_terminal(s: Status | str) -> bool:
    return Status(s) in TERMINAL


def is_inflight(s: Status | str) -> bool:
    return Status(s) in INFLIGHT


def is_open(s: Status | str) -> bool:
    return Status(s) in OPEN


def can_transition(frm: Status | str, to: Status | str) -> bool:
    return (Status(frm), Status(to)) in TRANSITIONS


def apply(frm: Status | str, to: Status | str) -> Status:
    """Return the new status or raise InvalidTransition."""
    if not can_transition(frm, to):
        raise InvalidTransition(f"invalid order transition {Status(frm).value} -> {Status(to).value}")
    return Status(to)


def status_from_broker(order_status: str) -> Status | None:
    return BROKER_STATUS_MAP.get((order_status or "").strip().lower())
