"""The symbol master (instruments table) as the service writes and reads it: the upsert of a download, the
removal of contracts a full download no longer lists, the option contracts of one expiry. The UI's reads are in
db/repo.py; order validation and leg resolution read it in db/commands.py and db/strategies.py."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.sqlite import insert

from db.models import Instrument, Strategy

COLUMNS = ("name", "expiry", "strike", "lotsize", "instrumenttype", "tick_size", "freeze_qty", "updated_at")
BATCH = 5000


def upsert_instruments(s, rows: list[dict]) -> None:
    """Insert or update ``rows`` (full instrument rows) by (symbol, exchange), BATCH rows per statement; a known
    freeze_qty is never replaced by NULL. Returns nothing."""
    stmt = insert(Instrument)
    values = {c: getattr(stmt.excluded, c) for c in COLUMNS}
    values["freeze_qty"] = func.coalesce(stmt.excluded.freeze_qty, Instrument.freeze_qty)  # keep a known one
    stmt = stmt.on_conflict_do_update(index_elements=["symbol", "exchange"], set_=values)
    for i in range(0, len(rows), BATCH):
        s.execute(stmt, rows[i:i + BATCH])


def delete_not_updated_since(s, exchange: str, since: datetime) -> None:
    """Delete the exchange's instruments last written before ``since`` (what a full download did not list).
    Returns nothing."""
    s.execute(delete(Instrument).where(Instrument.exchange == exchange, Instrument.updated_at < since))


def strategy_underlyings(s) -> set[str]:
    """The underlying name of every saved strategy (the instrument search fallback asks for each)."""
    return set(s.scalars(select(Strategy.underlying)))


def option_contracts(s, name: str, exchange: str, expiry: str) -> list:
    """(symbol, exchange, strike, instrumenttype) rows of the CE and PE contracts of ``name`` on the option
    ``exchange`` expiring ``expiry`` (the symbol-master form, 'DD-MMM-YY')."""
    return s.execute(select(Instrument.symbol, Instrument.exchange, Instrument.strike, Instrument.instrumenttype)
                     .where(Instrument.name == name, Instrument.exchange == exchange, Instrument.expiry == expiry,
                            Instrument.instrumenttype.in_(("CE", "PE")))).all()
