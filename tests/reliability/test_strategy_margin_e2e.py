"""Execute with per-account multipliers behind a margin check, against the real service process and simulator:
the service asks each account's broker (/margin, /funds) in answer to the page's margin_check command; Execute
sends lots x multiplier per account (freeze-quantity slices per account), and an account short of margin gets
no order at all, with its shortfall named."""
from __future__ import annotations

from collections import defaultdict

import pytest

from db.accounts import add_account
from db.commands import enqueue_control
from db.intents import new_client_order_id
from db.margin import check_rows, command_state
from db.strategies import LegSpec, execute_plan, save_strategy
from db.vocab import CommandStatus
from simulator.testing import SimProcess
from tests.reliability.crash_harness import CrashScenario, stop_service, wait_for

LOTS = 10  # x3 = 30 lots = 1950 units: above NIFTY's freeze quantity (1800), so that account's legs split in two


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=53) as s:
        yield s


@pytest.mark.timeout(150)
def test_execute_when_multipliers_and_one_account_short_of_margin_then_quantities_scale_and_it_gets_no_order(
        sim, tmp_path):
    sc = CrashScenario(sim, tmp_path, accounts=3)
    poor_name = "poor-margin"
    poor = add_account(sc.db, poor_name, sim.rest_url, sim.ws_url, sim.create_account(poor_name, capital=50_000),
                       backup_order=9)
    a1, a2, a3 = list(sc.names)
    sc.start()
    try:
        expiry = sc.wait_ready()
        sid = save_strategy(sc.db, "straddle x", "NIFTY", "NSE_INDEX", expiry,
                            [LegSpec("CE", "SELL", lots=LOTS), LegSpec("PE", "SELL", lots=LOTS)])
        mult = {a1: 1, a2: 2, a3: 3, poor: 1}
        cid = enqueue_control(sc.db, "margin_check", {"strategy_id": sid, "accounts": [[a, m] for a, m in mult.items()]})
        assert wait_for(lambda: command_state(sc.db, cid)[0] != CommandStatus.QUEUED, 60), sc.tail()
        assert command_state(sc.db, cid)[0] == CommandStatus.DONE, command_state(sc.db, cid)
        rows = {r["account_id"]: r for r in check_rows(sc.db, cid)}
        assert not any(r["error"] for r in rows.values()), rows
        assert rows[a2]["required"] == pytest.approx(2 * rows[a1]["required"], rel=0.02)
        assert rows[a1]["required"] > 500_000  # 10 lots of a short straddle: SPAN-like, far above the premium
        assert rows[poor]["shortfall"] == pytest.approx(rows[poor]["required"] - 50_000, abs=1)

        res = execute_plan(sc.db, sid, list(mult), execute_key=new_client_order_id(), multipliers=mult,
                           margin_check_id=cid)
        assert list(res.refused) == [poor] and "short by ₹" in res.refused[poor]
        assert f"{rows[poor]['shortfall']:,.0f}" in res.refused[poor]
        assert len(res.run_ids) == 3
        assert wait_for(lambda: sc.runs_in(res.run_ids, ("active",)), 60), sc.tail()
        sent: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for o in sim.orders():
            if o.get("account") in (*sc.names.values(), poor_name):
                sent[o["account"]].append((o["symbol"][-2:], int(o["quantity"])))
        unit = LOTS * 65
        assert sorted(sent[sc.names[a1]]) == [("CE", unit), ("PE", unit)]
        assert sorted(sent[sc.names[a2]]) == [("CE", 2 * unit), ("PE", 2 * unit)]
        assert sorted(sent[sc.names[a3]]) == [("CE", 195), ("CE", 1755), ("PE", 195), ("PE", 1755)]
        assert poor_name not in sent  # refused before any order: nothing reached its broker
    finally:
        stop_service(sc.proc)
