"""Option-chain sessions: the UI asks for a chain (row status 'requested'); the service picks ATM +- N strikes,
subscribes them in depth mode (consumer ``chain:<id>``) plus the underlying, and drops them when the UI stops
sending heartbeats. Subscriptions are ref-counted per consumer in the market-data manager, so a symbol that is
also an open position stays subscribed when its chain expires.
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta

from db.accounts import feed_order
from db.chain import expire_stale, open_session_ids, open_sessions, set_session_status
from db.instruments import option_contracts
from db.models import OptionChainSession, utcnow
from db.strategies import OPTION_EXCHANGE
from db.vocab import ChainStatus
from services.context import ServiceContext
from services.market_data import MarketDataManager

log = logging.getLogger("services.option_chain")
Key = tuple[str, str]
DEPTH, QUOTE = 3, 2


class ChainError(Exception):
    """The session cannot be served (unknown underlying / expiry); stored in the row's message."""


class WaitingForPrice(Exception):
    """No underlying price yet; the session stays 'requested' and is retried next time."""


def normalize_expiry(expiry: str) -> str:
    """'30DEC25' or '30-dec-25' -> '30-DEC-25' (the symbol-master form)."""
    e = (expiry or "").strip().upper()
    return f"{e[:2]}-{e[2:5]}-{e[5:]}" if len(e) == 7 and "-" not in e else e


def pick_strikes(strikes: list[float], ltp: float, n: int) -> list[float]:
    """ATM (the listed strike nearest the LTP) and n listed strikes on each side."""
    strikes = sorted(set(strikes))
    atm = min(range(len(strikes)), key=lambda i: abs(strikes[i] - ltp))
    return strikes[max(0, atm - n): atm + n + 1]


class OptionChainSessions:
    def __init__(self, ctx: ServiceContext, md: MarketDataManager):
        self.ctx, self.md = ctx, md
        self.cfg = ctx.settings.service
        self._active: dict[str, tuple[list[Key], Key]] = {}  # session id -> (option keys, underlying key)

    @staticmethod
    def consumer(session_id: str) -> str:
        return f"chain:{session_id}"

    # ---- opening ---------------------------------------------------------------------------------------------
    def process(self) -> int:
        """Serve 'requested' sessions (and re-subscribe 'active' ones after a restart). Returns sessions opened."""
        with self.ctx.db.read() as s:
            rows = open_sessions(s)
        opened = 0
        for row in rows:
            if row.id in self._active:
                continue
            if row.status == ChainStatus.ACTIVE:
                keys = [(d["symbol"], d["exchange"]) for d in json.loads(row.symbols_json or "[]")]
                self._subscribe(row, keys)
            else:
                opened += self._open(row)
        return opened

    def _open(self, row: OptionChainSession) -> int:
        try:
            keys = self._select(row, self._underlying_ltp(row.underlying, row.exchange))
        except WaitingForPrice as exc:
            self._set(row.id, ChainStatus.REQUESTED.value, message=str(exc))
            return 0
        except ChainError as exc:
            self._set(row.id, ChainStatus.ERROR.value, message=str(exc))
            return 0
        self._subscribe(row, keys)
        symbols = json.dumps([{"symbol": s, "exchange": e} for s, e in keys])
        if not self._set(row.id, ChainStatus.ACTIVE.value, expect=ChainStatus.REQUESTED.value, symbols_json=symbols,
                         message=""):
            self._release(row.id)  # the row changed under us (expired/removed): give the symbols back
            return 0
        return 1

    def _select(self, row: OptionChainSession, ltp: float) -> list[Key]:
        opt_exchange = OPTION_EXCHANGE.get(row.exchange)
        if opt_exchange is None:
            raise ChainError(f"No options exchange for {row.exchange}")
        with self.ctx.db.read() as s:
            insts = option_contracts(s, row.underlying, opt_exchange, normalize_expiry(row.expiry))
        if not insts:
            raise ChainError(f"No {row.underlying} options expiring {row.expiry} in the symbol master")
        chosen = set(pick_strikes([i.strike for i in insts], ltp, self.cfg.chain_strikes))
        picked = sorted((i for i in insts if i.strike in chosen), key=lambda i: (i.strike, i.instrumenttype))
        return [(i.symbol, i.exchange) for i in picked]

    def _underlying_ltp(self, symbol: str, exchange: str) -> float:
        p = self.md.last_price(symbol, exchange)
        if p is not None:
            return p[0]
        for acct in feed_order(self.ctx.db)[:1]:
            try:
                data = self.ctx.client(acct.id).quotes(symbol, exchange)
            except Exception as exc:  # noqa: BLE001 - any failure: wait for a tick instead
                raise WaitingForPrice(f"waiting for a price of {symbol} ({exc})") from None
            if self.md.ingest_quote(symbol, exchange, data):
                return data["ltp"]
        raise WaitingForPrice(f"waiting for a price of {symbol}")

    def _subscribe(self, row: OptionChainSession, keys: list[Key]) -> None:
        underlying = (row.underlying, row.exchange)
        self.md.subscribe(self.consumer(row.id), keys, DEPTH)
        self.md.subscribe(self.consumer(row.id), [underlying], QUOTE)
        self._active[row.id] = (keys, underlying)

    def _release(self, session_id: str) -> None:
        keys, underlying = self._active.pop(session_id, ([], None))
        self.md.unsubscribe(self.consumer(session_id), keys, DEPTH)
        if underlying:
            self.md.unsubscribe(self.consumer(session_id), [underlying], QUOTE)

    def _set(self, session_id: str, status: str, expect: str | None = None, **values) -> bool:
        with self.ctx.db.write() as s:
            return set_session_status(s, session_id, status, expect, **values)

    # ---- expiry ----------------------------------------------------------------------------------------------
    def cleanup(self) -> int:
        """Expire sessions without a heartbeat for chain_ttl_s; release symbols of sessions no longer open."""
        cutoff = utcnow() - timedelta(seconds=self.cfg.chain_ttl_s)
        with self.ctx.db.write() as s:
            stale = expire_stale(s, cutoff, "no heartbeat from the UI")
            still_open = open_session_ids(s)
        gone = [sid for sid in self._active if sid not in still_open]
        for sid in gone:
            self._release(sid)
        return len(stale)
