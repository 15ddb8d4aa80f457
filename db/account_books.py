"""The account books the service copies from the broker (positions, holdings, broker_trades; funds is one row per
account, read with ``Session.get``): the statements services/account_sync.py runs inside its write transaction."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db.clock import trading_day

from db.models import Account, BrokerTrade, Holding, Position


def positions_of(s: Session, account_id: int) -> list[Position]:
    """The account's stored positions, as ORM objects of this session."""
    return list(s.scalars(select(Position).where(Position.account_id == account_id)))


def delete_holdings(s: Session, account_id: int) -> None:
    """Delete every stored holding of the account (a sync writes the broker's list afresh)."""
    s.execute(delete(Holding).where(Holding.account_id == account_id))


def trade_keys(s: Session, account_id: int) -> set[str]:
    """The trade keys of the account's stored broker_trades (a trade is stored once)."""
    return set(s.scalars(select(BrokerTrade.trade_key).where(BrokerTrade.account_id == account_id)))


def mark_positions_synced(s: Session, account_id: int, read_at: datetime) -> None:
    """Record when the positionbook just stored was read (the time before the call): the stored book holds every
    fill the broker had by then."""
    s.execute(update(Account).where(Account.id == account_id).values(
        positions_synced_at=read_at, positions_day=trading_day().isoformat()))
