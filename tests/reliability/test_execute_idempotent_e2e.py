"""Strategy Execute is idempotent: the key minted when the form renders makes a double click (or a resubmitted
form) fan out once. Two calls with one key, against the real service process and the simulator: the broker
receives each leg once per account."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from db.models import OrderIntent, StrategyRun
from db.intents import new_client_order_id
from db.strategies import LegSpec, execute_strategy, save_strategy
from simulator.testing import SimProcess
from tests.reliability.crash_harness import CrashScenario, stop_service, wait_for


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=47) as s:
        yield s


@pytest.mark.timeout(120)
def test_execute_when_called_twice_with_one_key_then_one_fan_out_and_each_leg_placed_once(sim, tmp_path):
    sc = CrashScenario(sim, tmp_path, accounts=2)
    sc.start()
    try:
        expiry = sc.wait_ready()
        sid = save_strategy(sc.db, "idem", "NIFTY", "NSE_INDEX", expiry,
                            [LegSpec("CE", "SELL"), LegSpec("CE", "BUY", strike_mode="OTM", offset=2)])
        key = new_client_order_id()
        group, runs = execute_strategy(sc.db, sid, list(sc.names), execute_key=key)
        again_group, again_runs = execute_strategy(sc.db, sid, list(sc.names), execute_key=key)
        assert (again_group, again_runs) == (group, runs) and len(runs) == 2
        assert wait_for(lambda: sc.runs_in(runs, ("active",)), 30), sc.tail()
        time.sleep(1.0)  # a second fan-out, had one been written, has every chance to reach the broker
        assert execute_strategy(sc.db, sid, list(sc.names), execute_key=key) == (group, runs)  # after the fills too
        placed = [o for o in sim.orders() if o.get("account") in sc.names.values() and o.get("orderid")]
        assert len(placed) == 4, placed  # 2 legs x 2 accounts, each once
        with sc.db.read() as s:
            assert s.scalar(select(func.count()).select_from(StrategyRun)) == 2
            assert s.scalar(select(func.count()).select_from(OrderIntent)) == 4
        _, other = execute_strategy(sc.db, sid, list(sc.names), execute_key=new_client_order_id())
        assert set(other).isdisjoint(runs)  # a new key is a new fan-out
    finally:
        stop_service(sc.proc)
