"""Simulator faults against the REAL service process (``python -m services``), for the gaps the component tests
in tests/service leave (see docs/reliability.md for the full fault -> test table):

* invalid key mid-session: REST 403 -> intent rejected with a clear reason, account marked invalid_key, the next
  order for it denied; the WebSocket feed fails over to the backup account; the other account keeps trading;
* HTTP 500 / 429 / latency on the READ path (orderbook, tradebook, funds, quotes) while orders are in flight:
  reads back off and retry, every intent still settles, each placed exactly once;
* zero prices on the live feed and on REST quotes: never stored, never trigger a max-loss exit;
* dropped and muted WebSocket while a run is live: the feed reconnects and prices keep flowing.
"""
from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from db.commands import OrderRequest, enqueue_order
from db.intents import new_client_order_id
from db.models import Account, LatestPrice, OrderIntent, ServiceHeartbeat
from simulator.testing import SimProcess
from tests.reliability.crash_harness import NON_FINAL, service_env, start_service, stop_service, wait_for
from tests.service.fixtures_orders import add_intent, make_strategy_run, placed_at_sim, sim_account


@pytest.fixture(scope="module")
def live_sim():
    with SimProcess(seed=31) as sim:  # random walk on: the feed ticks
        yield sim


@pytest.fixture
def service(db, live_sim, tmp_path):
    """Start the service for a test's accounts (call it after adding them); SIGTERM at the end."""
    procs = []

    def start(**env):
        live_sim.clear_faults()
        p = start_service(db.path, tmp_path / "svc.log", service_env(**env))
        procs.append(p)
        assert wait_for(lambda: _beat(db, "dispatcher"), 30), (tmp_path / "svc.out").read_text()[-2000:]
        return p

    yield start
    live_sim.clear_faults()
    for p in procs:
        assert stop_service(p) == 0


def _beat(db, component: str):
    with db.read() as s:
        return s.get(ServiceHeartbeat, component)


def _md(db) -> dict:
    hb = _beat(db, "market_data")
    return json.loads(hb.details_json) if hb else {}


def _row(db, iid: int) -> OrderIntent:
    with db.read() as s:
        return s.get(OrderIntent, iid)


def _order(db, acct: int, symbol="SBIN", qty=1) -> int:
    iid, _ = enqueue_order(db, OrderRequest(acct, symbol, "NSE", "BUY", qty), new_client_order_id())
    return iid


def _seed_equities(db):
    from tests.builders import seed_instruments
    seed_instruments(db)  # SBIN / RELIANCE in the symbol master for enqueue_order's validation


@pytest.mark.timeout(90)
def test_invalid_key_mid_session_when_service_runs_then_rejected_marked_denied_and_feed_fails_over(
        db, live_sim, service, tmp_path):
    _seed_equities(db)
    pri, pri_name = sim_account(db, live_sim, "pri", is_primary=True)
    bak, bak_name = sim_account(db, live_sim, "bak", backup_order=1)
    service(APP__SERVICE__WS_FAILOVER_COOLDOWN_S="600")
    assert wait_for(lambda: _md(db).get("account") == pri_name and _md(db).get("connected"), 20), _md(db)
    first = _order(db, pri)
    assert wait_for(lambda: _row(db, first).status == "filled", 10)

    live_sim.fault("invalid_key", account=pri_name)  # the key is revoked mid-session
    second = _order(db, pri)
    assert wait_for(lambda: _row(db, second).status == "rejected", 10)
    assert "authentication failed" in _row(db, second).status_reason.lower()
    with db.read() as s:
        assert s.get(Account, pri).status == "invalid_key"
    third = _order(db, pri)
    assert wait_for(lambda: _row(db, third).status == "denied", 10)
    assert "invalid API key" in _row(db, third).status_reason
    # The feed moves to the backup (WS auth error fails over at once, or the next stall/reconnect does).
    live_sim.fault("drop_ws")
    assert wait_for(lambda: _md(db).get("account") == bak_name and _md(db).get("connected"), 30), _md(db)
    other = _order(db, bak)
    assert wait_for(lambda: _row(db, other).status == "filled", 10)
    # Exactly one broker order per accepted intent; nothing of the revoked account after the revocation.
    assert len(placed_at_sim(live_sim, pri_name)) == 1 and len(placed_at_sim(live_sim, bak_name)) == 1


