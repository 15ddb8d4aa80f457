"""Rows nobody validated, against the REAL service process (``python -m services``) and the simulator:

* a queued intent whose created_at cannot be parsed (a hand edit, a script) sorts first in its account's queue:
  it is denied once with the reason, logged once, and the account's max-loss exit still reaches the broker,
  exactly once;
* a control_commands row written directly with a fractional, string or boolean run id is marked failed and
  nothing is exited (it is not truncated to another run).
"""
from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from db.models import ControlCommand, OrderEvent, OrderIntent, ServiceLog, StrategyRun
from db.rawsql import raw_cursor
from simulator.testing import SimProcess
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_md import make_run
from tests.service.fixtures_orders import make_strategy_run, placed_at_sim, sim_account


@pytest.fixture(scope="module")
def live_sim():
    with SimProcess(seed=41) as sim:
        yield sim


@pytest.fixture
def service(db, live_sim, tmp_path):
    procs = []

    def start():
        p = start_service(db.path, tmp_path / "svc.log", service_env())
        procs.append(p)
        assert wait_for(lambda: _dispatcher_up(db), 30), (tmp_path / "svc.out").read_text()[-2000:]
        return p

    yield start
    for p in procs:
        assert stop_service(p) == 0


def _dispatcher_up(db) -> bool:
    from db.models import ServiceHeartbeat
    with db.read() as s:
        hb = s.get(ServiceHeartbeat, "dispatcher")
        return hb is not None and hb.status == "ok"


def _row(db, iid: int) -> OrderIntent:
    with db.read() as s:
        return s.get(OrderIntent, iid)


def _exits(db, run_id: int) -> list[OrderIntent]:
    with db.read() as s:
        return list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id, OrderIntent.purpose == "exit")))


def _insert_poison(db, account_id: int) -> int:
    """A queued intent with created_at 'garbage', in ONE transaction (the running dispatcher must never see it
    readable). Priority 0 sorts it ahead of every exit of the account (BUY exits are 1+, SELL exits 21+)."""
    with db.write() as s:
        i = OrderIntent(client_order_id="poison-row", account_id=account_id, symbol="SBIN", exchange="NSE",
                        action="BUY", requested_qty=1, product="MIS", strategy_tag="Poison", priority=0)
        s.add(i)
        s.flush()
        raw_cursor(s).execute("UPDATE order_intents SET created_at = 'garbage' WHERE id = ?", (i.id,))
        return i.id


@pytest.mark.timeout(60)
def test_poison_row_when_max_loss_breached_then_exit_placed_once_poison_denied_and_logged_once(
        db, live_sim, service, tmp_path):
    acct, name = sim_account(db, live_sim, "poison", is_primary=True)
    service()
    run_id, (entry,) = make_strategy_run(db, acct, [dict(symbol="SBIN", action="BUY", qty=1)], "PoisonRun")
    assert wait_for(lambda: _row(db, entry).status == "filled", 15), _row(db, entry).status
    fill = _row(db, entry).broker_avg_price
    with db.write() as s:
        s.get(StrategyRun, run_id).max_loss = round(fill * 0.2, 2)
    assert wait_for(lambda: _run_status(db, run_id) == "active", 10)

    poison = _insert_poison(db, acct)
    time.sleep(1.0)  # ~50 dispatcher passes with the poison row queued
    live_sim.set_price("SBIN", "NSE", round(fill * 0.5, 1))  # the long leg loses 50%: past the 20% max loss

    assert wait_for(lambda: any(x.status == "filled" for x in _exits(db, run_id)), 15), \
        [(x.status, x.status_reason) for x in _exits(db, run_id)]
    time.sleep(1.5)  # more passes: nothing else is sent, nothing more is logged
    orders = placed_at_sim(live_sim, name)
    assert [(o["action"], o["strategy"]) for o in orders] == [("BUY", "PoisonRun"), ("SELL", "PoisonRun")]
    assert {x.broker_order_id for x in _exits(db, run_id)} == {orders[1]["orderid"]}

    row = _row(db, poison)
    assert row.status == "denied"
    assert row.status_reason == "unreadable intent row: created_at 'garbage' is not a timestamp"
    with db.read() as s:
        assert [(e.from_status, e.to_status) for e in s.scalars(
            select(OrderEvent).where(OrderEvent.intent_id == poison))] == [("queued", "denied")]
        logged = list(s.scalars(select(ServiceLog.message).where(ServiceLog.message.contains("garbage"))))
    assert logged == [f"intent {poison} denied: unreadable intent row: created_at 'garbage' is not a timestamp"]
    lines = [ln for ln in (tmp_path / "svc.log").read_text().splitlines() if "garbage" in ln]
    assert len(lines) == 1 and "WARNING" in lines[0], lines[:5]


def _run_status(db, run_id: int) -> str:
    with db.read() as s:
        return s.get(StrategyRun, run_id).status


@pytest.mark.timeout(40)
def test_control_row_with_a_non_integer_run_id_when_written_directly_then_failed_and_the_run_not_exited(
        db, live_sim, service):
    acct, _ = sim_account(db, live_sim, "ctl", is_primary=True)
    run_id, _ = make_run(db, acct, [dict(symbol="SBIN", exchange="NSE", action="BUY", qty=1, entry=1.0)])
    service()
    with db.write() as s:  # not through enqueue_control: anything with the database file can write these
        cmds = [ControlCommand(kind="exit_run", payload_json=json.dumps({"run_id": value}))
                for value in (run_id + 0.9, True, str(run_id))]  # int() would read each of them as this run
        s.add_all(cmds)
        s.flush()
        ids = [c.id for c in cmds]

    def processed():
        with db.read() as s:
            return [(c.status, c.result) for c in s.scalars(select(ControlCommand).where(ControlCommand.id.in_(ids))
                                                            .order_by(ControlCommand.id)) if c.status != "queued"]
    assert wait_for(lambda: len(processed()) == 3, 10), processed()
    for status, result in processed():
        assert status == "failed" and "needs a whole-number 'run_id'" in result, (status, result)
    time.sleep(0.5)
    assert _run_status(db, run_id) == "active" and _exits(db, run_id) == []
