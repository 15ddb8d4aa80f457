"""A Quick Order written by the app is sent at once, not at the service's next poll: the real service process and
the simulator, with the dispatcher's poll set to 30 s so only the wake datagram (db/wake.py) can explain a quick
POST. Without a listening service the nudge is a no-op."""
from __future__ import annotations

import time

from db.commands import OrderRequest, enqueue_order
from db.intents import new_client_order_id
from db.wake import notify
from simulator.testing import SimProcess
from tests.builders import seed_instruments
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_orders import sim_account


def test_order_enqueued_by_the_app_when_the_poll_is_30s_then_placed_within_seconds_by_the_wake(db, tmp_path):
    assert notify(db.path) is False  # nobody listens yet: nothing happens, nothing raises
    with SimProcess(seed=59, args=["--frozen"]) as sim:
        seed_instruments(db)
        acct, name = sim_account(db, sim, "wake", is_primary=True)
        proc = start_service(db.path, tmp_path / "svc.log", service_env(APP__SERVICE__DISPATCH_POLL_S="30"))
        try:
            assert wait_for(lambda: "service started" in (tmp_path / "svc.out").read_text(), 60)
            time.sleep(0.5)  # the dispatcher's first pass is behind it: from now on it sleeps 30 s between polls
            t0 = time.monotonic()
            enqueue_order(db, OrderRequest(account_id=acct, symbol="SBIN", exchange="NSE", action="BUY",
                                           quantity=1, product="MIS"), new_client_order_id())
            assert wait_for(lambda: any(o.get("account") == name and o.get("orderid") for o in sim.orders()), 10)
            assert time.monotonic() - t0 < 10  # well inside the 30 s poll
        finally:
            assert stop_service(proc) == 0


def test_control_command_written_by_the_app_when_the_poll_is_30s_then_carried_out_at_once_by_the_wake(db, tmp_path):
    """A Flatten (any control command) pressed in the app starts at once: with the control poll at 30 s, a
    command written with the wake is done within seconds, while one written without it waits for the poll."""
    from db.accounts import add_account
    from db.commands import enqueue_control, enqueue_control_in
    from db.models import ControlCommand
    from db.vocab import CommandStatus

    def status(cid):
        with db.read() as s:
            return s.get(ControlCommand, cid).status
    acct = add_account(db, "ctl", "http://127.0.0.1:9", "ws://127.0.0.1:9", "k" * 32, is_primary=True)
    proc = start_service(db.path, tmp_path / "svc.log", service_env(APP__SERVICE__CONTROL_POLL_S="30"))
    try:
        assert wait_for(lambda: "service started" in (tmp_path / "svc.out").read_text(), 60)
        time.sleep(0.5)  # the control loop's first pass is behind it: from now on it waits 30 s unless woken
        with db.write() as s:  # written as a tool without the wake would
            quiet = enqueue_control_in(s, "rearm_account", {"account_id": acct})
        time.sleep(2.0)
        assert status(quiet) == CommandStatus.QUEUED  # only the poll would pick it up
        woken = enqueue_control(db, "rearm_account", {"account_id": acct})
        assert wait_for(lambda: status(woken) != CommandStatus.QUEUED, 10), "the wake did not run the command"
        assert status(quiet) != CommandStatus.QUEUED  # the same pass carried out the one written before it
    finally:
        assert stop_service(proc) == 0
