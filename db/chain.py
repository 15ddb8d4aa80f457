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
from datetime import datetime

from sqlalchemy import func, select, update

from db import Database
from db.commands import CommandError
from db.models import Instrument, OptionChainSession, utcnow
from db.order_fsm import values
from db.strategies import OPTION_EXCHANGE
from db.vocab import OPEN_CHAIN, ChainStatus


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


# ---- the service's side -----------------------------------------------------------------------------------------
OPEN_STATUSES = values(OPEN_CHAIN)


def open_sessions(s) -> list[OptionChainSession]:
    """Every session the service serves (requested or active), as ORM rows of the caller's session."""
    return s.scalars(select(OptionChainSession).where(OptionChainSession.status.in_(OPEN_STATUSES))).all()


def set_session_status(s, session_id: str, status: str, expect: str | None = None, **fields) -> bool:
    """Set the session's status (and ``fields``), only if it is in ``expect`` when that is given. Returns whether
    the row was changed."""
    q = update(OptionChainSession).where(OptionChainSession.id == session_id)
    if expect:
        q = q.where(OptionChainSession.status == expect)
    return s.execute(q.values(status=status, **fields)).rowcount == 1


def expire_stale(s, cutoff: datetime, message: str) -> list[str]:
    """Open sessions whose last heartbeat is older than ``cutoff`` set 'expired' with ``message``; returns their
    ids."""
    stale = list(s.scalars(select(OptionChainSession.id).where(
        OptionChainSession.status.in_(OPEN_STATUSES), OptionChainSession.last_heartbeat < cutoff)))
    if stale:
        s.execute(update(OptionChainSession).where(OptionChainSession.id.in_(stale))
                  .values(status=ChainStatus.EXPIRED.value, message=message))
    return stale


def open_session_ids(s) -> set[str]:
    """The ids of the sessions still open (requested or active)."""
    return set(s.scalars(select(OptionChainSession.id).where(OptionChainSession.status.in_(OPEN_STATUSES))))
