"""Strategy-run and leg (execution) state machines.

A run's status is derived from its legs (db/executions.py ``refresh_run``), except for the move to 'exiting',
which the risk manager makes by compare-and-set when it writes the exits.

    runs:  entering ──► active ──► exiting ──► exited
              ├─► exiting    (the risk manager exits before every entry settled)
              ├─► failed     (every entry failed: nothing was ever held)
              └─► exited     (refresh_run: no leg pending and every leg done, read as entering -> active -> exited)
                     active ──► exited   (refresh_run: every leg done and one exited)

    The two moves to 'exited' that skip 'exiting' are what ``refresh_run`` derives from the legs alone; the risk
    manager's own exits always pass through 'exiting'.

    legs:  pending ──► entered ──► exiting ──► exited
              │                       ▲           │
              │                       └───────────┘  the entry filled more after the exit (a late remainder):
              │                                      one more exit closes the difference
              └─► failed  (the entry was rejected / cancelled / denied with nothing filled, or withdrawn unsent
                           because its run is exiting)

A run stays 'exiting' while any leg can still grow at the broker (an entry still working, or one that filled
more than its leg holds), so the late-remainder exit always belongs to an exiting run.
"""
from __future__ import annotations

from enum import StrEnum

from db.order_fsm import InvalidTransition


class RunStatus(StrEnum):
    ENTERING = "entering"
    ACTIVE = "active"
    EXITING = "exiting"
    EXITED = "exited"
    FAILED = "failed"


class LegStatus(StrEnum):
    PENDING = "pending"
    ENTERED = "entered"
    EXITING = "exiting"
    EXITED = "exited"
    FAILED = "failed"


R, L = RunStatus, LegStatus
RUN_TRANSITIONS: frozenset[tuple[RunStatus, RunStatus]] = frozenset({
    (R.ENTERING, R.ACTIVE), (R.ENTERING, R.FAILED), (R.ENTERING, R.EXITING), (R.ENTERING, R.EXITED),
    (R.ACTIVE, R.EXITING), (R.ACTIVE, R.EXITED),
    (R.EXITING, R.EXITED),
})
LEG_TRANSITIONS: frozenset[tuple[LegStatus, LegStatus]] = frozenset({
    (L.PENDING, L.ENTERED), (L.PENDING, L.FAILED),
    (L.ENTERED, L.EXITING),
    (L.EXITING, L.EXITED),
    (L.EXITED, L.EXITING),
})

LIVE_RUN = frozenset({R.ENTERING, R.ACTIVE})  # the risk manager watches these and may exit them
UNFINISHED_RUN = frozenset({R.ENTERING, R.ACTIVE, R.EXITING})  # the sweep and the UI's "running" views
FINISHED_RUN = frozenset(RunStatus) - UNFINISHED_RUN  # exited_at is set on entering one of these
HOLDING_RUN = frozenset({R.ACTIVE, R.EXITING})  # has entered legs the position monitor values

ACTIVE_LEG = frozenset({L.ENTERED, L.EXITING})  # holds units at the broker
DONE_LEG = frozenset({L.EXITED, L.FAILED})  # holds nothing (until a late remainder reopens an exited leg)
FILLED_LEG = frozenset({L.ENTERED, L.EXITING, L.EXITED})  # its entry filled: the entry may still grow
OPEN_LEG = frozenset(LegStatus) - DONE_LEG  # its intents' outcomes may still change it


def can_run_transition(frm: RunStatus | str, to: RunStatus | str) -> bool:
    return (RunStatus(frm), RunStatus(to)) in RUN_TRANSITIONS


def apply_run(frm: RunStatus | str, to: RunStatus | str) -> RunStatus:
    """Return the new run status or raise InvalidTransition."""
    if not can_run_transition(frm, to):
        raise InvalidTransition(f"invalid run transition {RunStatus(frm).value} -> {RunStatus(to).value}")
    return RunStatus(to)


def can_leg_transition(frm: LegStatus | str, to: LegStatus | str) -> bool:
    return (LegStatus(frm), LegStatus(to)) in LEG_TRANSITIONS


def apply_leg(frm: LegStatus | str, to: LegStatus | str) -> LegStatus:
    """Return the new leg status or raise InvalidTransition."""
    if not can_leg_transition(frm, to):
        raise InvalidTransition(f"invalid leg transition {LegStatus(frm).value} -> {LegStatus(to).value}")
    return LegStatus(to)
