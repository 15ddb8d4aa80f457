import itertools

import pytest

from db.executions import _run_status
from db.order_fsm import (FAILED, INFLIGHT, LIVE, MAY_HOLD_FILL, OPEN, RECONCILER_OWNED, TERMINAL, InvalidTransition,
                          Status, sql_in, values)
from db.run_fsm import (ACTIVE_LEG, DONE_LEG, FILLED_LEG, FINISHED_RUN, HOLDING_RUN, LEG_TRANSITIONS, LIVE_RUN,
                        OPEN_LEG, RUN_TRANSITIONS, UNFINISHED_RUN, LegStatus, RunStatus, apply_leg, apply_run)

R, L = RunStatus, LegStatus
EXPECTED_RUN = {
    (R.ENTERING, R.ACTIVE), (R.ENTERING, R.FAILED), (R.ENTERING, R.EXITING), (R.ENTERING, R.EXITED),
    (R.ACTIVE, R.EXITING), (R.ACTIVE, R.EXITED),
    (R.EXITING, R.EXITED),
}
EXPECTED_LEG = {
    (L.PENDING, L.ENTERED), (L.PENDING, L.FAILED),
    (L.ENTERED, L.EXITING),
    (L.EXITING, L.EXITED),
    (L.EXITED, L.EXITING),
}


def test_run_states_and_leg_states_are_the_documented_words():
    assert [s.value for s in RunStatus] == ["entering", "active", "exiting", "exited", "failed"]
    assert [s.value for s in LegStatus] == ["pending", "entered", "exiting", "exited", "failed"]


@pytest.mark.parametrize("frm,to", list(itertools.product(RunStatus, RunStatus)))
def test_run_transition_table_covers_every_pair(frm, to):
    if (frm, to) in EXPECTED_RUN:
        assert apply_run(frm, to) is to
        assert apply_run(frm.value, to.value) is to
    else:
        with pytest.raises(InvalidTransition):
            apply_run(frm, to)


@pytest.mark.parametrize("frm,to", list(itertools.product(LegStatus, LegStatus)))
def test_leg_transition_table_covers_every_pair(frm, to):
    if (frm, to) in EXPECTED_LEG:
        assert apply_leg(frm, to) is to
        assert apply_leg(frm.value, to.value) is to
    else:
        with pytest.raises(InvalidTransition):
            apply_leg(frm, to)


def test_transition_sets_are_exactly_the_documented_ones():
    assert set(RUN_TRANSITIONS) == EXPECTED_RUN
    assert set(LEG_TRANSITIONS) == EXPECTED_LEG


def test_finished_runs_and_failed_legs_never_move_again_and_failed_runs_are_final():
    assert not [t for t in RUN_TRANSITIONS if t[0] in FINISHED_RUN]
    assert not [t for t in LEG_TRANSITIONS if t[0] is L.FAILED]


@pytest.mark.parametrize("current", list(RunStatus))
@pytest.mark.parametrize("legs", [combo for n in (1, 2, 3)
                                  for combo in itertools.combinations_with_replacement(list(LegStatus), n)])
@pytest.mark.parametrize("unsettled", [False, True])
def test_refresh_run_derives_only_transitions_in_the_table(current, legs, unsettled):
    new = _run_status(current.value, [x.value for x in legs], unsettled)
    assert new == current or (current, RunStatus(new)) in RUN_TRANSITIONS


def test_named_run_and_leg_sets():
    assert LIVE_RUN == {R.ENTERING, R.ACTIVE}
    assert UNFINISHED_RUN == {R.ENTERING, R.ACTIVE, R.EXITING}
    assert FINISHED_RUN == {R.EXITED, R.FAILED}
    assert HOLDING_RUN == {R.ACTIVE, R.EXITING}
    assert ACTIVE_LEG == {L.ENTERED, L.EXITING}
    assert DONE_LEG == {L.EXITED, L.FAILED}
    assert FILLED_LEG == {L.ENTERED, L.EXITING, L.EXITED}
    assert OPEN_LEG == {L.PENDING, L.ENTERED, L.EXITING}


def test_named_order_sets():
    S = Status
    assert FAILED == {S.REJECTED, S.CANCELLED, S.DENIED} and FAILED <= TERMINAL
    assert MAY_HOLD_FILL == {S.FILLED, S.PARTIALLY_FILLED, S.CANCELLED}
    assert OPEN == {S.PLACED, S.PARTIALLY_FILLED} and INFLIGHT == {S.CLAIMED, S.SENT, S.UNKNOWN}
    assert LIVE == set(Status) - TERMINAL
    assert RECONCILER_OWNED == {S.SENT, S.UNKNOWN} <= INFLIGHT


def test_sql_in_renders_a_set_in_declaration_order():
    assert sql_in({Status.PARTIALLY_FILLED, Status.PLACED}) == "('placed', 'partially_filled')"
    assert sql_in(UNFINISHED_RUN) == "('entering', 'active', 'exiting')"
    assert values(ACTIVE_LEG) == ("entered", "exiting") and all(type(v) is str for v in values(ACTIVE_LEG))
    with pytest.raises(ValueError):
        sql_in(set())


def test_status_words_compare_and_format_as_plain_strings():
    assert RunStatus.ACTIVE == "active" and f"{LegStatus.ENTERED}" == "entered" and str(Status.SENT) == "sent"
    assert "exiting" in ACTIVE_LEG and "placed" in OPEN
