"""db.row_actions.write_square_off in a real SQLite file: what one position's square-off writes for the quantity
the broker reported, and when it refuses (nothing written): an exit of ours already working on the position,
strategy legs holding more than (or the other way round from) what the broker shows."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from db.commands import CommandError
from db.models import Execution, OrderIntent, StrategyRun
from db.row_actions import square_off_written, write_square_off
from tests.service.fixtures_md import account, make_run

CE, PE = "NIFTY30DEC2526000CE", "NIFTY30DEC2526000PE"


def _straddle(db):
    acct = account(db)
    run_id, ids = make_run(db, acct, [dict(symbol=CE, action="SELL", qty=65, entry=100.0),
                                      dict(symbol=PE, action="SELL", qty=65, entry=100.0)])
    return acct, run_id, ids


def _square_off(db, acct, qty, symbol=CE, command_id=7):
    with db.write() as s:
        return write_square_off(s, command_id, acct, symbol, "NFO", "NRML", qty, "10:30:00")


def _count(db) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(OrderIntent))


def test_square_off_when_the_broker_shows_more_than_the_leg_then_leg_exit_plus_one_exit_for_the_rest(db):
    acct, run_id, (ce_ex, pe_ex) = _straddle(db)
    done = _square_off(db, acct, -100)
    with db.read() as s:
        rows = [(i.client_order_id, i.action, i.requested_qty, i.execution_id, i.purpose)
                for i in s.scalars(select(OrderIntent).order_by(OrderIntent.id))]
        ce, pe = (s.get(Execution, x) for x in (ce_ex, pe_ex))
        assert (ce.status, ce.exit_kind, pe.status) == ("exiting", "close_leg", "entered")
        assert s.get(StrategyRun, run_id).status == "active"
        assert [r[0] for r in square_off_written(s, 7)] == [i for i in done.ids]
    assert rows == [(f"sqp-7-x{ce_ex}", "BUY", 65, ce_ex, "exit"), ("sqp-7-pos", "BUY", 35, None, "exit")]
    assert done.runs == [run_id] and "BUY 35 at market" in done.summary


@pytest.mark.parametrize("broker_qty", [-30, 65])
def test_square_off_when_legs_hold_more_than_or_against_the_broker_then_refused_and_nothing_written(db, broker_qty):
    acct, run_id, _ = _straddle(db)
    with pytest.raises(CommandError, match=re.escape(f"the broker shows {broker_qty:+d} but strategy legs "
                                                     f"(run #{run_id} leg 1) hold -65")):
        _square_off(db, acct, broker_qty)
    assert _count(db) == 0
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Execution).where(Execution.status == "entered")) == 2


def test_square_off_when_an_exit_of_ours_is_working_on_it_then_refused_naming_it(db):
    acct, _, _ = _straddle(db)
    first = _square_off(db, acct, -65, command_id=7)
    assert _count(db) == 1
    with pytest.raises(CommandError, match=rf"already working on it \(order #{first.ids[0]}\); nothing sent"):
        _square_off(db, acct, -65, command_id=8)
    assert _count(db) == 1


def test_square_off_when_no_leg_holds_it_then_one_market_exit_of_the_broker_quantity(db):
    acct = account(db)
    done = _square_off(db, acct, 40, symbol="SBIN")
    with db.read() as s:
        [i] = s.scalars(select(OrderIntent))
    assert (i.action, i.requested_qty, i.pricetype, i.purpose, i.client_order_id) == ("SELL", 40, "MARKET", "exit",
                                                                                      "sqp-7-pos")
    assert done.runs == [] and "the broker shows +40" in done.summary
