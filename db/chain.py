"""Option-chain sessions: the UI asks the service to stream one chain and keeps the request alive.

Contract with the service:
- the UI writes a row with status 'requested' (``open_session``) and refreshes ``last_heartbeat`` while the page
  is open (``heartbeat``);
- ``underlying`` is the instrument name (e.g. NIFTY), ``exchange`` is the UNDERLYING's exchange (NSE_INDEX,
  BSE_INDEX, NSE, BSE: same convention as ``strategies.exchange``; the option exchange is
  ``db.strategies.OPTION_EXCHANGE[exchange]``), ``expiry`` is 'DD-MMM-YY' as in ``instruments.expiry``;
- the service fills ``symbols_json`` (list of {symbol, exchange}), sets status 'active' (or 'error' + message),
  subscribes depth, and sets 'expired' after ``service.chain_ttl_s`` without heartbeat.
A heartbeat on an expired row puts it back to 'requested' so the service picks it up again.
"""
from __future__ import annotations

import json
import uuid

from sqlalchemy import func, select, update

from db import Database
from db.commands import CommandError
from db.models import Instrument, OptionChainSession, utcnow
from db.strategies import OPTION_EXCHANGE
from db.vocab import ChainStatus


def open_session(db: Database, underlying: str, exchange: str, expiry: str) -> str:
    """Request a live chain. Raises CommandError (nothing written) unless the symbol master lists options of
    ``underlying`` for ``expiry`` on the option exchange that ``exchange`` maps to."""
    underlying, exchange, expiry = (str(v or "").strip().upper() for v in (underlying, exchange, expiry))
    if exchange not in OPTION_EXCHANGE:
        raise CommandError("Underlying exchange must be NSE_INDEX, BSE_INDEX, NSE or BSE")
    if not underlying or len(underlying) > 32 or not expiry or len(expiry) > 16:
        raise CommandError("Choose an underlying and an expiry")
    sid = uuid.uuid4().hex
    with db.write() as s:
        listed = s.scalar(select(func.count()).select_from(Instrument).where(
            Instrument.name == underlying, Instrument.exchange == OPTION_EXCHANGE[exchange],
            Instrument.expiry == expiry, Instrument.instrumenttype.in_(("CE", "PE"))))
        if not listed:
            raise CommandError(f"No {underlying} options expiring {expiry} in the symbol master")
        s.add(OptionChainSession(id=sid, underlying=underlying, exchange=exchange, expiry=expiry,
                                 status=ChainStatus.REQUESTED.value, created_at=utcnow(), last_heartbeat=utcnow()))
    return sid


def heartbeat(db: Database, session_id: str) -> bool:
    """Keep the session alive. Returns False when the row no longer exists (open a new one)."""
    now = utcnow()
    with db.write() as s:
        row = s.get(OptionChainSession, session_id)
        if row is None:
            return False
        if row.status == ChainStatus.EXPIRED:
            s.execute(update(OptionChainSession).where(OptionChainSession.id == session_id)
                      .values(status=ChainStatus.REQUESTED.value, message="", last_heartbeat=now))
        else:
            s.execute(update(OptionChainSession).where(OptionChainSession.id == session_id)
                      .values(last_heartbeat=now))
    return True


def get_session(db: Database, session_id: str) -> dict | None:
    with db.read() as s:
        row = s.get(OptionChainSession, session_id)
        if row is None:
            return None
        try:
            symbols = json.loads(row.symbols_json or "[]")
        except ValueError:
            symbols = []
        return dict(id=row.id, underlying=row.underlying, exchange=row.exchange, expiry=row.expiry,
                    status=row.status, message=row.message, symbols=symbols, created_at=row.created_at,
                    last_heartbeat=row.last_heartbeat)
