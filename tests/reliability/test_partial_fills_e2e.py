"""Partial fills against the REAL service process (``python -m services``) and the simulator's /_sim/partial:

* an entry that fills 50 of 100 (the rest never) is watched on its 50: a price breach exits exactly 50 and the
  remainder is cancelled at the broker; the broker is flat afterwards;
* the remainder of a partly filled entry cancelled by the user (cancel_intent) leaves the leg and the run live on
  the filled 50, and a breach exits those 50;
* an exit that fills 50 of 100 and stays there past exit_partial_timeout_s is flagged, its remainder cancelled
  and re-sent once; the broker is flat and nothing was sent twice.
"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from db.accounts import api_key_for
from db.commands import enqueue_control
from db.models import Execution, OrderIntent, RiskEvent, ServiceHeartbeat, ServiceLog, StrategyRun
from simulator.testing import SimProcess
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_orders import make_strategy_run, placed_at_sim, sim_account

SYM, EX = "SBIN", "NSE"


@pytest.fixture(scope="module")
def psim():
    with SimProcess(seed=41, args=["--frozen"]) as sim:  # prices move only when a test sets them
        yield sim


@pytest.fixture
def service(db, psim, tmp_path):
    procs = []

    def start(**env):
        p = start_service(db.path, tmp_path / "svc.log", service_env(**env))
        procs.append(p)
        assert wait_for(lambda: _beat(db, "dispatcher"), 30), (tmp_path / "svc.out").read_text()[-2000:]
        return p

    psim.clear_faults()
    psim.set_price(SYM, EX, 800.0)
    yield start
    psim.clear_faults()
    for p in procs:
        assert stop_service(p) == 0


def _beat(db, component):
    with db.read() as s:
        return s.get(ServiceHeartbeat, component)


def _run(db, run_id):
    with db.read() as s:
        run = s.get(StrategyRun, run_id)
        ex = s.scalar(select(Execution).where(Execution.run_id == run_id))
        intents = list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id).order_by(OrderIntent.id)))
    return run, ex, intents


def _exits(intents):
    return [i for i in intents if i.purpose == "exit"]


def _net(psim, key) -> int:
    rows = psim.api("positionbook", {"apikey": key}).json()["data"]
    return sum(int(p["quantity"]) for p in rows if p["symbol"] == SYM)


def _entered_run(db, acct, max_loss=1000.0):
    run_id, (entry,) = make_strategy_run(db, acct, [dict(symbol=SYM, action="BUY", qty=100)])
    with db.write() as s:
        s.get(StrategyRun, run_id).max_loss = max_loss
    return run_id, entry


@pytest.mark.timeout(60)
def test_entry_partially_filled_when_price_breaches_then_exactly_the_filled_part_exits_and_rest_cancelled(
        db, psim, service):
    acct, name = sim_account(db, psim, "pe", is_primary=True)
    psim.partial(SYM, EX, fill_qty=50, rest_after_s=None, count=1)  # the entry only; its rest never fills
    service()
    run_id, entry = _entered_run(db, acct)
    assert wait_for(lambda: _run(db, run_id)[1].status == "entered", 15), _run(db, run_id)
    run, ex, intents = _run(db, run_id)
    assert run.status == "active" and ex.quantity == 50 and intents[0].status == "partially_filled"
    psim.set_price(SYM, EX, 781.0)  # -19 x 50 = -950: inside the limit (on 100 units: -1900, an exit)
    assert not wait_for(lambda: _exits(_run(db, run_id)[2]), 3)
    psim.set_price(SYM, EX, 778.0)  # -22 x 50 = -1100
    assert wait_for(lambda: _run(db, run_id)[0].status == "exited", 20), _run(db, run_id)
    run, ex, intents = _run(db, run_id)
    exits = _exits(intents)
    assert [(x.action, x.requested_qty, x.status) for x in exits] == [("SELL", 50, "filled")]
    assert intents[0].status == "cancelled" and intents[0].broker_filled_qty == 50  # the remainder, cancelled
    book = {o["orderid"]: o for o in placed_at_sim(psim, name)}
    assert (book[intents[0].broker_order_id]["order_status"], book[intents[0].broker_order_id]["filled_quantity"]) \
        == ("cancelled", 50)
    assert len(book) == 2 and ex.status == "exited" and _net(psim, api_key_for(db, acct)) == 0


@pytest.mark.timeout(60)
def test_entry_remainder_cancelled_by_user_when_price_breaches_then_filled_part_stays_live_and_exits(
        db, psim, service):
    acct, name = sim_account(db, psim, "pc", is_primary=True)
    psim.partial(SYM, EX, fill_qty=50, rest_after_s=None, count=1)
    service()
    run_id, entry = _entered_run(db, acct)
    assert wait_for(lambda: _run(db, run_id)[2][0].status == "partially_filled", 15), _run(db, run_id)
    enqueue_control(db, "cancel_intent", {"intent_id": entry})
    assert wait_for(lambda: _run(db, run_id)[2][0].status == "cancelled", 15), _run(db, run_id)
    run, ex, _ = _run(db, run_id)
    assert (run.status, ex.status, ex.quantity) == ("active", "entered", 50)  # live on what filled, not failed
    psim.set_price(SYM, EX, 778.0)
    assert wait_for(lambda: _run(db, run_id)[0].status == "exited", 20), _run(db, run_id)
    exits = _exits(_run(db, run_id)[2])
    assert [(x.action, x.requested_qty, x.status) for x in exits] == [("SELL", 50, "filled")]
    assert len(placed_at_sim(psim, name)) == 2 and _net(psim, api_key_for(db, acct)) == 0


@pytest.mark.timeout(60)
def test_exit_stuck_partially_filled_past_timeout_then_flagged_remainder_cancelled_and_resent_once(
        db, psim, service):
    acct, name = sim_account(db, psim, "px", is_primary=True)
    service(APP__SERVICE__EXIT_PARTIAL_TIMEOUT_S="2")
    run_id, entry = _entered_run(db, acct)
    assert wait_for(lambda: _run(db, run_id)[0].status == "active", 15), _run(db, run_id)
    assert _run(db, run_id)[1].quantity == 100
    psim.partial(SYM, EX, fill_qty=50, rest_after_s=None, count=1)  # the exit: 50 fill, the rest never
    psim.set_price(SYM, EX, 785.0)  # -15 x 100
    assert wait_for(lambda: _run(db, run_id)[0].status == "exited", 30), _run(db, run_id)
    run, ex, intents = _run(db, run_id)
    exits = _exits(intents)
    assert [(x.requested_qty, x.status, x.broker_filled_qty) for x in exits] == [(100, "cancelled", 50),
                                                                                 (50, "filled", 50)]
    assert ex.exit_attempts == 1 and ex.exit_intent_id == exits[1].id
    with db.read() as s:
        flags = list(s.scalars(select(RiskEvent).where(RiskEvent.run_id == run_id,
                                                       RiskEvent.event_type == "exit_partial")))
        errors = [m for m in s.scalars(select(ServiceLog.message).where(ServiceLog.level == "ERROR"))
                  if "EXIT PARTIAL" in m]
    assert len(flags) == 1 and "filled 50 of 100" in flags[0].message and SYM in flags[0].message
    assert len(errors) == 1 and "leg 1" in errors[0] and "remaining 50" in errors[0]
    book = placed_at_sim(psim, name)
    assert [(o["action"], o["quantity"], o["order_status"], o["filled_quantity"]) for o in book] == [
        ("BUY", 100, "complete", 100), ("SELL", 100, "cancelled", 50), ("SELL", 50, "complete", 50)]
    assert _net(psim, api_key_for(db, acct)) == 0
