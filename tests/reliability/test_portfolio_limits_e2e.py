"""The portfolio daily max loss and an account's trailing stop on its day P&L, against the real service process
and the simulator. Positions are opened outside the app (no strategy run protects them), so only these limits
act: on ticks, once, ending with every position closed at the broker."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from db.accounts import add_account, update_account
from db.models import Account, ControlCommand, RiskEvent
from db.portfolio import set_portfolio_max_loss
from db.vocab import CommandStatus, TradingState
from simulator.testing import SimProcess
from tests.builders import fresh_row, seed_instruments, stored_qty
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=61, args=["--frozen"]) as s:
        yield s


def _commands(db, kind) -> list[ControlCommand]:
    with db.read() as s:
        return list(s.scalars(select(ControlCommand).where(ControlCommand.kind == kind)))


def _events(db, kind) -> list[RiskEvent]:
    with db.read() as s:
        return list(s.scalars(select(RiskEvent).where(RiskEvent.event_type == kind)))


def _buy_outside(sim, key, qty=10):
    r = sim.api("placeorder", {"apikey": key, "strategy": "outside", "symbol": "SBIN", "exchange": "NSE",
                               "action": "BUY", "quantity": qty, "pricetype": "MARKET", "product": "MIS"}).json()
    assert r.get("orderid"), r


def _avg(sim, key) -> float:
    return float(sim.api("positionbook", {"apikey": key}).json()["data"][0]["average_price"])


def _flat_at_broker(sim, key) -> bool:
    return all(int(float(p["quantity"])) == 0 for p in sim.api("positionbook", {"apikey": key}).json()["data"])


def _sells(sim, name) -> list[int]:
    return [int(o["quantity"]) for o in sim.orders()
            if o.get("account") == name and o["action"] == "SELL" and o.get("orderid")]


def _env(webhook):
    return service_env(APP__SERVICE__FUNDS_REFRESH_S="1", APP__ALERTS__URLS=webhook.url,
                       APP__ALERTS__THROTTLE_S="0")


@pytest.mark.timeout(150)
def test_portfolio_max_loss_when_three_accounts_lose_together_through_it_then_all_halted_and_flat_once(
        db, sim, webhook, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    seed_instruments(db)
    names = ["port-a", "port-b", "port-c"]
    keys = [sim.create_account(n, capital=1e8) for n in names]
    accts = [add_account(db, n, sim.rest_url, sim.ws_url, k, is_primary=(i == 0))
             for i, (n, k) in enumerate(zip(names, keys, strict=True))]
    update_account(db, accts[2], daily_max_loss=10_000)  # limited or not, every account counts
    set_portfolio_max_loss(db, 250)
    for k in keys:
        _buy_outside(sim, k)
    proc = start_service(db.path, tmp_path / "svc.log", _env(webhook))
    try:
        assert wait_for(lambda: all(stored_qty(db, a) == 10 for a in accts), 30), (tmp_path / "svc.out").read_text()[-3000:]
        avg = max(_avg(sim, k) for k in keys)
        sim.set_price("SBIN", "NSE", avg - 5)  # 3 x about -50: inside the portfolio limit
        time.sleep(3.0)
        assert all(fresh_row(db, Account, a).trading_state == TradingState.ACTIVE for a in accts)
        sim.set_price("SBIN", "NSE", avg - 10)  # 3 x about -100 = -300 <= -250
        assert wait_for(lambda: all(fresh_row(db, Account, a).trading_state == TradingState.HALTED for a in accts), 10)
        assert all(fresh_row(db, Account, a).trading_reason.startswith("portfolio daily max loss ₹250 at ")
                   for a in accts)
        [cmd] = _commands(db, "flatten_all")
        assert wait_for(lambda: fresh_row(db, ControlCommand, cmd.id).status == CommandStatus.DONE, 60), \
            fresh_row(db, ControlCommand, cmd.id).result
        result = fresh_row(db, ControlCommand, cmd.id).result
        assert result.count("closed 1/1") == 3, result
        assert all(_flat_at_broker(sim, k) for k in keys)
        time.sleep(3.0)  # ticks and reloads go on: nothing more happens
        assert [_sells(sim, n) for n in names] == [[10], [10], [10]]  # each closed once
        [event] = _events(db, "portfolio_max_loss")
        assert event.account_id is None and event.threshold == -250 and event.value <= -250
        assert len(_commands(db, "flatten_all")) == 1 and not _commands(db, "flatten_account")
        assert wait_for(lambda: webhook.matching("portfolio daily max loss"), 10), webhook.received
    finally:
        assert stop_service(proc) == 0


@pytest.mark.timeout(150)
def test_trailing_when_day_pnl_peaks_then_the_service_restarts_and_it_falls_through_the_floor_then_flattened_once(
        db, sim, webhook, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    seed_instruments(db)
    key = sim.create_account("trail", capital=1e8)
    acct = add_account(db, "trail", sim.rest_url, sim.ws_url, key, is_primary=True)
    update_account(db, acct, daily_trailing=100)
    _buy_outside(sim, key)
    proc = start_service(db.path, tmp_path / "svc.log", _env(webhook))
    try:
        assert wait_for(lambda: stored_qty(db, acct) == 10, 30), (tmp_path / "svc.out").read_text()[-3000:]
        avg = _avg(sim, key)
        sim.set_price("SBIN", "NSE", avg + 20)  # day P&L +200: the peak
        assert wait_for(lambda: (fresh_row(db, Account, acct).day_peak or 0) >= 199, 10)
        sim.set_price("SBIN", "NSE", avg + 15)  # +150: above the floor (100)
        time.sleep(2.5)
        assert fresh_row(db, Account, acct).trading_state == TradingState.ACTIVE
    finally:
        assert stop_service(proc) == 0
    # Restarted at +150: a service that forgot the peak would start its floor at 50; the stored one keeps 100.
    proc = start_service(db.path, tmp_path / "svc2.log", _env(webhook))
    try:
        # the new process starts (seconds on a loaded machine), loads the account, subscribes, sees ticks at +150
        assert wait_for(lambda: "service started" in (tmp_path / "svc2.out").read_text(), 60)
        time.sleep(2.5)
        assert fresh_row(db, Account, acct).trading_state == TradingState.ACTIVE
        sim.set_price("SBIN", "NSE", avg + 8)  # +80 <= 100
        assert wait_for(lambda: fresh_row(db, Account, acct).trading_state == TradingState.HALTED, 10)
        reason = fresh_row(db, Account, acct).trading_reason
        assert reason.startswith("daily trailing stop ₹100: day P&L peak ₹200.00, floor ₹100.00 at "), reason
        [cmd] = _commands(db, "flatten_account")
        assert wait_for(lambda: fresh_row(db, ControlCommand, cmd.id).status == CommandStatus.DONE, 60), \
            fresh_row(db, ControlCommand, cmd.id).result
        assert "closed 1/1" in fresh_row(db, ControlCommand, cmd.id).result and _flat_at_broker(sim, key)
        time.sleep(2.0)
        assert _sells(sim, "trail") == [10]
        [event] = _events(db, "account_trailing_stop")
        assert event.account_id == acct and event.threshold == pytest.approx(100.0, abs=1)
        assert wait_for(lambda: webhook.matching("daily trailing stop"), 10), webhook.received
    finally:
        assert stop_service(proc) == 0
