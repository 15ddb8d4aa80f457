"""Daily limits on the day P&L, per account and for the portfolio (every account together), evaluated on every
tick.

    day P&L = sum over every position the broker reports for the account today (its positionbook, as account
              sync stores it: strategy legs, Quick Order positions and orders placed outside the app alike)
              of  realised P&L + quantity x (ltp - average price)
    ltp is the live tick when the feed has one, else the positionbook's own last price (a position with neither,
    its book's price 0, counts its realised P&L only: a missing price must not read as a total loss and flatten
    every account).

Per account:
    max loss       trips when day P&L <= -daily_max_loss
    max profit     trips when day P&L >= daily_max_profit (locks the day's profit in)
    trailing       peak = the highest day P&L seen this trading day (starts at 0); once peak > 0 the floor is
                   peak - daily_trailing, and it trips when day P&L <= floor (locks in part of a profit; the loss
                   side stays the max loss). The peak is written to the account row on the 1 s reload when it
                   rose and with a trip (never per tick), so a restart within the trading day keeps it; a new
                   trading day (db.clock.trading_day) starts again at 0.
Portfolio:
    max loss       trips when the sum of every account's day P&L (limited or not, halted or not) <= -limit.

An account trip halts the account for the trading day ('daily max loss ₹5,000 at 2026-12-02 10:42:01 IST; halted
for the day, ...'; re-armed at the first check of the next trading day by services/square_off.py, unless the
trader halts it by hand meanwhile), writes a risk event and queues a flatten of it in the same transaction, then
starts that flatten at once (services/flatten.py: cancel, close every position, exit the runs). A portfolio trip
halts every account for the trading day (each re-armed on the next one like an account trip), writes one risk
event (the portfolio's) and queues one flatten_all in one transaction, then starts it. Either transaction also
writes the first closes (db/flatten.early_closes: the positions the stored positionbook shows that nothing can
have moved since it was read, BUYs first), so they go out on its commit; the flatten reconciles the rest against
a fresh positionbook. The flatten is an ordinary control command, so a restart in the middle carries it out again
without placing anything twice. The day P&L's day is the broker's: its positionbook starts afresh each session. A
halted account's own limits are not evaluated; re-arming an account whose day P&L (or the portfolio's) is still
beyond its limit halts it again at once (raise or clear the limit first). A trip that cannot be written is
alarmed and tried again on the next tick or reload.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

from db.accounts import day_positions, limit_rows, save_day_peaks
from db.clock import ist_now_str, trading_day
from db.flatten import early_closes, halt_all_and_flatten, halt_and_flatten
from db.portfolio import portfolio_max_loss
from db.vocab import TradingState
from services.context import ServiceContext
from services.dispatcher import PlainExitWriter, Written

log = logging.getLogger("services.account_limits")
CONSUMER = "account_limits"


@dataclass
class DayPeak:
    """An account's highest day P&L this trading day (``day``, ISO). Kept across reloads; ``saved``: the value
    the account row holds for the day (None: nothing for this day)."""
    day: str
    value: float = 0.0
    saved: float | None = None


@dataclass
class AccountBook:
    account_id: int
    name: str
    max_loss: float | None
    max_profit: float | None
    trailing: float | None = None
    armed: bool = True  # its own limits are evaluated (it has one and is not halted); else it only counts in the sum
    peak: DayPeak | None = None  # with a trailing amount
    positions: list[tuple[str, str, int, float, float, float]] = field(default_factory=list)  # sym, exch, q, avg...
    pnl: float | None = None


class AccountLimits:
    def __init__(self, ctx: ServiceContext, md, start_flatten, notifier=None, wake=None, exits=None):
        """``start_flatten(command_id, [account_id, ...])``: the service's Flattener.start; ``exits``: the
        dispatcher (its ``submit_now``: the trip's first close is claimed in the trip's own transaction and posted
        on its commit); without one, the trip is written and ``wake`` (the dispatcher's) called."""
        self.ctx, self.md, self.start_flatten, self.notifier = ctx, md, start_flatten, notifier
        self.exits = exits or PlainExitWriter(ctx.db, wake or (lambda: None))
        self._books: dict[int, AccountBook] = {}
        self._by_key: dict[tuple[str, str], list[AccountBook]] = {}
        self._tripped: set[int] = set()
        self._peaks: dict[int, DayPeak] = {}
        self._lock = threading.Lock()
        self.portfolio_limit: float | None = None
        self.portfolio_pnl: float | None = None
        self._portfolio_open = False  # some account is not halted: a portfolio trip has something to halt
        # None: armed. Else the monotonic time its trip was committed (inf while it is being written): a reload
        # that read the accounts after that and finds one not halted (re-armed) arms the portfolio again.
        self._portfolio_trip: float | None = None
        md.add_listener(self._on_tick)

    def reload(self) -> None:
        """Every second: the accounts to watch (with a limit that may still trip, or all of them while there is a
        portfolio limit), their positions, and the day peaks (merged with the stored ones, saved when they rose)."""
        read_at, day = time.monotonic(), trading_day().isoformat()
        with self.ctx.db.read() as s:
            limit = portfolio_max_loss(s)
            rows = limit_rows(s)
            armed = {r.id for r in rows if r.trading_state != TradingState.HALTED
                     and (r.max_loss or r.max_profit or r.trailing)}
            watched = [r for r in rows if limit or r.id in armed]
            positions = day_positions(s, [r.id for r in watched], day=day)
        books = {r.id: AccountBook(r.id, r.name, r.max_loss, r.max_profit, r.trailing, r.id in armed,
                                   self._peak_of(r, day) if r.trailing else None) for r in watched}
        for acct, symbol, exchange, qty, avg, ltp, realized in positions:
            books[acct].positions.append((symbol, exchange, int(qty or 0), avg or 0.0, ltp or 0.0, realized or 0.0))
        by_key: dict[tuple[str, str], list[AccountBook]] = {}
        for b in books.values():
            for symbol, exchange, qty, *_ in b.positions:
                if qty:
                    by_key.setdefault((symbol, exchange), []).append(b)
        with self._lock:
            self._books, self._by_key = books, by_key
            self._tripped &= armed  # a re-armed account may trip again
            self._peaks = {a: p for a, p in self._peaks.items() if a in books}
            self.portfolio_limit = limit
            self._portfolio_open = any(r.trading_state != TradingState.HALTED for r in rows)
            if self._portfolio_trip is not None and self._portfolio_trip < read_at and self._portfolio_open:
                self._portfolio_trip = None  # an account re-armed after the trip: the portfolio may trip again
        keys = set(by_key)
        held = self.md.held_by(CONSUMER)
        if keys - held:
            self.md.subscribe(CONSUMER, sorted(keys - held), 1)
        if held - keys:
            self.md.unsubscribe(CONSUMER, sorted(held - keys), 1)
        for b in books.values():  # a position that moved between ticks (a fill, a sync) is seen here too
            self.evaluate(b)
        self.evaluate_portfolio()
        self._save_peaks(books)

    def _peak_of(self, r, day: str) -> DayPeak:
        """The account's day peak, kept in memory across reloads, never below the one stored for today."""
        stored = r.day_peak if r.day_peak_date == day else None
        with self._lock:
            p = self._peaks.get(r.id)
            if p is None or p.day != day:  # first sight, or a new trading day: from the stored peak, else 0
                p = self._peaks[r.id] = DayPeak(day, max(0.0, stored or 0.0), stored)
            else:
                p.value, p.saved = max(p.value, stored or 0.0), stored
        return p

    def _save_peaks(self, books: dict[int, AccountBook]) -> None:
        rose = [(b.account_id, b.peak.day, b.peak.value) for b in books.values()
                if b.peak is not None and b.peak.value > 0 and b.peak.value > (b.peak.saved or 0.0)]
        if not rose:
            return
        try:
            with self.ctx.db.write() as s:
                save_day_peaks(s, rose)
        except Exception as exc:  # noqa: BLE001 - the peak stays in memory; the next reload writes it again
            log.error("day P&L peak of account(s) %s not saved (kept in memory, retried): %s",
                      [a for a, _, _ in rose], exc)
            return
        for acct, _, value in rose:
            books[acct].peak.saved = value

    def _on_tick(self, symbol: str, exchange: str, data: dict) -> None:
        books = self._by_key.get((symbol, exchange))
        if books:
            for b in books:
                self.evaluate(b)
            if self.portfolio_limit:
                self.evaluate_portfolio()

    def day_pnl(self, b: AccountBook) -> float:
        total = 0.0
        for symbol, exchange, qty, avg, ltp, realized in b.positions:
            total += realized
            if qty:
                live = self.md.last_price(symbol, exchange)
                price = live[0] if live else ltp
                if price > 0:  # no tick yet and no price in the book (0): unknown, not a 100 % loss
                    total += qty * (price - avg)
        return total

    def evaluate(self, b: AccountBook) -> tuple[str, float] | None:
        pnl = b.pnl = self.day_pnl(b)
        if not b.armed:
            return None
        peak = b.peak
        if peak is not None and pnl > peak.value:
            with self._lock:  # the reload merges the stored peak under the same lock
                peak.value = max(peak.value, pnl)
        if b.max_loss and pnl <= -b.max_loss:
            breach = ("account_max_loss", -b.max_loss, f"daily max loss ₹{b.max_loss:,.0f}")
        elif b.max_profit and pnl >= b.max_profit:
            breach = ("account_max_profit", b.max_profit, f"daily max profit ₹{b.max_profit:,.0f} locked in")
        elif peak is not None and b.trailing and peak.value > 0 and pnl <= peak.value - b.trailing:
            floor = peak.value - b.trailing
            breach = ("account_trailing_stop", floor, f"daily trailing stop ₹{b.trailing:,.0f}: day P&L peak "
                                                     f"₹{peak.value:,.2f}, floor ₹{floor:,.2f}")
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
        peak = [(b.account_id, b.peak.day, b.peak.value)] if b.peak is not None and b.peak.value > 0 else []
        def write(s) -> Written:
            cid = halt_and_flatten(s, b.account_id, reason, event, threshold, pnl, until=trading_day().isoformat())
            early = early_closes(s, cid, b.account_id)
            save_day_peaks(s, peak)
            return Written((cid, early), (b.account_id,) if early else ())
        try:
            cid, early = self.exits.submit_now(write)
        except Exception as exc:  # noqa: BLE001 - a trip must never go quiet: alarm, and try again
            with self._lock:
                self._tripped.discard(b.account_id)
            self._not_written(f"ACCOUNT LIMIT NOT ACTED ON: {b.name} {what} (day P&L ₹{pnl:,.0f}): {exc}; retrying",
                              f"account {b.account_id}")
            return
        if peak:
            b.peak.saved = peak[0][2]
        msg = f"{b.name}: {what} (day P&L ₹{pnl:,.2f}): account halted, flatten #{cid} started"
        log.warning("%s", msg)
        if self.notifier is not None:
            self.notifier.alert("account_limit", msg, subject=f"account {b.account_id}")
        self.start_flatten(cid, [b.account_id])

    # ---- portfolio ---------------------------------------------------------------------------------------------
    def evaluate_portfolio(self) -> float | None:
        """The sum of every watched account's last day P&L against the portfolio limit; trips once. Returns the
        sum (None without a limit)."""
        limit = self.portfolio_limit
        if not limit:
            self.portfolio_pnl = None
            return None
        total = self.portfolio_pnl = sum(b.pnl for b in self._books.values() if b.pnl is not None)
        if total > -limit:
            return total
        with self._lock:
            if self._portfolio_trip is not None or not self._portfolio_open:
                return total
            self._portfolio_trip = math.inf
        self._trip_portfolio(total, limit)
        return total

    def _trip_portfolio(self, total: float, limit: float) -> None:
        what = f"portfolio daily max loss ₹{limit:,.0f}"
        # every account's halt lasts the trading day: each is re-armed on the next one (services/square_off.py)
        reason = f"{what} at {ist_now_str()}; halted for the day, re-armed on the next trading day"
        def write(s) -> Written:
            cid, accounts = halt_all_and_flatten(s, reason, "portfolio_max_loss", -limit, total,
                                                 until=trading_day().isoformat())
            closing = tuple(a for a in accounts if early_closes(s, cid, a))
            return Written((cid, accounts), closing)
        try:
            cid, accounts = self.exits.submit_now(write)
        except Exception as exc:  # noqa: BLE001 - a trip must never go quiet: alarm, and try again
            with self._lock:
                self._portfolio_trip = None
            self._not_written(f"PORTFOLIO LIMIT NOT ACTED ON: {what} (day P&L of all accounts ₹{total:,.0f}): "
                              f"{exc}; retrying", "portfolio")
            return
        with self._lock:
            self._portfolio_trip = time.monotonic()
        msg = (f"{what} (day P&L of all accounts ₹{total:,.2f}): {len(accounts)} account(s) halted, "
               f"flatten #{cid} started")
        log.warning("%s", msg)
        if self.notifier is not None:
            self.notifier.alert("portfolio_limit", msg, subject="portfolio")
        self.start_flatten(cid, accounts)

    def _not_written(self, msg: str, subject: str) -> None:
        log.error("%s", msg)
        if self.notifier is not None:
            self.notifier.alert("account_limit_not_written", msg, subject=subject)
