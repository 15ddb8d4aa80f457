"""Order poller: keeps placed intents, broker_orders, executions and runs in line with each account's orderbook.

One ``run_once()`` per cycle (the runner schedules it every ``poller_interval_s``). Per account that has open or
in-flight intents, or had intent activity in the last ``RECENT_S`` seconds: ONE orderbook call, at most one
per second per account. Then:
  - upsert broker_orders (unknown orders adopted as external);
  - placed / partially_filled / cancelled intents follow the broker's order_status (order_fsm.status_from_broker);
    an invalid transition is logged once and skipped, never fatal;
  - fills feed db/executions.py: entry filled -> execution 'entered' at the average price (orderbook
    average_price, else the tradebook, else orderstatus); exit filled -> 'exited'; runs advance
    (entering -> active/failed, exiting -> exited). A rejected exit is logged as an ERROR and the execution stays
    'exiting' for the risk manager's retry.
Everything is derived from the database each cycle (plus a repair sweep), so a restart recovers pending work.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Callable

from broker.errors import BrokerError
from db.broker_orders import BookOrder, book_changes, parse_book, upsert_orders
from db.crypto import SecretError
from db.errors import classify
from db.executions import Outcome, load_outcome_rows, sweep, sweep_needed
from db.intents import accounts_with_intents, book_followed_intents, followed_by_book, intents_by_id
from db.models import utcnow
from db.order_fsm import OPEN, RECONCILER_OWNED, values
from db.run_fsm import LegStatus
from services.context import ServiceContext
from services.health import service_log
from services.order_reports import apply_book_status, behind_book

log = logging.getLogger("services.poller")
APPLY_CHUNK = 4  # intents per write transaction in _apply
COMPONENT = "poller"
RECENT_S = 30.0
MIN_GAP_S = 1.0  # <= 1 orderbook request per second per account
FLATTEN_GAP_S = 0.25  # while a flatten waits for its exits' fills (poll_now)
PENDING = values(RECONCILER_OWNED | OPEN)


class OrderPoller:
    def __init__(self, ctx: ServiceContext, on_fill: Callable[[set[int]], None] | None = None,
                 max_workers: int = 32):
        self.ctx = ctx
        self.on_fill = on_fill
        self._last_poll: dict[int, float] = {}
        self._warned: set[str] = set()
        # One thread per due account (up to 32): with fewer, ten accounts at a 50 ms broker took two rounds, and
        # an account whose fills landed just after a round began waited for the next cycle.
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="poller")
        self._polling: dict[int, threading.Lock] = {}  # one orderbook read + apply per account at a time
        self._locks_lock = threading.Lock()
        self.last_cycle: dict = {}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run_once(self) -> dict:
        accounts = self._due_accounts()
        result = {"accounts": len(accounts), "updated": 0, "errors": 0}
        outcome = Outcome()
        for out in self._pool.map(lambda a: self._poll(a, result), accounts):
            outcome.merge(out)
        with self.ctx.db.read() as s:
            repair = sweep_needed(s)
        if repair:  # re-checked under the write lock by sweep itself
            with self.ctx.db.write() as s:
                outcome.merge(sweep(s))
        if outcome.run_ids and self.on_fill:
            try:
                self.on_fill(outcome.run_ids)
            except Exception:
                log.exception("on_fill callback failed")
        self.last_cycle = result
        return result

    def poll_now(self, account_id: int, min_gap_s: float = FLATTEN_GAP_S) -> None:
        """Read this account's orderbook now (at most one read per ``min_gap_s``), and apply it: a flatten waiting for
        its exits' fills calls this instead of waiting up to a whole cycle for the scheduled poll. OpenAlgo allows
        10 reads a second per endpoint (its API_RATE_LIMIT); a flatten's few seconds at 4 a second stay well inside.
        """
        wait = min_gap_s - (time.monotonic() - self._last_poll.get(account_id, -1e9))
        if wait > 0:
            time.sleep(wait)
        self._last_poll[account_id] = time.monotonic()
        outcome = self._poll(account_id, {"accounts": 1, "updated": 0, "errors": 0})
        if outcome.run_ids and self.on_fill:
            try:
                self.on_fill(outcome.run_ids)
            except Exception:
                log.exception("on_fill callback failed")

    def _poll(self, account_id: int, result: dict) -> Outcome:
        with self._locks_lock:
            lock = self._polling.setdefault(account_id, threading.Lock())
        with lock:
            book = self._fetch(account_id)
            if book is None:
                result["errors"] += 1
                return Outcome()
            return self._apply(account_id, book, result)

    def _gap(self) -> float:
        return max(MIN_GAP_S, self.ctx.settings.service.poller_interval_s) * 0.95

    def _due_accounts(self) -> list[int]:
        recent = utcnow() - timedelta(seconds=RECENT_S)
        with self.ctx.db.read() as s:
            accounts = accounts_with_intents(s, PENDING, recent)
        gap = self._gap()
        now = time.monotonic()
        due = [a for a in sorted(accounts) if now - self._last_poll.get(a, -1e9) >= gap]
        for a in due:
            self._last_poll[a] = now
        return due

    def _fetch(self, account_id: int) -> list[BookOrder] | None:
        try:
            return parse_book(self.ctx.client(account_id).orderbook())
        except (BrokerError, KeyError, SecretError) as exc:
            log.warning("poller: orderbook for account %s failed: %s", account_id, exc)
            return None

    def _apply(self, account_id: int, book: list[BookOrder], result: dict) -> Outcome:
        """Plan on a read snapshot; take the write lock only when the book changes something. A busy day's
        book (thousands of orders) is seen again every second, and nearly all of it is unchanged: holding the
        writer lock to rewrite it would stall every other writer (a risk exit among them) for that long."""
        by_id = {o.orderid: o for o in book}
        with self.ctx.db.read() as s:
            changed = bool(book_changes(s, account_id, book, utcnow()))
            rows = book_followed_intents(s, account_id)
        todo = [r for r in rows if r[1] in by_id and behind_book(*r[2:], by_id[r[1]])]
        if not changed and not todo:
            return Outcome()
        need_avg = [oid for _, oid, _, _, _, avg in todo
                    if not avg and by_id[oid].order_status == "complete" and not by_id[oid].avg_price]
        avgs = fetch_avg_prices(self.ctx.client(account_id), need_avg) if need_avg else {}
        outcome, warnings = Outcome(), []
        ids = [r[0] for r in todo]
        # A few intents per transaction, not the whole book's in one: each intent's status, its execution and its
        # run change together (one intent is the unit that must be atomic), and between the chunks an order's
        # claim or an exit waiting for the writer lock goes first (db.engine.WriterLock). One transaction for a
        # busy second's fills held the lock for 25-80 ms (ORM work per intent, ~1 ms each). The first chunk also
        # brings broker_orders in line with the book (it runs when no intent is behind, too).
        chunks = [ids[k:k + APPLY_CHUNK] for k in range(0, len(ids), APPLY_CHUNK)] or [[]]
        for n, chunk in enumerate(chunks):
            try:
                with self.ctx.db.write() as s:
                    if n == 0:
                        upsert_orders(s, account_id, book)
                    applied = self._apply_intents(s, chunk, by_id, avgs)
            except Exception as exc:
                if n == 0:
                    raise
                # what the earlier chunks committed is reported below (their runs reloaded, their failed exits
                # logged); the rest is still behind the book, so the next poll applies it
                log.warning("poller: account %s: %d of %d book updates applied, the rest next poll: %s",
                            account_id, n * APPLY_CHUNK, len(ids), classify(exc) or exc)
                break
            for out, warn, updated in applied:  # only what committed
                if warn:
                    warnings.append(warn)
                result["updated"] += int(updated)
                outcome.merge(out)
        self.ctx.intents_changed.bump(account_id)
        self._report(warnings, outcome)
        return outcome

    @staticmethod
    def _apply_intents(s, ids: list[int], by_id: dict[str, BookOrder], avgs: dict[str, float]) -> list[tuple]:
        """Each intent's book status applied in ``s``: (outcome, warning, whether the intent changed) apiece."""
        applied, intents = [], intents_by_id(s, ids)
        loaded = load_outcome_rows(s, intents)  # noqa: F841 - referenced while applying (the session's map is weak)
        for intent in intents:
            if intent.broker_order_id not in by_id or not followed_by_book(intent.status, intent.broker_avg_price):
                continue  # changed since the snapshot; the next poll looks again
            before = (intent.status, intent.broker_filled_qty, intent.broker_avg_price)
            out, warn = apply_book_status(s, intent, by_id[intent.broker_order_id], COMPONENT, avgs.get)
            applied.append((out, warn, (intent.status, intent.broker_filled_qty, intent.broker_avg_price) != before))
        return applied

    def _report(self, warnings: list[str], outcome: Outcome) -> None:
        for w in warnings:
            if w not in self._warned:  # once per distinct problem, not every second
                self._warned.add(w)
                service_log(self.ctx.db, COMPONENT, "WARNING", w)
        for iid in outcome.failed_exits:
            service_log(self.ctx.db, COMPONENT, "ERROR",
                        f"exit intent {iid} rejected/cancelled by the broker; execution left '{LegStatus.EXITING}' "
                        "for the risk manager's retry")


def fetch_avg_prices(client, orderids: list[str]) -> dict[str, float]:
    """Average fill prices when the orderbook has none: the tradebook (one call), else orderstatus per order.
    Done before the write transaction, so no network call ever holds the SQLite write lock."""
    if not orderids:
        return {}
    out: dict[str, float] = {}
    try:
        sums: dict[str, tuple[float, float]] = {}
        for t in client.tradebook():
            q, p = float(t.get("quantity") or 0), float(t.get("average_price") or 0)
            qty, value = sums.get(str(t.get("orderid")), (0.0, 0.0))
            sums[str(t.get("orderid"))] = (qty + q, value + q * p)
        for oid in orderids:
            qty, value = sums.get(oid, (0.0, 0.0))
            if qty > 0 and value > 0:
                out[oid] = round(value / qty, 4)
            else:
                price = float(client.orderstatus(oid).get("average_price") or 0)
                if price:
                    out[oid] = price
    except (BrokerError, TypeError, ValueError) as exc:
        log.warning("average fill price unavailable: %s", exc)
    return out
