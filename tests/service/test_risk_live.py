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


@pytest.mark.timeout(30)
def test_late_breaching_tick_when_the_market_recovered_then_the_sweeps_rest_quote_decides_no_exit(db, fsim):
    """A tick dated 30 s ago by the feed breaches the limit, but the market is back at the entry: the tick does not
    exit on its own, and the sweep's fresh REST quote (it refreshes a price that old) keeps the run active."""
    import datetime as dt
    import json
    import time

    from db.models import Execution

    acct = account(db, "live3", fsim.rest_url, fsim.ws_url, fsim.create_account("live3"), is_primary=True)
    fsim.set_price("INFY", "NSE", 1500.0)
    run_id, _ = make_run(db, acct, [dict(symbol="INFY", exchange="NSE", action="BUY", qty=10, entry=1500.0)],
                         max_loss=500)
    with db.write() as s:  # entered two minutes ago: the late tick is newer than the fill
        s.scalar(select(Execution).where(Execution.run_id == run_id)).updated_at -= dt.timedelta(minutes=2)
    ctx = make_ctx(db)
    md = MarketDataManager(ctx)  # not started: the test feeds the frames
    risk = RiskManager(ctx, md, lambda: None)
    risk.reload()
    md.on_message(json.dumps({"type": "market_data", "symbol": "INFY", "exchange": "NSE", "mode": 1, "data": {
        "ltp": 1440.0, "timestamp": int((time.time() - 30) * 1000)}}))  # -600, 30 s old
    assert not _exits(db, run_id)
    risk.sweep()
    assert risk.stats["rest_quotes"] == 1 and md.last_price("INFY", "NSE")[0] == 1500.0
    assert not _exits(db, run_id) and risk.run_state(run_id).pnl == 0.0
    md.on_message(json.dumps({"type": "market_data", "symbol": "INFY", "exchange": "NSE", "mode": 1, "data": {
        "ltp": 1440.0, "timestamp": int(time.time() * 1000)}}))  # the same breach, live: exits at once
    assert [i.action for i in _exits(db, run_id)] == ["SELL"]
