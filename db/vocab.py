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


class ReentryMode(StrEnum):
    """Which contract a strategy leg re-enters after its stop: the one it held, or the ATM strike re-resolved
    from the underlying's price at the moment of re-entry."""
    SAME = "same"
    ATM = "atm"


class LegExit(StrEnum):
    """Why one leg of a run exited on its own (executions.exit_kind, the risk event's type)."""
    STOP_LOSS = "leg_sl"
    TARGET = "leg_target"
    TRAILING = "leg_trailing"
    CLOSE = "close_leg"  # the trader's control command
    ROLL = "roll_leg"  # closed to open another strike / expiry


LEG_STOP_EXITS = frozenset({LegExit.STOP_LOSS, LegExit.TARGET, LegExit.TRAILING})  # these may re-enter
REENTER_AFTER = frozenset({LegExit.STOP_LOSS, LegExit.TRAILING})  # "after a leg's stop": not after its target


class AlertOutcome(StrEnum):
    """What a webhook alert did (webhook_alerts.outcome)."""
    DONE = "done"  # the action was written (runs queued, exits requested, orders queued)
    PARTIAL = "partial"  # a symbol list: some orders queued, some refused (the message lists them)
    DUPLICATE = "duplicate"  # a retried delivery of an earlier alert: nothing new written
    ERROR = "error"  # refused (bad alert, service down, validation): nothing written


class ConvertState(StrEnum):
    """A LIMIT entry's one conversion to MARKET (order_intents.convert_state, services/entry_convert.py):

        '' ─► modifying ─► converted        (modifyorder answered success)
                  └──────► not_converted    (modifyorder refused, no answer, or the service stopped mid-call:
                                             alerted; the LIMIT order is left as it is)

    'modifying' is committed before the modifyorder call, so no order is ever modified twice."""
    NONE = ""
    MODIFYING = "modifying"
    CONVERTED = "converted"
    NOT_CONVERTED = "not_converted"


class TimedKind(StrEnum):
    """What a timed_fires row latches: a saved strategy's timed entry or its timed exit on one trading day."""
    ENTRY = "entry"
    EXIT = "exit"


class TimedState(StrEnum):
    """A timed strategy's state on one trading day (db/schedules.py). Stored on timed_fires rows:

        entry:  entered   (its runs were written in the row's own transaction)
                failed    (a guard of Execute refused it: halted account, entry cut-off, no live price, ...;
                           alerted, nothing placed)
                missed    (the service was not running within the grace window after the time: alerted, nothing
                           placed)
        exit:   exiting ─► exited   (written 'exiting' before the first exit, 'exited' once every live run of
                                     today was handed to the one exit path)

    and only shown (no row): pending (the time has not come), skipped (an NSE/BSE holiday), next day (saved after
    today's time), disabled."""
    PENDING = "pending"
    ENTERED = "entered"
    FAILED = "failed"
    MISSED = "missed"
    EXITING = "exiting"
    EXITED = "exited"
    HOLIDAY = "skipped holiday"
    NEXT_DAY = "from the next trading day"
    DISABLED = "disabled"
