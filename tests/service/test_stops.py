"""The stop watcher in-process (real SQLite, the market-data manager fed through its own entry point): a filled
Quick Order entry arms its stop, a tick through the level writes one exit, more ticks write nothing more; the
cancel_stop command cancels a stop that has not acted."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from db.commands import OrderRequest, enqueue_order
from db.intents import new_client_order_id
from db.models import Account, LatestPrice, OrderIntent, Position, QuickStop, utcnow
from db.stop_levels import StopSpec
from db.vocab import StopStatus
from services.control import ControlDeps, ControlHandlers
from services.stops import StopWatcher
from tests.builders import seed_instruments
from tests.service.fixtures_md import account, ctx, md, tick  # noqa: F401 (fixtures)


@pytest.fixture
def entry(db):
    seed_instruments(db)
    acct = account(db)
    with db.write() as s:
        s.merge(LatestPrice(symbol="SBIN", exchange="NSE", ltp=800.0, tick_ts=utcnow()))
    enqueue_order(db, OrderRequest(acct, "SBIN", "NSE", "BUY", 10), new_client_order_id(),
                  stops=StopSpec(sl_value=10))
    with db.write() as s:
        s.execute(update(OrderIntent).values(status="filled", broker_filled_qty=10, broker_avg_price=800.0,
                                             broker_order_id="B1", updated_at=utcnow()))
    return acct


def _sync_book(db, acct, qty):
    with db.write() as s:
        s.add(Position(account_id=acct, symbol="SBIN", exchange="NSE", product="MIS", quantity=qty))
        s.get(Account, acct).positions_synced_at = utcnow() + timedelta(seconds=1)


def _exits(db) -> list[tuple[str, int]]:
    with db.read() as s:
        return [(i.action, i.requested_qty) for i in s.scalars(select(OrderIntent).where(OrderIntent.purpose == "exit"))]


def test_watcher_when_a_tick_crosses_the_stop_loss_then_one_exit_however_many_ticks(db, ctx, md, entry):
    w = StopWatcher(ctx, md)
    w.reload()
    with db.read() as s:
        assert s.scalar(select(QuickStop.status)) == StopStatus.ARMED
    assert ("SBIN", "NSE") in md.held_by("stops")
    tick(md, "SBIN", 795.0, exchange="NSE")
    w.process_hits()
    assert _exits(db) == []
    tick(md, "SBIN", 789.0, exchange="NSE")  # the book has not been read since the fill: latched, not acted on
    w.process_hits()
    assert _exits(db) == []
    with db.read() as s:
        assert s.scalar(select(QuickStop.hit_kind)) == "stop_loss"
    _sync_book(db, entry, 10)
    w.process_hits(force=True)
    for px in (788.0, 785.0):
        tick(md, "SBIN", px, exchange="NSE")
        w.process_hits(force=True)
    w.reload()
    assert _exits(db) == [("SELL", 10)]
    with db.read() as s:
        assert s.scalar(select(QuickStop.status)) == StopStatus.TRIGGERED


def test_cancel_stop_when_armed_then_cancelled_and_a_second_cancel_refused(db, ctx, md, entry):
    StopWatcher(ctx, md).reload()
    handlers = ControlHandlers(ControlDeps(ctx=ctx, account_sync=None, risk=lambda: None, market_data=lambda: None,
                                           instruments_loaded=lambda: True, load_instruments_soon=lambda: None))
    with db.read() as s:
        stop_id = s.scalar(select(QuickStop.id))
    assert "cancelled" in handlers.handle("cancel_stop", {"stop_id": stop_id})
    with pytest.raises(RuntimeError, match="cannot be cancelled now"):
        handlers.handle("cancel_stop", {"stop_id": stop_id})
    with db.read() as s:
        st = s.get(QuickStop, stop_id)
        assert st.status == StopStatus.CANCELLED and st.status_reason.startswith("cancelled by the trader")
        assert s.scalar(select(func.count()).select_from(OrderIntent).where(OrderIntent.purpose == "exit")) == 0