@pytest.mark.timeout(120)
def test_read_path_500_429_latency_when_orders_in_flight_then_all_settle_each_placed_once(
        db, live_sim, service):
    accts = [sim_account(db, live_sim, "rd", is_primary=(n == 0)) for n in range(3)]
    service()
    for _acct, name in accts:
        for ep in ("orderbook", "tradebook", "funds", "positionbook", "orderstatus"):
            live_sim.fault("http_500", endpoints=[ep], account=name, count=4)
            live_sim.fault("http_429", endpoints=[ep], account=name, count=3)
        live_sim.fault("latency", endpoints=["orderbook"], account=name, ms=1500, count=2)  # > read timeout
    ids = [add_intent(db, acct, symbol=sym, qty=q, tag="ReadFaults")
           for acct, _ in accts for sym, q in (("SBIN", 1), ("INFY", 2), ("RELIANCE", 3))]
    ok = wait_for(lambda: all(_row(db, i).status == "filled" for i in ids), 60, 0.2)
    assert ok, {i: (_row(db, i).status, _row(db, i).status_reason) for i in ids}
    for acct, name in accts:
        book = placed_at_sim(live_sim, name)
        assert len(book) == 3
        assert {o["orderid"] for o in book} == {_row(db, i).broker_order_id for i in ids
                                                 if _row(db, i).account_id == acct}
    with db.read() as s:
        assert not s.scalars(select(OrderIntent).where(OrderIntent.status.in_(NON_FINAL))).all()


@pytest.mark.timeout(120)
def test_zero_prices_and_ws_drop_mute_when_run_live_then_no_zero_stored_no_exit_and_feed_recovers(
        db, live_sim, service):
    acct, name = sim_account(db, live_sim, "zp", is_primary=True)
    service(APP__SERVICE__WS_STALL_SECONDS="1.5", APP__SERVICE__RISK_SWEEP_S="0.3")
    run_id, ids = make_strategy_run(db, acct, [dict(symbol="SBIN", action="BUY", qty=1)])
    assert wait_for(lambda: _row(db, ids[0]).status == "filled", 10)
    entry = _row(db, ids[0]).broker_avg_price
    from db.models import StrategyRun
    with db.write() as s:  # a zero price would mean a loss of ~entry: far above this limit
        s.get(StrategyRun, run_id).max_loss = entry * 0.5
    assert wait_for(lambda: _price(db, "SBIN"), 15)

    seen: list[float] = []
    live_sim.fault("zero_price", symbol="SBIN", exchange="NSE", count=40)  # WS ticks and REST quotes
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        p = _price(db, "SBIN")
        seen.append(p.ltp if p else None)
        time.sleep(0.05)
    assert seen and all(v and v > 0 for v in seen), "a zero price was stored"
    assert _md(db).get("zero_ticks", 0) >= 1  # the feed saw them and dropped them
    with db.read() as s:
        exits = s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id,
                                                    OrderIntent.purpose == "exit")).all()
        assert exits == [] and s.get(StrategyRun, run_id).status == "active"

    reconnects = _md(db).get("reconnects", 0)
    live_sim.fault("drop_ws")
    live_sim.fault("mute_ws", account=name, duration_s=3)
    assert wait_for(lambda: _md(db).get("reconnects", 0) >= reconnects + 2 and _md(db).get("connected"), 30), \
        _md(db)
    before = _price(db, "SBIN").tick_ts
    assert wait_for(lambda: _price(db, "SBIN").tick_ts > before, 15)  # prices flow again after the faults
    assert len(placed_at_sim(live_sim, name)) == 1


def _price(db, symbol: str, exchange: str = "NSE") -> LatestPrice | None:
    with db.read() as s:
        return s.get(LatestPrice, (symbol, exchange))


@pytest.mark.timeout(60)
def test_undecryptable_key_when_service_starts_then_it_still_serves_the_other_accounts(db, live_sim, service):
    """One account's stored key can no longer be decrypted (e.g. Fernet key rotated): the service must not die in
    its start-up reconciliation; that account's orders are denied, the others are placed."""
    good, _ = sim_account(db, live_sim, "ok", is_primary=True)
    bad, _ = sim_account(db, live_sim, "garbled", backup_order=1)
    with db.write() as s:
        s.get(Account, bad).api_key_encrypted = b"not-a-fernet-token"
    proc = service()
    i_good, i_bad = add_intent(db, good), add_intent(db, bad)
    assert wait_for(lambda: _row(db, i_good).status == "filled" and _row(db, i_bad).status == "denied", 15)
    assert "cannot be used" in _row(db, i_bad).status_reason
    assert proc.poll() is None
