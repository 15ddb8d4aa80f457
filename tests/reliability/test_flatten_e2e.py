"""Flatten (the kill switch) against the real service process (``python -m services``) and the simulator.

Three accounts, each holding what a trader's day leaves behind: a strategy run (long 10 SBIN), a Quick Order short
(SELL 5 RELIANCE), an order placed outside the app (BUY 3 RELIANCE at the broker directly) and two resting LIMIT
orders (one ours, one external). 'Flatten all' must leave the broker flat and nothing working, place every exit
once, send the exit that BUYs (closing the short) before the one that SELLs, end the runs 'exited' with reason
'flatten' and halt every account.
"""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from db.accounts import add_account
from db.commands import OrderRequest, enqueue_control, enqueue_order
from db.intents import new_client_order_id
from db.models import Account, ControlCommand, OrderIntent, StrategyRun
from db.vocab import CommandStatus, TradingState
from simulator.testing import SimProcess
from tests.builders import seed_instruments
from tests.harness import queue_runs
from tests.reliability.alert_hook import Webhook
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_orders import add_intent

N_ACCOUNTS = 3


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=53, args=["--frozen"]) as s:
        yield s


def _positions(sim, key) -> dict:
    rows = sim.api("positionbook", {"apikey": key}).json().get("data") or []
    return {(r["symbol"], r["product"]): int(float(r["quantity"])) for r in rows}


def _working(sim, key) -> list[dict]:
    data = sim.api("orderbook", {"apikey": key}).json().get("data") or {}
    return [o for o in data.get("orders", []) if o.get("order_status") == "open"]


def _cmd(db, cid) -> ControlCommand:
    with db.read() as s:
        return s.get(ControlCommand, cid)


@pytest.mark.timeout(180)
def test_flatten_all_when_runs_quick_orders_external_orders_and_resting_limits_then_broker_flat_once_buy_first(
        db, sim, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    sim.set_price("RELIANCE", "NSE", 1400.0)
    seed_instruments(db)
    accounts = {}
    for n in range(N_ACCOUNTS):
        name = f"flat{n}-{time.monotonic_ns() % 10**8}"
        key = sim.create_account(name, capital=1e8)
        accounts[add_account(db, name, sim.rest_url, sim.ws_url, key, is_primary=n == 0)] = (name, key)
    hook = Webhook()
    proc = start_service(db.path, tmp_path / "svc.log", service_env(APP__ALERTS__URLS=hook.url))
    try:
        runs = [run for run, _ in queue_runs(db, list(accounts), [dict(symbol="SBIN", action="BUY", qty=10)], "flat")]
        resting = []
        for acct, (_, key) in accounts.items():
            enqueue_order(db, OrderRequest(acct, "RELIANCE", "NSE", "SELL", 5), new_client_order_id())
            resting.append(add_intent(db, acct, "SBIN", pricetype="LIMIT", price=1.0))  # ours, rests open
            for body in (dict(action="BUY", quantity=3, pricetype="MARKET", price=0),  # outside the app
                         dict(action="SELL", quantity=1, pricetype="LIMIT", price=9999.0)):
                r = sim.api("placeorder", {"apikey": key, "strategy": "manual", "symbol": "RELIANCE",
                                           "exchange": "NSE", "product": "MIS", **body}).json()
                assert r.get("orderid"), r
        assert wait_for(lambda: _all_runs(db, runs, "active"), 40), (tmp_path / "svc.out").read_text()[-3000:]
        assert wait_for(lambda: all(_positions(sim, k).get(("RELIANCE", "MIS")) == -2
                                    for _, k in accounts.values()), 20)
        assert wait_for(lambda: all(len(_working(sim, k)) == 2 for _, k in accounts.values()), 20)
        before = {name: len([o for o in sim.orders() if o.get("account") == name]) for name, _ in accounts.values()}

        cid = enqueue_control(db, "flatten_all", {})
        done = wait_for(lambda: _cmd(db, cid).status != CommandStatus.QUEUED, 90)
        assert done, (tmp_path / "svc.log").read_text()[-4000:]
        cmd = _cmd(db, cid)
        assert cmd.status == CommandStatus.DONE and "NOT DONE" not in cmd.result, cmd.result
        for acct, (name, key) in accounts.items():
            assert f"account {acct}: cancelled 2/2, closed 1/1, 1 run(s) exited" in cmd.result, cmd.result
            assert all(q == 0 for q in _positions(sim, key).values()), _positions(sim, key)
            assert _working(sim, key) == []
            new = [o for o in sim.orders() if o.get("account") == name][before[name]:]
            exits = [(o["action"], o["symbol"], int(o["quantity"])) for o in new if o.get("orderid")]
            assert exits == [("BUY", "RELIANCE", 2), ("SELL", "SBIN", 10)], exits  # each once, BUY first
        with db.read() as s:
            assert {r.status for r in s.scalars(select(StrategyRun).where(StrategyRun.id.in_(runs)))} == {"exited"}
            assert {r.exit_reason for r in s.scalars(select(StrategyRun).where(StrategyRun.id.in_(runs)))} == \
                {"flatten"}
            assert {a.trading_state for a in s.scalars(select(Account))} == {TradingState.HALTED}
        assert wait_for(lambda: _statuses(db, resting) == {"cancelled"}, 10), _statuses(db, resting)
        assert wait_for(lambda: [m for _, m in hook.received if "flatten" in m.get("title", "")], 10), hook.received
    finally:
        hook.close()
        assert stop_service(proc) == 0


def _all_runs(db, runs, status) -> bool:
    with db.read() as s:
        return all(s.get(StrategyRun, r).status == status for r in runs)


def _statuses(db, ids) -> set[str]:
    with db.read() as s:
        return {s.get(OrderIntent, i).status for i in ids}
