import itertools

import pytest

from db.order_fsm import (TRANSITIONS, InvalidTransition, Status, apply, is_inflight, is_open, is_terminal,
                          status_from_broker)

S = Status
EXPECTED_VALID = {
    (S.QUEUED, S.CLAIMED), (S.QUEUED, S.DENIED), (S.QUEUED, S.CANCELLED),
    (S.CLAIMED, S.SENT), (S.CLAIMED, S.QUEUED), (S.CLAIMED, S.DENIED),
    (S.SENT, S.PLACED), (S.SENT, S.REJECTED), (S.SENT, S.UNKNOWN), (S.SENT, S.FILLED), (S.SENT, S.CANCELLED),
    (S.SENT, S.QUEUED),
    (S.UNKNOWN, S.PLACED), (S.UNKNOWN, S.FILLED), (S.UNKNOWN, S.REJECTED), (S.UNKNOWN, S.CANCELLED),
    (S.PLACED, S.PARTIALLY_FILLED), (S.PLACED, S.FILLED), (S.PLACED, S.CANCELLED), (S.PLACED, S.REJECTED),
    (S.PARTIALLY_FILLED, S.FILLED), (S.PARTIALLY_FILLED, S.CANCELLED),
    (S.CANCELLED, S.FILLED),
}


@pytest.mark.parametrize("frm,to", list(itertools.product(Status, Status)))
def test_transition_table_covers_every_pair(frm, to):
    if (frm, to) in EXPECTED_VALID:
        assert apply(frm, to) is to
    else:
        with pytest.raises(InvalidTransition):
            apply(frm, to)


def test_transition_set_is_exactly_the_documented_one():
    assert set(TRANSITIONS) == EXPECTED_VALID


def test_unknown_never_goes_back_to_queued_so_placeorder_is_never_resent():
    assert (S.UNKNOWN, S.QUEUED) not in TRANSITIONS
    assert (S.UNKNOWN, S.SENT) not in TRANSITIONS
    assert (S.PLACED, S.QUEUED) not in TRANSITIONS


def test_predicates():
    assert is_terminal("filled") and is_terminal("denied") and not is_terminal("placed")
    assert is_inflight("sent") and is_inflight("unknown") and not is_inflight("queued")
    assert is_open("placed") and is_open("partially_filled") and not is_open("filled")


@pytest.mark.parametrize("raw,expected", [("open", S.PLACED), ("trigger pending", S.PLACED),
                                          ("complete", S.FILLED), ("COMPLETE", S.FILLED),
                                          ("rejected", S.REJECTED), ("cancelled", S.CANCELLED), ("weird", None)])
def test_broker_status_mapping(raw, expected):
    assert status_from_broker(raw) is expected
