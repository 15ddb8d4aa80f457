"""Exits are never denied by account state: the real service process (``python -m services``) and the simulator.

* halted (the trader's 'Halt'): a new entry is denied with the reason; a max-loss exit is sent;
* deactivated (Accounts: 'Active' unticked): a max-loss exit is still sent, exactly once;
* key rejected by the broker (403): the exit is still tried, and the rejection is an alert at once.
"""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select, update

from db.accounts import update_account
from db.commands import CommandError, OrderRequest, enqueue_control, enqueue_order
from db.intents import new_client_order_id
from db.models import Account, ControlCommand, OrderIntent, StrategyRun
from db.vocab import CommandStatus, TradingState
from simulator.testing import SimProcess
from tests.builders import seed_instruments
from tests.harness import queue_runs
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_orders import add_intent, placed_at_sim, sim_account

SYMBOL, QTY = "SBIN", 10


@pytest.fixture(scope="module")
def frozen_sim():
    with SimProcess(seed=43, args=["--frozen"]) as sim:
        yield sim


@pytest.fixture
def running(db, frozen_sim, webhook, tmp_path):
    """An account with a filled 10 x SBIN BUY run under a ₹100 max loss, the service running on it."""
    frozen_sim.clear_faults()
    frozen_sim.set_price(SYMBOL, "NSE", 1000.0)
    seed_instruments(db)
    sim_account(db, frozen_sim, "feed", is_primary=True)  # the feed's account: ticks flow whatever befalls the other
    acct, name = sim_account(db, frozen_sim, "state")
    [(run_id, _)] = queue_runs(db, [acct], [dict(symbol=SYMBOL, action="BUY", qty=QTY)], f"state-{acct}")
    proc = start_service(db.path, tmp_path / "svc.log", service_env(
        APP__ALERTS__URLS=webhook.url, APP__ALERTS__THROTTLE_S="0", APP__SERVICE__EXIT_RETRIES="50"))
    assert wait_for(lambda: _run(db, run_id).status == "active", 30), (tmp_path / "svc.out").read_text()[-3000:]
    with db.write() as s:
        s.execute(update(StrategyRun).where(StrategyRun.id == run_id).values(max_loss=100.0))
    assert wait_for(lambda: _run(db, run_id).pnl is not None, 10)
    yield dict(acct=acct, name=name, run_id=run_id, entry=_entry_price(db, run_id), proc=proc)
    frozen_sim.clear_faults()
    assert stop_service(proc) == 0


def _run(db, run_id) -> StrategyRun:
    with db.read() as s:
        return s.get(StrategyRun, run_id)


def _entry_price(db, run_id) -> float:
    with db.read() as s:
        return s.scalar(select(OrderIntent.broker_avg_price).where(OrderIntent.run_id == run_id,
                                                                   OrderIntent.purpose == "entry"))


def _command(db, kind, payload) -> ControlCommand:
    cid = enqueue_control(db, kind, payload)
    assert wait_for(lambda: _cmd(db, cid).status != CommandStatus.QUEUED, 10)
    return _cmd(db, cid)


def _cmd(db, cid) -> ControlCommand:
    with db.read() as s:
        return s.get(ControlCommand, cid)


def _exits_at_sim(sim, name) -> list[dict]:
    return [o for o in sim.orders() if o.get("account") == name and o.get("action") == "SELL"]


def _breach(sim, entry):
    sim.set_price(SYMBOL, "NSE", entry - 25)  # P&L -250 <= -100


@pytest.mark.timeout(90)
def test_halted_account_when_entry_queued_and_max_loss_breached_then_entry_denied_with_reason_and_exit_sent(
        db, frozen_sim, running):
    cmd = _command(db, "halt_account", {"account_id": running["acct"]})
    assert cmd.status == CommandStatus.DONE, cmd.result
    with db.read() as s:
        assert s.get(Account, running["acct"]).trading_state == TradingState.HALTED
    with pytest.raises(CommandError, match="is halted: halted by the trader at "):  # refused before it is queued
        enqueue_order(db, OrderRequest(running["acct"], "RELIANCE", "NSE", "BUY", 1), new_client_order_id())
    iid = add_intent(db, running["acct"], "RELIANCE")  # an entry queued before the halt took effect
    assert wait_for(lambda: _intent(db, iid).status == "denied", 10)
    assert _intent(db, iid).status_reason.startswith("account halted: halted by the trader at ")
    _breach(frozen_sim, running["entry"])
    assert wait_for(lambda: [o for o in placed_at_sim(frozen_sim, running["name"]) if o["action"] == "SELL"], 10)
    time.sleep(1.0)
    [exit_order] = [o for o in placed_at_sim(frozen_sim, running["name"]) if o["action"] == "SELL"]
    assert int(exit_order["quantity"]) == QTY
    assert not [o for o in frozen_sim.orders() if o.get("account") == running["name"] and o["symbol"] == "RELIANCE"]
    cmd = _command(db, "rearm_account", {"account_id": running["acct"]})
    assert cmd.status == CommandStatus.DONE
    iid, _ = enqueue_order(db, OrderRequest(running["acct"], "RELIANCE", "NSE", "BUY", 1), new_client_order_id())
    assert wait_for(lambda: _intent(db, iid).status == "filled", 15), _intent(db, iid).status_reason


@pytest.mark.timeout(90)
def test_deactivated_account_when_max_loss_breached_then_exit_still_sent_once(db, frozen_sim, running):
    update_account(db, running["acct"], is_active=False)
    _breach(frozen_sim, running["entry"])
    assert wait_for(lambda: _exits_at_sim(frozen_sim, running["name"]), 10), "the exit was not sent"
    time.sleep(1.5)  # a duplicate has every chance to show up
    [order] = _exits_at_sim(frozen_sim, running["name"])
    assert order.get("orderid") and int(order["quantity"]) == QTY
    assert wait_for(lambda: _run(db, running["run_id"]).status == "exited", 10)


@pytest.mark.timeout(90)
def test_key_rejected_when_max_loss_breached_then_exit_tried_and_alerted_at_once(db, frozen_sim, running, webhook):
    frozen_sim.fault("invalid_key", account=running["name"])
    t0 = time.monotonic()
    _breach(frozen_sim, running["entry"])
    alert = wait_for(lambda: [m for m in webhook.received if "rejected the API key" in m[1].get("message", "")
                              and "EXIT was not placed" in m[1]["message"]], 10)
    assert alert, webhook.received
    assert alert[0][0] - t0 < 2.0
    with db.read() as s:
        exits = list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == running["run_id"],
                                                         OrderIntent.purpose == "exit")))
    assert exits and exits[0].status == "rejected" and "authentication failed" in exits[0].status_reason
    # the key is fixed at the gateway: the risk manager's retry of the rejected exit goes through
    frozen_sim.clear_faults()
    assert wait_for(lambda: [o for o in _exits_at_sim(frozen_sim, running["name"]) if o.get("orderid")], 20)


def _intent(db, iid) -> OrderIntent:
    with db.read() as s:
        return s.get(OrderIntent, iid)
