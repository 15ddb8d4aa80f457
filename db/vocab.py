"""The small status vocabularies of rows that are not orders, runs or legs, where they share a word with those
(control commands end 'failed', an option-chain session is 'active'): one enum each, so the shared word has one
spelling per vocabulary and tests/test_vocabulary.py can tell the two apart."""
from __future__ import annotations

from enum import StrEnum


class CommandStatus(StrEnum):
    """A control_commands row: written 'queued' by the UI, then 'done' or 'failed' by the service."""
    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"


class ChainStatus(StrEnum):
    """An option_chain_sessions row (contract in db/chain.py)."""
    REQUESTED = "requested"
    ACTIVE = "active"
    EXPIRED = "expired"
    ERROR = "error"


OPEN_CHAIN = frozenset({ChainStatus.REQUESTED, ChainStatus.ACTIVE})  # the service serves these


class TradingState(StrEnum):
    """What an account may trade (accounts.trading_state). Exits are allowed in every state: a state only ever
    denies new entries. 'reducing' is the trader's own choice (wind down: exits only); 'halted' is set by a
    protection (a flatten, a daily limit) or by the trader, with the reason. Back to 'active' only by an
    explicit re-arm."""
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


ENTRIES_DENIED = frozenset({TradingState.REDUCING, TradingState.HALTED})


class SquareOffStatus(StrEnum):
    """A square_offs row (one product on one trading day): 'running' from before its first order until it has
    finished, then 'done' (everything of the product closed) or 'incomplete' (something is still open: alerted)."""
    RUNNING = "running"
    DONE = "done"
    INCOMPLETE = "incomplete"
class StopStatus(StrEnum):
    """A Quick Order stop-loss / target (quick_stops row, db/stops.py):

        pending ─► armed ─► triggered ─► exited
           │         │          └─────► failed     (its exit order never filled, after the retries: alarmed)
           └─────────┴─► cancelled  (entry filled nothing, the position was closed otherwise, a flatten, the trader)

    'pending' until the entry fills; 'armed' (levels from the average fill price, on the filled quantity) while it
    watches; 'triggered' in the same transaction as its one exit intent; 'exited' once that exit filled."""
    PENDING = "pending"
    ARMED = "armed"
    TRIGGERED = "triggered"
    EXITED = "exited"
    CANCELLED = "cancelled"
    FAILED = "failed"


LIVE_STOP = frozenset({StopStatus.PENDING, StopStatus.ARMED})  # may still act: a flatten or the trader cancels these


class StopMode(StrEnum):
    """How a stop-loss / target distance is given on the ticket: rupee points from the price, or % of it."""
    POINTS = "points"
    PCT = "pct"


class AlertOutcome(StrEnum):
    """What a webhook alert did (webhook_alerts.outcome)."""
    DONE = "done"  # the action was written (runs queued, exits requested, orders queued)
    PARTIAL = "partial"  # a symbol list: some orders queued, some refused (the message lists them)
    DUPLICATE = "duplicate"  # a retried delivery of an earlier alert: nothing new written
    ERROR = "error"  # refused (bad alert, service down, validation): nothing written
