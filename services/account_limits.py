"""Daily max loss / max profit per account, on the account's day P&L, evaluated on every tick.

    day P&L = sum over every position the broker reports for the account today (its positionbook, as account
              sync stores it: strategy legs, Quick Order positions and orders placed outside the app alike)
              of  realised P&L + quantity x (ltp - average price)
    ltp is the live tick when the feed has one, else the positionbook's own last price.

    max loss     trips when day P&L <= -daily_max_loss
    max profit   trips when day P&L >= daily_max_profit (locks the day's profit in)

A trip halts the account for the trading day ('daily max loss ₹5,000 at 2026-12-02 10:42:01 IST; halted for the
day, ...'; re-armed at the first check of the next trading day by services/square_off.py, unless the trader halts
it by hand meanwhile), writes a risk event and queues a flatten of the account in the same transaction, then
starts that flatten at once (services/flatten.py: cancel, close every position, exit the runs). The flatten is
an ordinary flatten_account command, so a restart in the middle carries it out again without placing anything
twice. The day P&L's day is the broker's: its positionbook starts afresh each session. A halted account is not
evaluated; re-arming an account whose day P&L is still beyond its limit halts it again at once (raise or clear
the limit first). A trip that cannot be written is alarmed and tried again on the next tick or reload.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from db.clock import ist_now_str, today_ist
from db.accounts import day_positions, limited_accounts
from db.flatten import halt_and_flatten
from db.vocab import TradingState
from services.context import ServiceContext

log = logging.getLogger("services.account_limits")
CONSUMER = "account_limits"


@dataclass
class AccountBook:
    account_id: int
    name: str
    max_loss: float | None
    max_profit: float | None
    positions: list[tuple[str, str, int, float, float, float]] = field(default_factory=list)  # sym, exch, q, avg...
    pnl: float | None = None


class AccountLimits:
    def __init__(self, ctx: ServiceContext, md, start_flatten, notifier=None):
        """``start_flatten(command_id, [account_id])``: the service's Flattener.start."""
        self.ctx, self.md, self.start_flatten, self.notifier = ctx, md, start_flatten, notifier
        self._books: dict[int, AccountBook] = {}
        self._by_key: dict[tuple[str, str], list[AccountBook]] = {}
        self._tripped: set[int] = set()
        self._lock = threading.Lock()
        md.add_listener(self._on_tick)

    def reload(self) -> None:
        """The accounts with a limit that may still trip (active or reducing), and their positions: every second."""
        with self.ctx.db.read() as s:
            accounts = [a for a in limited_accounts(s) if a[4] != TradingState.HALTED]
            rows = day_positions(s, [a[0] for a in accounts])
        books = {a: AccountBook(a, name, loss, profit) for a, name, loss, profit, _ in accounts}
        for acct, symbol, exchange, qty, avg, ltp, realized in rows:
            books[acct].positions.append((symbol, exchange, int(qty or 0), avg or 0.0, ltp or 0.0, realized or 0.0))
        by_key: dict[tuple[str, str], list[AccountBook]] = {}
        for b in books.values():
            for symbol, exchange, qty, *_ in b.positions:
                if qty:
                    by_key.setdefault((symbol, exchange), []).append(b)
        with self._lock:
            self._books, self._by_key = books, by_key
            self._tripped &= set(books)  # a re-armed account may trip again
        keys = set(by_key)
        held = self.md.held_by(CONSUMER)
        if keys - held:
            self.md.subscribe(CONSUMER, sorted(keys - held), 1)
        if held - keys:
            self.md.unsubscribe(CONSUMER, sorted(held - keys), 1)
        for b in books.values():  # a position that moved between ticks (a fill, a sync) is seen here too
            self.evaluate(b)

    def _on_tick(self, symbol: str, exchange: str, data: dict) -> None:
        books = self._by_key.get((symbol, exchange))
        if books:
            for b in books:
                self.evaluate(b)

    def day_pnl(self, b: AccountBook) -> float:
        total = 0.0
        for symbol, exchange, qty, avg, ltp, realized in b.positions:
            live = self.md.last_price(symbol, exchange) if qty else None
            total += realized + (qty * ((live[0] if live else ltp) - avg) if qty else 0.0)
        return total

    def evaluate(self, b: AccountBook) -> tuple[str, float] | None:
        pnl = b.pnl = self.day_pnl(b)
        if b.max_loss and pnl <= -b.max_loss:
            breach = ("account_max_loss", -b.max_loss, f"daily max loss ₹{b.max_loss:,.0f}")
        elif b.max_profit and pnl >= b.max_profit:
            breach = ("account_max_profit", b.max_profit, f"daily max profit ₹{b.max_profit:,.0f} locked in")
        else:
            return None
        with self._lock:
            if b.account_id in self._tripped:
                return None
            self._tripped.add(b.account_id)
        self._trip(b, pnl, *breach)
        return breach[0], pnl

    def _trip(self, b: AccountBook, pnl: float, event: str, threshold: float, what: str) -> None:
        # the halt lasts the trading day: re-armed at the first check of the next one (services/square_off.py)
        reason = f"{what} at {ist_now_str()}; halted for the day, re-armed on the next trading day"
        try:
            with self.ctx.db.write() as s:
                cid = halt_and_flatten(s, b.account_id, reason, event, threshold, pnl, until=today_ist().isoformat())
        except Exception as exc:  # noqa: BLE001 - a trip must never go quiet: alarm, and try again
            with self._lock:
                self._tripped.discard(b.account_id)
            msg = f"ACCOUNT LIMIT NOT ACTED ON: {b.name} {what} (day P&L ₹{pnl:,.0f}): {exc}; retrying"
            log.error("%s", msg)
            if self.notifier is not None:
                self.notifier.alert("account_limit_not_written", msg, subject=f"account {b.account_id}")
            return
        msg = f"{b.name}: {what} (day P&L ₹{pnl:,.2f}): account halted, flatten #{cid} started"
        log.warning("%s", msg)
        if self.notifier is not None:
            self.notifier.alert("account_limit", msg, subject=f"account {b.account_id}")
        self.start_flatten(cid, [b.account_id])
