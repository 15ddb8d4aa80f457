"""Seed builders for tests (in the style of freqtrade's create_mock_trades)."""
from __future__ import annotations

from datetime import datetime, timedelta

from db.accounts import add_account
from db.models import Instrument, LatestPrice, utcnow

KEY_A = "a" * 24 + "0123456789abcdef0123456789abcdef0123456789ab"  # 64 chars, looks like an OpenAlgo key


def next_weekday(d: datetime, weekday: int) -> datetime:
    return d + timedelta(days=(weekday - d.weekday()) % 7 or 7)


def expiry_str(d: datetime) -> str:
    return d.strftime("%d-%b-%y").upper()


def symbol_date(d: datetime) -> str:
    return d.strftime("%d%b%y").upper()


def seed_instruments(db, spot: float = 24000.0, name: str = "NIFTY", step: int = 50, lot: int = 65,
                     freeze: int = 1800, strikes_each_side: int = 30) -> str:
    """NIFTY index + one weekly expiry of CE/PE + a future, and two equities. Returns the expiry 'DD-MMM-YY'."""
    exp = next_weekday(datetime.now(), 1)  # Tuesday
    ex, sd = expiry_str(exp), symbol_date(exp)
    atm = round(spot / step) * step
    rows = [Instrument(symbol=name, exchange="NSE_INDEX", name=name, instrumenttype="INDEX", lotsize=1),
            Instrument(symbol=f"{name}{sd}FUT", exchange="NFO", name=name, expiry=ex, instrumenttype="FUT",
                       lotsize=lot, freeze_qty=freeze),
            Instrument(symbol="RELIANCE", exchange="NSE", name="RELIANCE", instrumenttype="EQ", lotsize=1),
            Instrument(symbol="SBIN", exchange="NSE", name="SBIN", instrumenttype="EQ", lotsize=1)]
    for k in range(-strikes_each_side, strikes_each_side + 1):
        strike = atm + k * step
        for typ in ("CE", "PE"):
            rows.append(Instrument(symbol=f"{name}{sd}{strike}{typ}", exchange="NFO", name=name, expiry=ex,
                                   strike=float(strike), instrumenttype=typ, lotsize=lot, freeze_qty=freeze))
    with db.write() as s:
        s.add_all(rows)
        s.merge(LatestPrice(symbol=name, exchange="NSE_INDEX", ltp=spot, tick_ts=utcnow()))
    return ex


def make_account(db, name: str = "acct1", key: str = KEY_A, **kw) -> int:
    return add_account(db, name, "http://127.0.0.1:5000", "ws://127.0.0.1:8765", key, **kw)


def fresh_row(db, model, pk):
    """One row as it is in the file now (a fresh read: the service process writes it)."""
    with db.read() as s:
        return s.get(model, pk)


def stored_qty(db, account_id: int, symbol: str = "SBIN") -> int | None:
    """The quantity account sync stored for the account's position in ``symbol`` (None: no row)."""
    from sqlalchemy import select

    from db.models import Position
    with db.read() as s:
        p = s.scalar(select(Position).where(Position.account_id == account_id, Position.symbol == symbol))
        return None if p is None else p.quantity
