"""Order-intent state machine.

    queued ──► claimed ──► sent ──► placed ──► filled
      │           │          │         ├─────► partially_filled ──► filled | cancelled
      │           │          │         ├─────► cancelled ──► filled   (fill raced the cancel)
      │           │          │         └─────► rejected               (broker rejected after accepting)
      │           │          ├─► filled | cancelled (the orderbook already shows the order done)
      │           │          ├─► rejected        (the API answered with an error: never reached the book)
      │           │          ├─► queued          (definitely not processed: connect refused, or HTTP 429)
      │           │          └─► unknown ──► placed | filled | rejected | cancelled   (reconciled against the orderbook)
      │           ├─► queued  (claimed by a process that died before writing 'sent': nothing was sent)
      │           └─► denied  (the dispatcher's re-check before sending: risk gate, account state)
      └─► denied / cancelled (never sent: risk gate, validation, or withdrawn by the user)

A row in 'sent' or 'unknown' belongs to the reconciler, never to the dispatcher: placeorder is never retried.

This module and db/run_fsm.py hold the status words: everything else names a status through these enums and
the named sets below, and renders a set into SQL with ``sql_in`` (tests/test_vocabulary.py enforces it).
"""
from __future__ import annotations

from collections.abc import Iterable
from enum import Enum, StrEnum


class Status(StrEnum):
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
RECONCILER_OWNED = frozenset({S.SENT, S.UNKNOWN})  # sent, no answer recorded: the reconciler settles them
# Not terminal: the order may still be sent, rest at the broker, or fill. db/models.py builds the
# one-exit-per-leg unique index from this set, so a status added here is covered there too.
LIVE = frozenset(Status) - TERMINAL
FAILED = frozenset({S.REJECTED, S.CANCELLED, S.DENIED})  # what an order ends in when it did not fill in full
# An entry in one of these holds what it filled (a cancelled one may have filled part before the cancel).
MAY_HOLD_FILL = frozenset({S.FILLED, S.PARTIALLY_FILLED, S.CANCELLED})
# Broker order_status (OpenAlgo canonical, lower case) -> intent status after placement.
BROKER_STATUS_MAP = {
    "open": S.PLACED, "trigger pending": S.PLACED, "validation pending": S.PLACED, "pending": S.PLACED,
    "after market order req received": S.PLACED, "complete": S.FILLED, "cancelled": S.CANCELLED,
    "rejected": S.REJECTED, "expired": S.CANCELLED,
}


class InvalidTransition(ValueError):
    pass


def values(statuses: Iterable[Enum]) -> tuple[str, ...]:
    """The plain string values of a set of statuses of one enum, in the enum's declaration order (stable, so
    SQL built from a set reads the same on every run)."""
    items = set(statuses)
    if not items:
        raise ValueError("an empty status set has no SQL form")
    order = list(type(next(iter(items))))
    return tuple(s.value for s in sorted(items, key=order.index))


def sql_in(statuses: Iterable[Enum]) -> str:
    """A status set as the parenthesised list of an SQL ``IN``: ``('placed', 'partially_filled')``. The values are
    enum values (no quotes inside), so inlining them is safe."""
    return "(" + ", ".join(f"'{v}'" for v in values(statuses)) + ")"


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
