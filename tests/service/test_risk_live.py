"""Risk manager against the simulator: a WebSocket tick breaches the limit; a stale price is fetched by REST."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import OrderIntent, RiskEvent
from services.market_data import MarketDataManager
from services.risk import RiskManager
from simulator.testing import SimProcess
from tests.service.fixtures_md import account, make_ctx, make_run, wait_for


@pytest.fixture(scope="module")
def fsim():
    with SimProcess(seed=9, args=["--frozen"]) as s:
        yield s


def _exits(db, run_id):
    with db.read() as s:
        return list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id,
                                                        OrderIntent.purpose == "exit")))


@pytest.mark.timeout(30)
def test_websocket_tick_breaching_max_loss_writes_exit_before_any_flush(db, fsim):
    acct = account(db, "live1", fsim.rest_url, fsim.ws_url, fsim.create_account("live1"), is_primary=True)
    fsim.set_price("SBIN", "NSE", 1000.0)
    run_id, _ = make_run(db, acct, [dict(symbol="SBIN", exchange="NSE", action="BUY", qty=10, entry=1000.0)],
                         max_loss=500)
    ctx = make_ctx(db)
    md = MarketDataManager(ctx)
    wakes = []
    risk = RiskManager(ctx, md, lambda: wakes.append(1))
    md.start()
    try:
        risk.reload()
        wait_for(lambda: md.last_price("SBIN", "NSE"))
        fsim.set_price("SBIN", "NSE", 949.0)  # -510
        wait_for(lambda: _exits(db, run_id))
        [intent] = _exits(db, run_id)
        assert (intent.action, intent.requested_qty, intent.symbol) == ("SELL", 10, "SBIN") and wakes == [1]
    finally:
        md.stop()


@pytest.mark.timeout(30)
def test_sweep_fetches_a_stale_price_by_rest_and_exits(db, fsim):
    acct = account(db, "live2", fsim.rest_url, fsim.ws_url, fsim.create_account("live2"), is_primary=True)
    fsim.set_price("RELIANCE", "NSE", 1400.0)
    run_id, _ = make_run(db, acct, [dict(symbol="RELIANCE", exchange="NSE", action="SELL", qty=5, entry=1300.0)],
                         max_loss=400)
    ctx = make_ctx(db)
    md = MarketDataManager(ctx)  # never started: no WebSocket ticks at all
    risk = RiskManager(ctx, md, lambda: None)
    risk.reload()
    risk.sweep()  # -500 via /multiquotes
    assert [i.action for i in _exits(db, run_id)] == ["BUY"]
    assert risk.stats["rest_quotes"] == 1
    with db.read() as s:
        assert s.scalar(select(RiskEvent.value).where(RiskEvent.run_id == run_id)) == -500.0
