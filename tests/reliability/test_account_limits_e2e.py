"""A daily max loss on an account's day P&L, against the real service process and the simulator: a position
opened outside the app (so no strategy run protects it) is watched on ticks; a loss short of the limit changes
nothing, a loss through it halts the account and flattens it, once."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from db.accounts import add_account, update_account
from db.models import Account, ControlCommand, RiskEvent
from db.vocab import CommandStatus, TradingState
from simulator.testing import SimProcess
from tests.builders import fresh_row, seed_instruments, stored_qty
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=59, args=["--frozen"]) as s:
        yield s


@pytest.mark.timeout(120)
def test_daily_max_loss_when_an_outside_position_loses_through_it_then_account_halted_and_flattened_once(
        db, sim, webhook, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    seed_instruments(db)
    key = sim.create_account("limits", capital=1e8)
    acct = add_account(db, "limits", sim.rest_url, sim.ws_url, key, is_primary=True)
    update_account(db, acct, daily_max_loss=100)
    r = sim.api("placeorder", {"apikey": key, "strategy": "outside", "symbol": "SBIN", "exchange": "NSE",
                               "action": "BUY", "quantity": 10, "pricetype": "MARKET", "product": "MIS"}).json()
    assert r.get("orderid"), r
    proc = start_service(db.path, tmp_path / "svc.log", service_env(
        APP__SERVICE__FUNDS_REFRESH_S="1", APP__ALERTS__URLS=webhook.url, APP__ALERTS__THROTTLE_S="0"))
    try:
        assert wait_for(lambda: stored_qty(db, acct) == 10, 30), (tmp_path / "svc.out").read_text()[-3000:]
        avg = float(sim.api("positionbook", {"apikey": key}).json()["data"][0]["average_price"])
        sim.set_price("SBIN", "NSE", avg - 5)  # day P&L -50: inside the limit
        time.sleep(3.0)
        assert fresh_row(db, Account, acct).trading_state == TradingState.ACTIVE
        sim.set_price("SBIN", "NSE", avg - 15)  # day P&L -150 <= -100
        assert wait_for(lambda: fresh_row(db, Account, acct).trading_state == TradingState.HALTED, 10)
        assert fresh_row(db, Account, acct).trading_reason.startswith("daily max loss ₹100 at ")
        with db.read() as s:
            [cmd] = list(s.scalars(select(ControlCommand).where(ControlCommand.kind == "flatten_account")))
        assert wait_for(lambda: fresh_row(db, ControlCommand, cmd.id).status == CommandStatus.DONE, 60), \
            fresh_row(db, ControlCommand, cmd.id).result
        assert "closed 1/1" in fresh_row(db, ControlCommand, cmd.id).result
        rows = sim.api("positionbook", {"apikey": key}).json()["data"]
        assert all(int(float(p["quantity"])) == 0 for p in rows), rows
        sells = [o for o in sim.orders() if o.get("account") == "limits" and o["action"] == "SELL" and o.get("orderid")]
        assert [int(o["quantity"]) for o in sells] == [10]  # closed once
        with db.read() as s:
            [event] = list(s.scalars(select(RiskEvent).where(RiskEvent.event_type == "account_max_loss")))
        assert event.threshold == -100 and event.value <= -100
        assert wait_for(lambda: [m for _, m in webhook.received if "daily max loss" in m.get("message", "")], 10)
    finally:
        assert stop_service(proc) == 0
