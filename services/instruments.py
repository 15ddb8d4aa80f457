"""Symbol master cache: ``instruments`` table from OpenAlgo's GET /instruments, one exchange at a time.

A full download replaces that exchange's rows (expired contracts disappear). If /instruments fails for an
exchange, the fallback asks /search for each known underlying (NIFTY, BANKNIFTY, SENSEX, ..., and every
strategy's underlying) and upserts what it finds without deleting anything; if that fails too, the cached rows
stay. /instruments carries no freeze_qty, /search does: for derivative exchanges the known underlyings are also
searched to fill it (an upsert never replaces a known freeze_qty with NULL).
"""
from __future__ import annotations

import logging

from broker.errors import BrokerError
from db.instruments import delete_not_updated_since, strategy_underlyings, upsert_instruments
from db.models import utcnow
from services.context import ServiceContext
from services.health import service_log

log = logging.getLogger("services.instruments")
DEFAULT_EXCHANGES = ("NSE", "NFO", "BFO", "NSE_INDEX", "BSE_INDEX")
DERIVATIVES = ("NFO", "BFO", "MCX", "CDS", "BCD")
FALLBACK_UNDERLYINGS = ("NIFTY", "BANKNIFTY", "SENSEX", "FINNIFTY", "MIDCPNIFTY")


def _num(v, cast, default):
    try:
        return cast(v)
    except (TypeError, ValueError):
        return default


def to_row(d: dict, now) -> dict | None:
    symbol, exchange = d.get("symbol"), d.get("exchange")
    if not symbol or not exchange:
        return None
    freeze = _num(d.get("freeze_qty"), int, None)
    return dict(symbol=str(symbol)[:64], exchange=str(exchange)[:16], name=str(d.get("name") or "")[:64],
                expiry=str(d.get("expiry") or "").upper()[:16], strike=max(0.0, _num(d.get("strike"), float, 0.0)),
                lotsize=_num(d.get("lotsize"), int, 1) or 1, instrumenttype=str(d.get("instrumenttype") or "")[:16],
                tick_size=_num(d.get("tick_size"), float, 0.05), freeze_qty=freeze or None, updated_at=now)


def _store(ctx: ServiceContext, exchange: str, items: list[dict], replace: bool) -> int:
    now = utcnow()
    rows = [r for r in (to_row(d, now) for d in items) if r and r["exchange"] == exchange]
    rows = list({(r["symbol"], r["exchange"]): r for r in rows}.values())
    with ctx.db.write() as s:
        if rows:
            upsert_instruments(s, rows)
        if replace and rows:
            delete_not_updated_since(s, exchange, now)
    return len(rows)


def _search_known(ctx: ServiceContext, client, exchange: str) -> list[dict]:
    with ctx.db.read() as s:
        names = strategy_underlyings(s)
    found: list[dict] = []
    for name in sorted(names | set(FALLBACK_UNDERLYINGS)):
        try:
            found += client.search(name, exchange)
        except BrokerError as exc:
            log.info("instrument search %s on %s failed: %s", name, exchange, exc.message)
    return found


def load_instruments(ctx: ServiceContext, account_id: int, exchanges=DEFAULT_EXCHANGES) -> int:
    """Download the symbol master for ``exchanges`` via ``account_id``'s OpenAlgo; returns rows written."""
    client = ctx.client(account_id)
    total = 0
    for exchange in exchanges:
        try:
            items = client.instruments(exchange)
            total += _store(ctx, exchange, items, replace=True)
            if exchange in DERIVATIVES and not any(d.get("freeze_qty") for d in items):
                _store(ctx, exchange, _search_known(ctx, client, exchange), replace=False)  # /search has it
            continue
        except BrokerError as exc:
            reason = exc.message
        except ValueError as exc:  # not JSON
            reason = f"bad response: {exc}"
        n = _store(ctx, exchange, _search_known(ctx, client, exchange), replace=False)
        service_log(ctx.db, "instruments", "WARNING",
                    f"/instruments {exchange} failed ({reason}); fallback search stored {n} symbols")
        total += n
    return total
