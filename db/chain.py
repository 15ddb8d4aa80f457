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

from sqlalchemy import update

from db import Database
from db.models import OptionChainSession, utcnow


def open_session(db: Database, underlying: str, exchange: str, expiry: str) -> str:
    sid = uuid.uuid4().hex
    with db.write() as s:
        s.add(OptionChainSession(id=sid, underlying=underlying[:32], exchange=exchange[:16], expiry=expiry[:16],
                                 status="requested", created_at=utcnow(), last_heartbeat=utcnow()))
    return sid


def heartbeat(db: Database, session_id: str) -> bool:
    """Keep the session alive. Returns False when the row no longer exists (open a new one)."""
    now = utcnow()
    with db.write() as s:
        row = s.get(OptionChainSession, session_id)
        if row is None:
            return False
        if row.status == "expired":
            s.execute(update(OptionChainSession).where(OptionChainSession.id == session_id)
                      .values(status="requested", message="", last_heartbeat=now))
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
