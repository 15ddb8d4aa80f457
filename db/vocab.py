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
