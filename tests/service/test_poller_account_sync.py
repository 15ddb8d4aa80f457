"""Account sync against the real simulator: funds, positions (closed rows kept), trades without duplicates."""
from __future__ import annotations

from sqlalchemy import func, select

from db.models import BrokerTrade, Funds, Position
from services.account_sync import AccountSync
from services.dispatcher import OrderDispatcher
from tests.service.fixtures_orders import add_intent, octx, order_sim, sim_account  # noqa: F401


def test_sync_when_orders_filled_then_funds_positions_trades_stored_once(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    add_intent(db, acct, symbol="SBIN", qty=10)
    add_intent(db, acct, symbol="INFY", qty=3)
    add_intent(db, acct, symbol="INFY", action="SELL", qty=3)  # closes INFY: a quantity-0 row with realized P&L
    OrderDispatcher(octx).run_once()
    sync = AccountSync(octx)
    assert sync.refresh(acct)
    assert sync.refresh(acct)
    with db.read() as s:
        funds = s.get(Funds, acct)
        pos = {p.symbol: p for p in s.scalars(select(Position).where(Position.account_id == acct))}
        trades = s.scalar(select(func.count()).select_from(BrokerTrade).where(BrokerTrade.account_id == acct))
    assert funds.available_cash > 0 and funds.used_margin > 0
    assert pos["SBIN"].quantity == 10 and pos["SBIN"].average_price > 0
    assert pos["INFY"].quantity == 0
    assert trades == 3


def test_run_once_when_not_due_then_no_broker_calls(db, octx, order_sim):
    acct, _ = sim_account(db, order_sim)
    sync = AccountSync(octx)
    assert sync.run_once() >= 1
    calls = dict(octx.client(acct).calls)
    assert sync.run_once() == 0
    assert octx.client(acct).calls == calls
