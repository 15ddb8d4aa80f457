"""Option-chain sessions: ATM +- N strikes subscribed in depth mode; expiry releases only the chain's hold."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

from sqlalchemy import select

from db.models import OptionChainSession, utcnow
from services.option_chain import OptionChainSessions, normalize_expiry, pick_strikes
from services.positions import PositionMonitor
from tests.builders import seed_instruments
from tests.service.fixtures_md import account, add_position, ctx, make_ctx, md, tick  # noqa: F401


def _session(db, expiry, underlying="NIFTY", exchange="NSE_INDEX") -> str:
    sid = uuid.uuid4().hex
    with db.write() as s:
        s.add(OptionChainSession(id=sid, underlying=underlying, exchange=exchange, expiry=expiry))
    return sid


def _row(db, sid):
    with db.read() as s:
        return s.get(OptionChainSession, sid)


def test_pick_strikes_centres_on_the_nearest_listed_strike():
    assert pick_strikes([100, 150, 200, 250, 300, 350], 262, 1) == [200, 250, 300]
    assert pick_strikes([100, 150, 200], 90, 2) == [100, 150, 200]
    assert normalize_expiry("30dec25") == "30-DEC-25" and normalize_expiry("30-DEC-25") == "30-DEC-25"


def test_session_subscribes_atm_strikes_in_depth_mode_plus_underlying(db, md):
    expiry = seed_instruments(db, spot=24000.0)
    chains = OptionChainSessions(make_ctx(db, chain_strikes=2), md)
    tick(md, "NIFTY", 24060.0, "NSE_INDEX")  # ATM 24050
    sid = _session(db, expiry)
    assert chains.process() == 1

    row = _row(db, sid)
    symbols = json.loads(row.symbols_json)
    strikes = sorted({int(d["symbol"][-7:-2]) for d in symbols})
    assert row.status == "active" and strikes == [23950, 24000, 24050, 24100, 24150]
    assert len(symbols) == 10 and {d["exchange"] for d in symbols} == {"NFO"}
    want = {(d["symbol"], "NFO"): 3 for d in symbols} | {("NIFTY", "NSE_INDEX"): 2}
    assert md.desired() == want
    assert chains.process() == 0  # already served


def test_expired_session_releases_its_symbols_but_a_position_symbol_stays(db, md):
    expiry = seed_instruments(db, spot=24000.0)
    ctx = make_ctx(db, chain_strikes=1, chain_ttl_s=30)
    chains, pm = OptionChainSessions(ctx, md), PositionMonitor(ctx, md)
    tick(md, "NIFTY", 24000.0, "NSE_INDEX")
    sid = _session(db, expiry)
    chains.process()
    held = json.loads(_row(db, sid).symbols_json)[0]["symbol"]
    add_position(db, account(db), held, -65, 100.0)
    pm.refresh_subscriptions()
    assert md.desired()[(held, "NFO")] == 3

    assert chains.cleanup() == 0  # heartbeat is fresh
    with db.write() as s:
        s.get(OptionChainSession, sid).last_heartbeat = utcnow() - timedelta(seconds=31)
    assert chains.cleanup() == 1
    assert _row(db, sid).status == "expired"
    assert md.desired() == {(held, "NFO"): 2}


def test_session_waits_for_a_price_and_errors_for_an_unknown_expiry(db, md):
    expiry = seed_instruments(db, spot=24000.0)
    chains = OptionChainSessions(make_ctx(db), md)
    sid = _session(db, expiry)
    assert chains.process() == 0  # no price, no feed account: stays requested
    assert _row(db, sid).status == "requested" and "waiting" in _row(db, sid).message
    bad = _session(db, "01-JAN-20")
    tick(md, "NIFTY", 24000.0, "NSE_INDEX")
    chains.process()
    assert _row(db, bad).status == "error" and _row(db, sid).status == "active"


def test_active_sessions_are_resubscribed_after_a_restart(db, md):
    expiry = seed_instruments(db)
    ctx = make_ctx(db, chain_strikes=1)
    tick(md, "NIFTY", 24000.0, "NSE_INDEX")
    sid = _session(db, expiry)
    OptionChainSessions(ctx, md).process()
    symbols = json.loads(_row(db, sid).symbols_json)
    for d in symbols:
        md.unsubscribe(f"chain:{sid}", [(d["symbol"], "NFO")], 3)
    OptionChainSessions(ctx, md).process()  # a new service process
    assert all(md.desired().get((d["symbol"], "NFO")) == 3 for d in symbols)
    with db.read() as s:
        assert s.scalar(select(OptionChainSession.status).where(OptionChainSession.id == sid)) == "active"
