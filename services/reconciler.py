"""Reconciler: settles intents whose outcome at the broker is not known, against the account's orderbook.

Runs once at start-up BEFORE the dispatcher, poller and risk manager (``startup()``: orphaned 'claimed' rows go
back to the queue, then a pass), then every ``reconcile_interval_s``. It NEVER places an order.

Targets: 'unknown' intents, and 'sent' intents older than the client's timeouts (left by a crash between the
'sent' commit and the outcome). Matching, per account (one orderbook call):
  1. by broker_order_id when known;
  2. else by (symbol, exchange, action, quantity, product, strategy tag, broker timestamp within
     ``reconcile_window_s`` of sent_at) among orders not linked to another intent; the oldest wins, and more
     than one candidate is logged as an ambiguous match (WARNING).
Found -> placed / filled / rejected / cancelled as the broker says. Not found -> the check is counted; after
``reconcile_max_checks`` checks -> rejected "not found at broker after N checks (never placed)".
Every active account's orderbook is read once per pass (also with nothing pending), so orders placed outside
AlgoMirror are adopted into broker_orders as external.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Callable

from broker.errors import BrokerError
from db.clock import offset as market_offset
from db.broker_orders import BookOrder, book_changes, linked_order_ids, parse_book, upsert_orders
from db.crypto import SecretError
from db.accounts import list_accounts
from db.executions import Outcome, apply_intent_outcome
from db.intents import reconciler_owned, requeue_orphan_claims, set_reconcile_checks, transition
from db.models import OrderIntent, utcnow
from db.order_fsm import RECONCILER_OWNED, Status
from db.run_fsm import LegStatus
from services.context import ServiceContext
from services.health import service_log
from services.order_reports import apply_book_status

log = logging.getLogger("services.reconciler")
COMPONENT = "reconciler"


class Reconciler:
    def __init__(self, ctx: ServiceContext, inflight: Callable[[], set[int]] | None = None,
                 on_change: Callable[[set[int]], None] | None = None, sent_grace_s: float | None = None,
                 notifier=None):
        self.ctx = ctx
        self.notifier = notifier
        self.inflight = inflight or (lambda: set())
        self.on_change = on_change
        b = ctx.settings.broker
        # A 'sent' row younger than this may still be waiting for its HTTP answer (token bucket + timeouts).
        self.sent_grace_s = sent_grace_s if sent_grace_s is not None else b.connect_timeout_s + b.read_timeout_s + 5
        self.last_result: dict = {}

    def startup(self) -> dict:
        with self.ctx.db.write() as s:
            n = requeue_orphan_claims(s)
        if n:
            service_log(self.ctx.db, COMPONENT, "WARNING", f"{n} orphaned claimed intent(s) returned to the queue")
        return self.run_once(include_all_sent=True)

    def run_once(self, include_all_sent: bool = False) -> dict:
        """One pass over every account with unsettled intents. Returns counts for tests and the heartbeat."""
        pending = self._pending(include_all_sent)
        accounts = {a.id for a in list_accounts(self.ctx.db, active_only=True) if a.status != "invalid_key"}
        result = {"checked": 0, "resolved": 0, Status.REJECTED.value: 0, "errors": 0, "adopted": 0}
        for account_id in sorted(accounts | set(pending)):
            ids = pending.get(account_id, [])
            try:
                book = parse_book(self.ctx.client(account_id).orderbook())
            except (BrokerError, KeyError, SecretError) as exc:
                result["errors"] += 1
                log.warning("reconciler: orderbook for account %s unavailable: %s", account_id, exc)
                continue
            self._reconcile_account(account_id, ids, book, result)
        self.last_result = result
        return result

    def _pending(self, include_all_sent: bool) -> dict[int, list[int]]:
        cutoff = utcnow() - timedelta(seconds=0 if include_all_sent else self.sent_grace_s)
        skip = self.inflight()
        with self.ctx.db.read() as s:
            rows = reconciler_owned(s)
        out: dict[int, list[int]] = {}
        for acct, iid, status, sent_at in rows:
            if iid in skip or (status == Status.SENT.value and sent_at and sent_at > cutoff):
                continue
            out.setdefault(acct, []).append(iid)
        return out

    def _reconcile_account(self, account_id: int, ids: list[int], book: list[BookOrder], result: dict) -> None:
        messages: list[tuple[str, str]] = []
        alerts: list[tuple[str, str, str]] = []  # sent after the commit, like the log lines
        outcome = Outcome()
        if not ids:  # nothing to settle: take the write lock only if the book changed something
            with self.ctx.db.read() as s:
                if not book_changes(s, account_id, book, utcnow()):
                    return
        with self.ctx.db.write() as s:
            result["adopted"] += upsert_orders(s, account_id, book)
            taken = linked_order_ids(s, account_id)
            for iid in ids:
                intent = s.get(OrderIntent, iid)
                if intent is None or intent.status not in RECONCILER_OWNED:
                    continue
                result["checked"] += 1
                outcome.merge(self._settle(s, intent, book, taken, messages, result, alerts))
            upsert_orders(s, account_id, book)  # link the newly matched orders
        for level, msg in messages:
            service_log(self.ctx.db, COMPONENT, level, msg)
        for kind, msg, subject in alerts:
            if self.notifier is not None:
                self.notifier.alert(kind, msg, subject=subject)
        if outcome.failed_exits:
            service_log(self.ctx.db, COMPONENT, "ERROR", f"exit intent(s) {outcome.failed_exits} never reached "
                                                          f"the broker; executions left '{LegStatus.EXITING}' for a "
                                                          "retry")
        if outcome.run_ids and self.on_change:
            self.on_change(outcome.run_ids)

    def _settle(self, s, intent: OrderIntent, book: list[BookOrder], taken: set[str],
                messages: list, result: dict, alerts: list) -> Outcome:
        match = self._find(intent, book, taken, messages)
        if match is not None:
            taken.add(match.orderid)
            out, warn = apply_book_status(s, intent, match, COMPONENT)
            if warn:
                messages.append(("WARNING", warn))
            else:
                result["resolved"] += 1
                messages.append(("INFO", f"intent {intent.id} ({intent.status}) matched broker order "
                                         f"{match.orderid} ({match.order_status}); not resent"))
            return out
        return self._count_miss(s, intent, messages, result, alerts)

    def _find(self, intent: OrderIntent, book: list[BookOrder], taken: set[str], messages: list) -> BookOrder | None:
        if intent.broker_order_id:
            return next((o for o in book if o.orderid == intent.broker_order_id), None)
        window = timedelta(seconds=self.ctx.settings.service.reconcile_window_s)
        # broker times are market time (IST on the exchange's clock); ours are the real clock's: a market clock
        # moved for a test or the demo (db.clock, the simulator's the same) is moved back here
        ref = (intent.sent_at or intent.created_at) + market_offset()
        cands = [o for o in book if o.orderid not in taken and self._same_order(intent, o)
                 and (o.ts_utc is None or abs(o.ts_utc - ref) <= window)]
        if not cands:
            return None
        cands.sort(key=lambda o: (o.ts_utc is None, o.ts_utc or ref, o.orderid))
        if len(cands) > 1:
            messages.append(("WARNING", f"intent {intent.id}: ambiguous match, {len(cands)} broker orders fit "
                                        f"({', '.join(o.orderid for o in cands[:5])}); took the oldest "
                                        f"{cands[0].orderid}"))
        return cands[0]

    @staticmethod
    def _same_order(intent: OrderIntent, o: BookOrder) -> bool:
        return (o.symbol == intent.symbol and o.exchange in ("", intent.exchange) and o.action == intent.action
                and o.quantity == intent.requested_qty and o.product in ("", intent.product)
                and (o.strategy is None or o.strategy == intent.strategy_tag))

    def _count_miss(self, s, intent: OrderIntent, messages: list, result: dict, alerts: list) -> Outcome:
        checks = intent.reconcile_checks + 1
        limit = self.ctx.settings.service.reconcile_max_checks
        if checks < limit:
            set_reconcile_checks(s, intent.id, checks)
            return Outcome()
        reason = f"not found at broker after {checks} checks (never placed)"
        if not transition(s, intent.id, intent.status, Status.REJECTED, COMPONENT, reason, reconcile_checks=checks):
            return Outcome()
        result[Status.REJECTED.value] += 1
        what = f"intent {intent.id} ({intent.purpose} {intent.action} {intent.requested_qty} {intent.symbol})"
        messages.append(("WARNING", f"{what} settled rejected: {reason}"))
        # A lost entry leaves its run without that leg (a short without its hedge); a lost exit leaves the
        # position open until the retry: either way the trader hears of it, as of a rejection by the broker.
        if intent.purpose == "exit":
            alerts.append(("exit_rejected", f"EXIT {what} never reached the broker; the risk manager retries it",
                           f"intent {intent.id}"))
        else:
            left = f"run {intent.run_id} is without this leg" if intent.run_id else "nothing was placed"
            alerts.append(("order_rejected", f"{what} never reached the broker (the service stopped while sending "
                                             f"it; never resent): {left}", f"account {intent.account_id}"))
        return apply_intent_outcome(s, intent.id)
