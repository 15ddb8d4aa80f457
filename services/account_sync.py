"""Account sync: funds, positionbook, holdings and tradebook per account -> funds / positions / holdings /
broker_trades. Every ``funds_refresh_s`` per account (the runner ticks ``run_once()`` often; each account is
refreshed only when due), or at once via ``refresh(account_id)`` (control command 'refresh_account').

All reads go through the account's client, so they share its read token bucket with the other components.
The four HTTP calls happen before the (single, short) write transaction.
"""
from __future__ import annotations

import logging
import threading
import time

from broker.errors import BrokerError
from db.account_books import delete_holdings, mark_positions_synced, positions_of, trade_keys
from db.accounts import list_accounts
from db.models import BrokerTrade, Funds, Holding, Position, utcnow
from services.context import ServiceContext

log = logging.getLogger("services.account_sync")
COMPONENT = "account_sync"


def _f(v, default: float = 0.0) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


class AccountSync:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()  # one refresh at a time (scheduler thread vs control command)
        self.errors: dict[int, str] = {}

    def run_once(self) -> int:
        """Refresh every active account that is due. Returns the number refreshed."""
        every = self.ctx.settings.service.funds_refresh_s
        now = time.monotonic()
        done = 0
        accounts = list_accounts(self.ctx.db, active_only=True)
        for gone in set(self.errors) - {a.id for a in accounts}:  # deleted or deactivated: nothing to read
            self.errors.pop(gone, None)
        for acct in accounts:
            if acct.status == "invalid_key":
                # not read while the broker refuses its key: a current error, whichever call (a ping, a read
                # of this job's) met the refusal first; the first read after the key works again clears it
                self.errors[acct.id] = f"not synced: invalid API key ({acct.status_message or 'refused'})"[:300]
                continue
            if now - self._last.get(acct.id, -1e9) < every:
                continue
            done += int(self.refresh(acct.id))
        return done

    def refresh(self, account_id: int) -> bool:
        with self._lock:
            self._last[account_id] = time.monotonic()
            started = utcnow()  # the books are "as of" this: every read below comes after it
            try:
                snap = self._fetch(account_id)
            except (BrokerError, KeyError) as exc:
                self.errors[account_id] = str(exc)
                log.warning("account %s sync failed: %s", account_id, exc)
                return False
            self._store(account_id, *snap, now=started)
            self.errors.pop(account_id, None)
            return True

    def _fetch(self, account_id: int):
        c = self.ctx.client(account_id)
        return c.funds(), c.positionbook(), c.holdings(), c.tradebook()

    def _store(self, account_id: int, funds: dict, positions: list[dict], holdings: list[dict],
               trades: list[dict], now=None) -> None:
        """``now``: when the reads began (funds.updated_at: a broker order stored after it may have moved a
        position this positionbook does not show yet; db/flatten.early_closes relies on that)."""
        now = now or utcnow()
        with self.ctx.db.write() as s:
            self._store_funds(s, account_id, funds, now)
            self._store_positions(s, account_id, positions, now)
            mark_positions_synced(s, account_id, now)
            self._store_holdings(s, account_id, holdings, now)
            self._store_trades(s, account_id, trades)

    @staticmethod
    def _store_funds(s, account_id: int, d: dict, now) -> None:
        if not d:  # a dead broker session answers {} : keep the last known values
            return
        row = s.get(Funds, account_id) or Funds(account_id=account_id)
        row.available_cash, row.used_margin = _f(d.get("availablecash")), _f(d.get("utiliseddebits"))
        row.realized_pnl, row.unrealized_pnl = _f(d.get("m2mrealized")), _f(d.get("m2munrealized"))
        row.updated_at = now
        s.add(row)

    @staticmethod
    def _store_positions(s, account_id: int, rows: list[dict], now) -> None:
        existing = {(p.symbol, p.exchange, p.product): p for p in positions_of(s, account_id)}
        seen = set()
        for r in rows:
            key = (str(r.get("symbol") or ""), str(r.get("exchange") or ""), str(r.get("product") or ""))
            if not key[0] or key in seen:
                continue
            seen.add(key)
            p = existing.get(key) or Position(account_id=account_id, symbol=key[0], exchange=key[1], product=key[2])
            p.quantity, p.average_price = int(_f(r.get("quantity"))), _f(r.get("average_price"))
            p.ltp, p.pnl = _f(r.get("ltp"), p.ltp or 0.0), _f(r.get("pnl"))
            p.realized_pnl = _f(r.get("today_realized_pnl"), 0.0)
            p.unrealized_pnl = _f(r.get("unrealized_pnl"), p.pnl - p.realized_pnl)
            p.updated_at = now
            s.add(p)
        for key, p in existing.items():  # quantity-0 rows the broker still reports are kept (day's P&L)
            if key not in seen:
                s.delete(p)

    @staticmethod
    def _store_holdings(s, account_id: int, rows: list[dict], now) -> None:
        delete_holdings(s, account_id)
        s.flush()
        seen = set()
        for r in rows:
            key = (str(r.get("symbol") or ""), str(r.get("exchange") or ""))
            if not key[0] or key in seen:
                continue
            seen.add(key)
            s.add(Holding(account_id=account_id, symbol=key[0], exchange=key[1], quantity=int(_f(r.get("quantity"))),
                          average_price=_f(r.get("average_price")), ltp=_f(r.get("ltp")), pnl=_f(r.get("pnl")),
                          updated_at=now))

    @staticmethod
    def _store_trades(s, account_id: int, rows: list[dict]) -> None:
        known = trade_keys(s, account_id)
        for r in rows:
            oid, ts = str(r.get("orderid") or ""), str(r.get("timestamp") or "")
            key = str(r.get("tradeid") or f"{oid}|{ts}|{r.get('quantity')}")[:96]
            if not oid or key in known:
                continue
            known.add(key)
            s.add(BrokerTrade(account_id=account_id, trade_key=key, broker_order_id=oid,
                              symbol=str(r.get("symbol") or ""), exchange=str(r.get("exchange") or ""),
                              action=str(r.get("action") or "").upper(), quantity=int(_f(r.get("quantity"))),
                              average_price=_f(r.get("average_price")), product=str(r.get("product") or ""),
                              trade_value=_f(r.get("trade_value")), broker_timestamp=ts[:32]))
