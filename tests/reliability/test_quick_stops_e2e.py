"""Quick Order stop-loss / target against the real service process (``python -m services``) and the simulator.

A Quick Order entry with a stop-loss or target is protected once it fills: the levels come from the average fill
price, the service watches them on ticks and exits the position through the one exit path, once. A restart between
the fill and the hit still exits once; a position already closed (by a flatten, by hand at the broker) is never
reversed: the stop is cancelled instead.
"""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from db.accounts import add_account
from db.commands import OrderRequest, enqueue_control, enqueue_order
from db.intents import new_client_order_id
from db.models import Account, ControlCommand, OrderIntent, QuickStop, RiskEvent
from db.stop_levels import StopSpec
from db.vocab import CommandStatus, StopStatus
from simulator.testing import SimProcess
from tests.builders import fresh_row, seed_instruments
from tests.reliability.crash_harness import kill_service, service_env, start_service, stop_service, wait_for


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=61, args=["--frozen"]) as s:
        yield s


def _account(db, sim, prefix: str) -> tuple[int, str, str]:
    seed_instruments(db)
    name = f"{prefix}-{time.monotonic_ns() % 10**9}"
    key = sim.create_account(name, capital=1e8)
    return add_account(db, name, sim.rest_url, sim.ws_url, key, is_primary=True), key, name


def _stop(db) -> QuickStop:
    with db.read() as s:
        return s.scalar(select(QuickStop).order_by(QuickStop.id.desc()))


def _synced_after_arming(db, acct) -> bool:
    """Armed, and the account's positionbook read after the entry filled (the stop may act on a hit now)."""
    with db.read() as s:
        st = s.scalar(select(QuickStop).where(QuickStop.account_id == acct))
        synced = s.get(Account, acct).positions_synced_at
    return st is not None and st.status == StopStatus.ARMED and synced is not None and synced > st.armed_at


def _orders(sim, name: str, action: str) -> list[int]:
    return [int(o["quantity"]) for o in sim.orders()
            if o.get("account") == name and o["action"] == action and o.get("orderid")]


def _net(sim, key) -> int:
    rows = sim.api("positionbook", {"apikey": key}).json().get("data") or []
    return sum(int(float(r["quantity"])) for r in rows if r["symbol"] == "SBIN")


def _enter(db, acct, action: str, spec: StopSpec, qty: int = 10) -> int:
    intent_id, created = enqueue_order(db, OrderRequest(acct, "SBIN", "NSE", action, qty), new_client_order_id(),
                                       stops=spec)
    assert created
    return intent_id


def _armed(db, acct, tail) -> QuickStop:
    assert wait_for(lambda: _synced_after_arming(db, acct), 30, 0.1), tail()
    return _stop(db)


def _service(db, tmp_path, webhook=None):
    extra = dict(APP__ALERTS__URLS=webhook.url, APP__ALERTS__THROTTLE_S="0") if webhook else {}
    proc = start_service(db.path, tmp_path / "svc.log", service_env(**extra))
    return proc, lambda: (tmp_path / "svc.out").read_text(errors="replace")[-4000:]


