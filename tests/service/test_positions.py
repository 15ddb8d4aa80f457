"""Position monitor: subscribes only open positions; flush writes prices, positions and snapshots in one go."""
from __future__ import annotations

from sqlalchemy import event, select

from db.models import Execution, LatestPrice, PnlSnapshot, Position, StrategyRun
from services.positions import PositionMonitor
from tests.service.fixtures_md import account, add_position, ctx, make_run, md, tick  # noqa: F401

CE, PE = "NIFTY30DEC2526000CE", "NIFTY30DEC2526000PE"


def test_subscribes_only_open_positions_and_drops_closed_ones(db, ctx, md):
    acct = account(db)
    add_position(db, acct, "SBIN", 10, 800.0, exchange="NSE")
    add_position(db, acct, "INFY", 0, 1500.0, exchange="NSE", realized=120.0)  # closed
    run_id, (ex_id,) = make_run(db, acct, [dict(symbol=CE, action="SELL", qty=65, entry=100.0)])
    make_run(db, acct, [dict(symbol=PE, action="SELL", qty=65, entry=90.0, status="exited", exit_price=80.0)])
    pm = PositionMonitor(ctx, md)
    assert pm.refresh_subscriptions() == {("SBIN", "NSE"), (CE, "NFO")}
    assert md.desired() == {("SBIN", "NSE"): 2, (CE, "NFO"): 2, ("NIFTY", "NSE_INDEX"): 1}

    with db.write() as s:
        s.get(Execution, ex_id).status = "exited"
        s.scalar(select(Position).where(Position.symbol == "SBIN")).quantity = 0
    pm.refresh_subscriptions()
    assert md.desired() == {("NIFTY", "NSE_INDEX"): 1}  # the strategy's underlying (for Execute), nothing else


def test_flush_writes_prices_and_positions_then_snapshots_of_the_marked_book(db, ctx, md):
    acct = account(db)
    add_position(db, acct, "SBIN", 10, 800.0, exchange="NSE", realized=50.0)
    add_position(db, acct, CE, -65, 100.0)
    run_id, _ = make_run(db, acct, [dict(symbol=CE, action="SELL", qty=65, entry=100.0),
                                    dict(symbol=PE, action="SELL", qty=65, entry=90.0, status="exited",
                                         exit_price=80.0)], trailing_sl=500)
    with db.write() as s:
        run = s.get(StrategyRun, run_id)
        run.tsl_peak, run.tsl_stop = 700.0, 200.0
    pm = PositionMonitor(ctx, md)
    tick(md, "SBIN", 810.0, "NSE", volume=1000)
    tick(md, CE, 96.0, depth={"buy": [{"price": 95.9, "quantity": 65}], "sell": [{"price": 96.1, "quantity": 65}]})
    tick(md, "NIFTY", 26010.0, "NSE_INDEX")  # not a position (an underlying): still written to latest_prices

    commits = []

    def count(conn):
        commits.append(1)
    event.listen(db.engine, "commit", count)
    try:
        assert pm.flush() == 3
    finally:
        event.remove(db.engine, "commit", count)
    # the marks in one transaction, the snapshots (computed on a read after it) in a second: the run P&L is
    # never computed under the writer lock
    assert len(commits) == 2

    with db.read() as s:
        prices = {p.symbol: p for p in s.scalars(select(LatestPrice))}
        pos = {p.symbol: p for p in s.scalars(select(Position))}
        snaps = list(s.scalars(select(PnlSnapshot).order_by(PnlSnapshot.id)))
    assert set(prices) == {"SBIN", CE, "NIFTY"}
    assert (prices[CE].bid, prices[CE].ask) == (95.9, 96.1) and '"buy"' in prices[CE].depth_json
    assert prices["SBIN"].volume == 1000 and prices["SBIN"].ltp == 810.0
    assert (pos["SBIN"].ltp, pos["SBIN"].unrealized_pnl, pos["SBIN"].pnl) == (810.0, 100.0, 150.0)
    assert (pos[CE].unrealized_pnl, pos[CE].pnl) == (260.0, 260.0)  # short 65 from 100 to 96
    acct_snap = [x for x in snaps if x.run_id is None]
    run_snap = [x for x in snaps if x.run_id == run_id]
    assert [(x.realized, x.unrealized, x.total) for x in acct_snap] == [(50.0, 360.0, 410.0)]
    assert [(x.realized, x.unrealized, x.total, x.tsl_peak, x.tsl_stop) for x in run_snap] == \
        [(650.0, 260.0, 910.0, 700.0, 200.0)]


def test_flush_without_changes_writes_nothing_until_a_snapshot_is_due(db, md):
    from tests.service.fixtures_md import make_ctx
    pm = PositionMonitor(make_ctx(db, pnl_snapshot_s=3600), md)
    add_position(db, account(db), "SBIN", 10, 800.0, exchange="NSE")
    pm.flush()  # first call: snapshot due
    tick(md, "SBIN", 0, "NSE")  # zero-value: not a price
    assert pm.flush() == 0
    with db.read() as s:
        assert s.scalar(select(LatestPrice)) is None
        assert len(list(s.scalars(select(PnlSnapshot)))) == 1
