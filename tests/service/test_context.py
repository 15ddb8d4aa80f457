"""ServiceContext's per-account broker clients: dropping one never breaks a call already running on it."""
from __future__ import annotations

import concurrent.futures as cf
import time

from services.context import ServiceContext
from tests.service.fixtures_orders import fast_settings, order_sim, sim_account, wait_for  # noqa: F401


def test_drop_client_when_a_sync_is_mid_way_then_its_calls_finish_and_the_old_client_closes_after_the_grace(
        db, order_sim):
    """Found in a CI run: the UI's 'reload accounts' closed an account's client while the account sync was between
    its funds and positionbook calls on it: 'RuntimeError: Cannot send a request, as the client has been closed',
    an ERROR on the Service Health page, a failed sync (and, for an order, an 'unknown' that was never sent)."""
    ctx = ServiceContext(db, fast_settings(broker__connect_timeout_s=0.3, broker__read_timeout_s=0.8,
                                           broker__read_retries=0, broker__backoff_max_s=0))
    try:
        assert ctx.retire_after_s() == 0.3 + 0.8  # one attempt, no backoff: no call on it can outlive this
        acct, _ = sim_account(db, order_sim)
        old = ctx.client(acct)
        order_sim.fault("latency", ms=400, endpoints=["funds"])
        with cf.ThreadPoolExecutor(1) as ex:
            sync = ex.submit(lambda: (old.funds(), old.positionbook()))  # what account_sync does
            time.sleep(0.15)  # funds is at the simulator
            ctx.drop_client(acct)
            dropped_at = time.monotonic()
            funds, positions = sync.result(5)
        assert "availablecash" in funds and positions == []
        new = ctx.client(acct)
        assert new is not old and not old.http.is_closed and new.funds()
        wait_for(lambda: time.monotonic() - dropped_at > ctx.retire_after_s(), 5)
        assert ctx.client(acct) is new and old.http.is_closed and not new.http.is_closed  # closed once due
    finally:
        order_sim.clear_faults()
        ctx.close()
    assert new.http.is_closed