@pytest.mark.timeout(120)
def test_quick_order_buy_when_price_falls_through_its_stop_loss_then_one_sell_exit_at_the_broker(
        db, sim, webhook, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    acct, key, name = _account(db, sim, "qsl")
    proc, tail = _service(db, tmp_path, webhook)
    try:
        entry = _enter(db, acct, "BUY", StopSpec(sl_mode="points", sl_value=10))
        st = _armed(db, acct, tail)
        with db.read() as s:
            avg = s.get(OrderIntent, entry).broker_avg_price
        assert (st.quantity, st.entry_price, st.sl_level, st.tp_level) == (10, avg, round(avg - 10, 4), None)
        sim.set_price("SBIN", "NSE", round(avg - 5, 1))  # inside the stop: nothing happens
        time.sleep(2.0)
        assert _orders(sim, name, "SELL") == [] and _stop(db).status == StopStatus.ARMED
        sim.set_price("SBIN", "NSE", round(avg - 12, 1))
        assert wait_for(lambda: _stop(db).status == StopStatus.EXITED, 20, 0.1), tail()
        time.sleep(2.0)  # more ticks and sweeps below the level: still one exit
        assert _orders(sim, name, "SELL") == [10]
        assert _net(sim, key) == 0
        with db.read() as s:
            [event] = list(s.scalars(select(RiskEvent).where(RiskEvent.event_type == "stop_loss")))
            exit_intent = s.get(OrderIntent, _stop(db).exit_intent_id)
        assert event.threshold == round(avg - 10, 4) and event.value <= avg - 10 and "SBIN" in event.message
        assert (exit_intent.purpose, exit_intent.action, exit_intent.product, exit_intent.exchange) == \
            ("exit", "SELL", "MIS", "NSE")
        assert wait_for(lambda: webhook.matching("stop-loss"), 10), webhook.received
    finally:
        assert stop_service(proc) == 0


@pytest.mark.timeout(120)
def test_quick_order_sell_when_price_reaches_its_target_then_one_buy_exit_at_the_broker(db, sim, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    acct, key, name = _account(db, sim, "qtp")
    proc, tail = _service(db, tmp_path)
    try:
        _enter(db, acct, "SELL", StopSpec(tp_mode="points", tp_value=5))
        st = _armed(db, acct, tail)
        assert st.tp_level == round(st.entry_price - 5, 4) and st.sl_level is None
        sim.set_price("SBIN", "NSE", round(st.entry_price - 6, 1))
        assert wait_for(lambda: _stop(db).status == StopStatus.EXITED, 20, 0.1), tail()
        time.sleep(1.5)
        assert _orders(sim, name, "BUY") == [10] and _orders(sim, name, "SELL") == [10]
        assert _net(sim, key) == 0
    finally:
        assert stop_service(proc) == 0


@pytest.mark.timeout(150)
def test_quick_stop_when_the_service_restarts_between_fill_and_hit_then_it_still_exits_once(db, sim, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    acct, key, name = _account(db, sim, "qrs")
    proc, tail = _service(db, tmp_path)
    try:
        _enter(db, acct, "BUY", StopSpec(sl_mode="pct", sl_value=1))
        st = _armed(db, acct, tail)
        assert st.sl_level == round(st.entry_price * 0.99, 4)
        kill_service(proc)  # SIGKILL: nothing in memory survives
        sim.set_price("SBIN", "NSE", round(st.sl_level - 3, 1))  # crossed while no service runs
        proc, tail = _service(db, tmp_path)
        assert wait_for(lambda: _stop(db).status in (StopStatus.TRIGGERED, StopStatus.EXITED), 30, 0.05), tail()
        kill_service(proc)  # and again, right after the hit was acted on
        proc, tail = _service(db, tmp_path)
        assert wait_for(lambda: _stop(db).status == StopStatus.EXITED, 30, 0.1), tail()
        time.sleep(2.0)
        assert _orders(sim, name, "SELL") == [10]
        assert _net(sim, key) == 0
    finally:
        assert stop_service(proc) == 0


@pytest.mark.timeout(150)
def test_quick_stop_when_a_flatten_closed_the_position_before_the_hit_then_cancelled_and_no_second_exit(
        db, sim, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    acct, key, name = _account(db, sim, "qfl")
    proc, tail = _service(db, tmp_path)
    try:
        _enter(db, acct, "BUY", StopSpec(sl_mode="points", sl_value=10, tp_mode="points", tp_value=20))
        st = _armed(db, acct, tail)
        cmd = enqueue_control(db, "flatten_account", {"account_id": acct})
        assert wait_for(lambda: fresh_row(db, ControlCommand, cmd).status == CommandStatus.DONE, 60), tail()
        assert "closed 1/1" in fresh_row(db, ControlCommand, cmd).result, fresh_row(db, ControlCommand, cmd).result
        assert _stop(db).status == StopStatus.CANCELLED and "flatten" in _stop(db).status_reason
        sim.set_price("SBIN", "NSE", round(st.sl_level - 5, 1))
        time.sleep(3.0)
        assert _orders(sim, name, "SELL") == [10]  # the flatten's, and nothing after it
        assert _net(sim, key) == 0
    finally:
        assert stop_service(proc) == 0


@pytest.mark.timeout(150)
def test_quick_stop_when_the_position_was_closed_by_hand_at_the_broker_then_cancelled_and_never_reversed(
        db, sim, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    acct, key, name = _account(db, sim, "qhd")
    proc, tail = _service(db, tmp_path)
    try:
        _enter(db, acct, "BUY", StopSpec(sl_mode="points", sl_value=10))
        st = _armed(db, acct, tail)
        r = sim.api("placeorder", {"apikey": key, "strategy": "by hand", "symbol": "SBIN", "exchange": "NSE",
                                   "action": "SELL", "quantity": 10, "pricetype": "MARKET", "product": "MIS"}).json()
        assert r.get("orderid"), r
        enqueue_control(db, "refresh_account", {"account_id": acct})
        assert wait_for(lambda: _stop(db).status == StopStatus.CANCELLED, 30, 0.1), tail()
        sim.set_price("SBIN", "NSE", round(st.sl_level - 5, 1))
        time.sleep(3.0)
        assert _orders(sim, name, "SELL") == [10]  # the trader's own; no exit of ours
        assert _net(sim, key) == 0
    finally:
        assert stop_service(proc) == 0


@pytest.mark.timeout(120)
def test_quick_stop_when_the_entry_filled_only_in_part_then_the_filled_part_exits_and_the_rest_is_cancelled(
        db, sim, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    acct, key, name = _account(db, sim, "qpf")
    proc, tail = _service(db, tmp_path)
    try:
        sim.partial("SBIN", "NSE", fill_qty=4, rest_after_s=None, count=1)  # the entry: 4 of 10 fill, the rest rests
        entry = _enter(db, acct, "BUY", StopSpec(sl_mode="points", sl_value=10))
        st = _armed(db, acct, tail)
        assert st.quantity == 4
        sim.set_price("SBIN", "NSE", round(st.sl_level - 2, 1))
        assert wait_for(lambda: _stop(db).status == StopStatus.EXITED, 20, 0.1), tail()
        assert wait_for(lambda: _intent_status(db, entry) == "cancelled", 20, 0.1), tail()
        time.sleep(1.5)
        assert _orders(sim, name, "SELL") == [4]
        assert _net(sim, key) == 0
    finally:
        sim.clear_faults()
        assert stop_service(proc) == 0


@pytest.mark.timeout(120)
def test_quick_stop_when_the_account_is_halted_then_its_exit_is_still_sent_once(db, sim, tmp_path):
    sim.set_price("SBIN", "NSE", 800.0)
    acct, key, name = _account(db, sim, "qha")
    proc, tail = _service(db, tmp_path)
    try:
        _enter(db, acct, "BUY", StopSpec(sl_mode="points", sl_value=10))
        st = _armed(db, acct, tail)
        cmd = enqueue_control(db, "halt_account", {"account_id": acct})
        assert wait_for(lambda: fresh_row(db, ControlCommand, cmd).status == CommandStatus.DONE, 20), tail()
        sim.set_price("SBIN", "NSE", round(st.sl_level - 1, 1))
        assert wait_for(lambda: _stop(db).status == StopStatus.EXITED, 20, 0.1), tail()
        time.sleep(1.0)
        assert _orders(sim, name, "SELL") == [10] and _net(sim, key) == 0
    finally:
        assert stop_service(proc) == 0


def _intent_status(db, intent_id) -> str:
    with db.read() as s:
        return s.get(OrderIntent, intent_id).status
