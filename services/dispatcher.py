"""Order dispatcher: queued intents -> OpenAlgo placeorder, exactly once.

Per intent:  claim (CAS queued->claimed) + account re-check + 'sent', all in ONE committed transaction,
then the POST, then the outcome. A 'placed' outcome is committed in the same transaction that claims the
account's next intent (one write transaction per order; always committed before that next POST); the other
outcomes, or 'placed' when the account has nothing more to send, get a transaction of their own:
    orderid                      -> placed (broker_order_id recorded; UNIQUE(account_id, broker_order_id))
    OrderRejected                -> rejected (broker message kept)
    AuthError (403)              -> rejected, and the account is marked invalid_key
    OrderOutcomeUnknown          -> unknown (timeout / 5xx after sending; the reconciler settles it, NEVER resent)
    RateLimited / cannot connect -> queued again (definitely not processed) + backoff for that account

Accounts are served in parallel (one worker at a time per account, from a thread pool); within an account the
intents go strictly one after another in (priority, created_at) order. New work is noticed within
``dispatch_poll_s`` (50 ms) or at once after ``wake()``.

A queued row that cannot be read (db.intents.UnreadableIntent) or would send nonsense (db.intents.intent_problem)
is denied with the reason in the transaction that found it, logged once in that same transaction, and the
account's next row is taken in the same pass: one bad row never holds up the rows behind it (a max-loss exit).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable

from sqlalchemy.exc import IntegrityError

from broker.errors import (AuthError, BrokerError, OrderOutcomeUnknown, OrderRejected, RateLimited,
                           TemporaryBrokerError)
from db.accounts import send_gate, set_status_in
from db.clock import entry_denial
from db.executions import Outcome, apply_intent_outcome
from db.intents import (IntentView, UnreadableIntent, claim_path, deny_unsendable, intent_problem, next_queued_view,
                        queued_accounts, transition)
from db.order_fsm import Status
from db.run_fsm import LegStatus
from db.vocab import ENTRIES_DENIED
from services.context import ServiceContext
from services.health import service_log, service_log_in

log = logging.getLogger("services.dispatcher")
COMPONENT = "dispatcher"


def _order_fields(iv: IntentView) -> dict:
    return dict(strategy=iv.strategy_tag, symbol=iv.symbol, exchange=iv.exchange, action=iv.action,
                quantity=iv.requested_qty, pricetype=iv.pricetype, product=iv.product, price=iv.limit_price,
                trigger_price=iv.trigger_price)


def _write(db):
    # db.write() holds the process-wide writer lock (db/engine.py), so dispatch threads hand over at once; an
    # order's claim and outcome go ahead of the background writers waiting for it
    return db.write(urgent=True)


@dataclass(frozen=True)
class Written:
    """What an exit write function wrote: ``value`` for its caller, and the accounts whose queued intents should
    be sent now (their most urgent one is claimed in the same transaction)."""
    value: object
    accounts: tuple[int, ...] = ()


class PlainExitWriter:
    """The exit writer where no dispatcher runs in this process (component tests, tools): the transaction only;
    ``wake`` tells whoever sends the orders."""

    def __init__(self, db, wake: Callable[[], None]):
        self.db, self.wake = db, wake

    def submit_now(self, write_fn: Callable[[object], Written | None], wait_s: float | None = None):
        with self.db.write(wait_s, urgent=True) as s:
            written = write_fn(s)
        if written is None:
            return None
        if written.accounts:
            self.wake()
        return written.value


class OrderDispatcher:
    def __init__(self, ctx: ServiceContext, worker_id: str | None = None, max_workers: int = 16,
                 on_change: Callable[[set[int]], None] | None = None, notifier=None):
        self.ctx = ctx
        self.notifier = notifier  # services.alerts.Notifier: rejected / unsendable exits, rejected keys
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.on_change = on_change
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dispatch")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy: dict[int, Future | None] = {}  # account_id -> its drain task (None: reserved for an exit POST)
        self._inflight: set[int] = set()  # intent ids between 'sent' and the recorded outcome
        self._backoff: dict[int, tuple[float, int]] = {}  # account_id -> (monotonic until, consecutive failures)
        self._changed_runs: set[int] = set()  # runs touched by denials in a caller's transaction (claim_next_in)
        self._errors: dict[object, str] = {}  # last error logged per account ("loop" for the loop): logged once
        self.stats = {**{str(st): 0 for st in (Status.PLACED, Status.REJECTED, Status.UNKNOWN, Status.DENIED)},
                      "requeued": 0, "loops": 0,
                      "errors": 0}

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wake(self) -> None:
        self._wake.set()

    def _reserved_or_paused(self, account_id: int) -> bool:
        return account_id in self._busy or self._backoff.get(account_id, (0.0, 0))[0] > time.monotonic()

    # ---- the exit writer: every exit cause (breach, retry, late fill, manual) comes through here ---------------
    def submit_now(self, write_fn: Callable[[object], Written | None], wait_s: float | None = None):
        """Write exits now and send them at once. In ONE write transaction (waiting at most ``wait_s`` for the
        write lock): ``write_fn(s)`` writes the exit intents the caller decided, then each account it names is
        reserved and its most urgent queued intent claimed (queued -> claimed -> sent, the drain's own CAS). After
        the commit each claimed intent's POST goes out (``send_claimed``) and a pool thread records its outcome and
        goes on with that account's queue; an account being drained or backing off keeps its exits in the queue
        for its worker. If the transaction fails nothing is reserved and the error propagates (the caller
        retries). Returns ``Written.value``."""
        claimed: list[IntentView] = []
        try:
            with self.ctx.db.write(wait_s, urgent=True) as s:
                written = write_fn(s)
                for account_id in written.accounts if written is not None else ():
                    view = self.claim_next_in(s, account_id)
                    if view is not None:
                        claimed.append(view)
        except BaseException:
            for view in claimed:
                self.release_claim(view.account_id, view)
            raise
        if written is None:
            return None
        self.send_claimed(claimed)
        if len(claimed) < len(written.accounts):
            self.wake()
        return written.value

    # ---- the exit hand-off: claim in the exit's transaction, POST at once, the answer on a pool thread ---------
    def claim_next_in(self, s, account_id: int) -> IntentView | None:
        """Inside the CALLER's write transaction (the one that wrote exit intents): reserve the account for this
        process and claim its most urgent queued intent (queued -> claimed -> sent, same CAS and events as the
        drain), so the tick -> exit path needs no second transaction and no pass of the dispatcher loop. Returns
        None (nothing reserved) when the account is being drained, paused, denied, or the dispatcher is stopped.
        After commit call ``send_claimed``; if the transaction rolls back call ``release_claim``."""
        with self._lock:
            if self._stop.is_set() or not self.is_alive() or self._reserved_or_paused(account_id):
                return None
            self._busy[account_id] = None  # reserved: the loop leaves this account alone
        try:
            nxt, refused = self._next_sendable(s, account_id)  # unreadable/invalid rows ahead are denied in s too
            if nxt is not None and self._denial_reason(s, account_id, nxt.purpose, nxt.product):
                nxt = None  # the drain denies it, with its reason and alarm, in a transaction of its own
            with self._lock:  # on_change runs after the caller's commit, on a dispatcher thread
                self._changed_runs |= refused.run_ids
            if nxt is None or not claim_path(s, nxt.id, [Status.QUEUED, Status.CLAIMED, Status.SENT], COMPONENT,
                                             "placeorder sent", claimed_by=self.worker_id):
                self.release_claim(account_id)
                return None
        except BaseException:
            self.release_claim(account_id)
            raise
        with self._lock:
            self._inflight.add(nxt.id)
        return replace(nxt, status=Status.SENT.value)

    def release_claim(self, account_id: int, view: IntentView | None = None) -> None:
        """The claiming transaction did not commit: nothing was claimed; give the account back to the loop."""
        with self._lock:
            self._busy.pop(account_id, None)
            if view is not None:
                self._inflight.discard(view.id)
        self._wake.set()

    def send_claimed(self, views: list[IntentView]) -> None:
        """After ``claim_next_in`` committed: each placeorder request is written at once on THIS thread when it can
        go without waiting (a rate token free, a kept-alive connection idle or a new one made within 3 ms:
        ``start_placeorder(wait=False)``), and a pool thread reads its answer and records the outcome as in the
        drain, then sends the rest of the account's queue in order. Otherwise the pool thread POSTs it. The caller
        is often the market-data thread: it never waits for a slow connect, a token or the broker's answer (one
        slow broker must not hold up other runs' exits), and handing the request itself to another thread cost
        the GIL hand-over first.

        Once the requests are written this thread yields its CPU once (``sched_yield``): a gateway on this machine
        was just woken by them, and Linux often queues the woken task on the waker's CPU expecting the waker to
        block, as a client waiting for its answer does; this thread goes on working instead (its log line, the
        next ticks) and the gateway's read of the exit waited behind it (written -> received 0.51-0.59 ms at the
        median here, against 0.21-0.30 for a client that blocks). With nobody queued the yield returns at once.
        The pool hand-offs come after it, so their wake-ups do not land in front of the gateway either."""
        calls = [(view, None if self._stop.is_set() else self._start_post(view)) for view in views]
        if any(call is not None for _, call in calls):
            os.sched_yield()
        for view, call in calls:
            self._hand_off(view, call)

    def _hand_off(self, view: IntentView, call) -> None:
        with self._lock:
            if not self._stop.is_set():
                self._busy[view.account_id] = self._pool.submit(self._drain_account, view.account_id, None, view,
                                                                call)
                return
        if call is not None:  # stopped between the POST and its hand-off: nobody reads the answer
            log.warning("intent %s: placeorder sent while the dispatcher stopped; the reconciler settles it", view.id)
        # stopping: the intent stays 'sent' with nothing recorded; the reconciler settles it, never resends it
        self.release_claim(view.account_id, view)

    def _start_post(self, view: IntentView):
        """Write ``view``'s placeorder request now if it can go without waiting; None (nothing sent) otherwise."""
        try:
            return self.ctx.client(view.account_id).start_placeorder(**_order_fields(view), wait=False)
        except Exception:  # noqa: BLE001 - e.g. no client for the account: the pool thread's POST reports it
            return None

    def is_alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def busy_accounts(self) -> set[int]:
        with self._lock:
            return set(self._busy)

    def wait_idle(self, account_ids, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until none of these accounts is being drained: the exits already claimed
        for them (a limit trip's first closes) are posted and their outcomes recorded. True when idle. Polled in
        1 ms sleeps, which leave the GIL to the thread doing the POST."""
        ids, deadline = set(account_ids), time.monotonic() + timeout_s
        while True:
            with self._lock:
                if not ids & self._busy.keys():
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def inflight_ids(self) -> set[int]:
        """Intents this process is sending right now (the reconciler leaves them alone)."""
        with self._lock:
            return set(self._inflight)

    def _loop(self) -> None:
        poll = self.ctx.settings.service.dispatch_poll_s
        while not self._stop.is_set():
            self._wake.wait(poll)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._schedule()
                self._flush_changed_runs()
                self.stats["loops"] += 1
                self._errors.pop("loop", None)
            except Exception as exc:  # never let the loop die; the DB may be briefly locked
                if self._first_time("loop", exc):
                    log.exception("dispatcher loop error")
                time.sleep(min(1.0, poll * 10))

    # ---- scheduling ------------------------------------------------------------------------------------------
    def run_once(self, timeout: float = 60.0) -> None:
        """Dispatch everything queued now (parallel across accounts) and wait for it to finish."""
        futures = self._schedule()
        wait(futures, timeout=timeout)

    def _schedule(self) -> list[Future]:
        with self.ctx.db.read() as s:  # every dispatch_poll_s: a plain SELECT (the index on status)
            accounts = queued_accounts(s)
        started = []
        with self._lock:
            for acct in accounts:
                if self._reserved_or_paused(acct):
                    continue
                fut = self._pool.submit(self._drain_account, acct)
                self._busy[acct] = fut
                started.append(fut)
        return started

    def _drain_account(self, account_id: int, placed: tuple[IntentView, str] | None = None,
                       first: IntentView | None = None, call=None) -> None:
        """Send this account's queued intents one after another. The 'placed' outcome of a POST is committed in
        the SAME transaction that claims the account's next intent and marks it 'sent' (one write transaction
        per order instead of two), so it is always committed before that next POST. ``first``: an intent
        already claimed and committed 'sent' by ``claim_next_in`` (and marked in flight): POST it first, or,
        with ``call`` (its request already written by ``send_claimed``), read its answer."""
        try:
            while not self._stop.is_set() or call is not None:
                if first is not None:
                    iv, first = first, None
                else:
                    iv, placed = self._record_and_claim_next(account_id, placed), None
                if iv is None:
                    break
                with self._lock:
                    self._inflight.add(iv.id)
                go_on, placed = self._send(iv, call)
                call = None
                if placed is None:
                    with self._lock:
                        self._inflight.discard(iv.id)
                if not go_on:
                    break
            self._errors.pop(account_id, None)
        except Exception as exc:
            if self._first_time(account_id, exc):  # the same error again on every pass is not news
                log.exception("dispatch worker for account %s failed", account_id)
                service_log(self.ctx.db, COMPONENT, "ERROR", f"account {account_id}: dispatch error {exc!r}")
            self._set_backoff(account_id)
        finally:
            if first is not None:  # stopped before posting it: stays 'sent', the reconciler settles it
                with self._lock:
                    self._inflight.discard(first.id)
            if placed is not None:  # stopping: commit the last outcome on its own
                try:
                    self._record_placed(*placed)
                except Exception:  # left 'sent': the reconciler settles it from the orderbook, never resends
                    log.exception("recording the outcome of intent %s failed", placed[0].id)
                finally:
                    with self._lock:
                        self._inflight.discard(placed[0].id)
            with self._lock:
                self._busy.pop(account_id, None)
            self._flush_changed_runs()
            self._wake.set()  # anything queued meanwhile is picked up at once

    def _first_time(self, key: object, exc: Exception) -> bool:
        """True if ``exc`` is not the error last logged for ``key`` (an account, or the loop)."""
        self.stats["errors"] += 1
        text = f"{type(exc).__name__}: {exc}"
        with self._lock:
            if self._errors.get(key) == text:
                return False
            self._errors[key] = text
        return True

    def _flush_changed_runs(self) -> None:
        with self._lock:
            runs, self._changed_runs = self._changed_runs, set()
        self._runs_changed(runs)

    # ---- one intent ------------------------------------------------------------------------------------------
    def _record_and_claim_next(self, account_id: int, placed: tuple[IntentView, str] | None) -> IntentView | None:
        """ONE write transaction: the previous intent's 'placed' outcome (if any), then the account's next queued
        intent: CAS queued->claimed->sent (or ->denied after the account re-check), with one order_events row per
        step. It commits before the POST of that next intent. Returns the intent to send, or None when the
        account has nothing left to send. Core statements only: this is the hot path of every order."""
        while True:
            prev_ok, view, denied, denial, outcome, refused = False, None, None, "", Outcome(), Outcome()
            try:
                with _write(self.ctx.db) as s:
                    if placed is not None:
                        # 'placed' changes no execution or run state (fills do), so no bookkeeping here
                        prev_ok = transition(s, placed[0].id, Status.SENT, Status.PLACED, COMPONENT,
                                             f"broker order {placed[1]}", broker_order_id=placed[1])
                    nxt, refused = self._next_sendable(s, account_id)
                    if nxt is not None:
                        denial = self._denial_reason(s, nxt.account_id, nxt.purpose, nxt.product)
                        if denial and claim_path(s, nxt.id, [Status.QUEUED, Status.CLAIMED, Status.DENIED],
                                                 COMPONENT, denial, claimed_by=self.worker_id):
                            outcome, denied = apply_intent_outcome(s, nxt.id), nxt
                        elif not denial and claim_path(s, nxt.id, [Status.QUEUED, Status.CLAIMED, Status.SENT],
                                                       COMPONENT, "placeorder sent", claimed_by=self.worker_id):
                            view = replace(nxt, status=Status.SENT.value)
            except IntegrityError:
                if placed is None:
                    raise
                # that broker order id is already linked to another intent: record the previous outcome on its
                # own ('unknown', for the reconciler), then claim the next intent without it
                try:
                    self._record_placed(*placed)
                finally:
                    with self._lock:
                        self._inflight.discard(placed[0].id)
                placed = None
                continue
            if placed is not None:
                with self._lock:
                    self._inflight.discard(placed[0].id)
                self._after_record(placed[0], Status.PLACED, f"broker order {placed[1]}", prev_ok, Outcome())
                placed = None
            self._runs_changed(refused.run_ids)
            if denied is not None:
                self.stats[Status.DENIED.value] += 1
                is_exit = denied.purpose == "exit"
                service_log(self.ctx.db, COMPONENT, "ERROR" if is_exit else "WARNING",
                            f"intent {denied.id} denied: {denial}")
                if is_exit:  # an exit that cannot be sent at all: the trader must act now
                    self._alert("exit_not_sendable", f"EXIT NOT SENT: intent {denied.id} ({denied.action} "
                                f"{denied.requested_qty} {denied.symbol}) cannot be sent: {denial}; the position "
                                "is open, act manually", f"intent {denied.id}")
                self._after(outcome, denied.id, denied.account_id)
                continue  # the account's next intent, if any
            if view is None and nxt is not None:
                continue  # another process claimed that one first: look again
            return view

    def _next_sendable(self, s, account_id: int) -> tuple[IntentView | None, Outcome]:
        """In the caller's write transaction: the account's next queued intent that can be sent. Rows ahead of it
        that cannot be read or are invalid are denied here (queued -> denied: never sent, nothing to claim), with
        the execution bookkeeping and one log entry each, written in this same transaction, so a row is
        reported exactly when its denial commits. Returns (intent or None, the bookkeeping of those denials;
        their exit failures are already in the log entry)."""
        refused = Outcome()
        while True:
            try:
                nxt = next_queued_view(s, account_id)
                problem = "" if nxt is None else intent_problem(nxt)
                bad_id = None if nxt is None else nxt.id
            except UnreadableIntent as exc:
                nxt, problem, bad_id = None, exc.reason, exc.intent_id
            if not problem:
                return nxt, refused
            if not deny_unsendable(s, bad_id, problem, COMPONENT):  # cannot happen under BEGIN IMMEDIATE
                raise RuntimeError(f"intent {bad_id} left '{Status.QUEUED}' while it was being denied")
            out = apply_intent_outcome(s, bad_id)
            self.stats[Status.DENIED.value] += 1
            exit_note = (f"; execution left '{LegStatus.EXITING}' for the risk manager to retry"
                         if out.failed_exits else "")
            service_log_in(s, COMPONENT, "ERROR" if out.failed_exits else "WARNING",
                           f"intent {bad_id} denied: {problem}{exit_note}")
            refused.run_ids |= out.run_ids

    def _denial_reason(self, s, account_id: int, purpose: str, product: str = "") -> str:
        """Why this intent may not be sent now ('' = send it). The account's state (deactivated, key rejected,
        reducing or halted) and the time of day (no new entries after the product's cut-off, db.clock) deny new
        entries only: an exit is sent whenever it can be sent at all (the account exists and a client can be
        built for it), and a key the broker rejected is tried again for an exit, since the trader may have fixed
        it at the gateway; if it is rejected again, that is alarmed at once."""
        acct = send_gate(s, account_id)
        if acct is None:
            return f"account {account_id} no longer exists"
        name = acct.name
        if purpose != "exit":
            if not acct.is_active:
                return f"account '{name}' is deactivated"
            if acct.status == "invalid_key":
                return f"account '{name}' has an invalid API key; update it in Accounts"
            if acct.trading_state in ENTRIES_DENIED:
                return f"account {acct.trading_state}: {acct.trading_reason or 'by the trader'}"
            late = entry_denial(self.ctx.settings.market, product)
            if late:
                return late
        try:
            self.ctx.client(account_id)
        except Exception as exc:  # key cannot be decrypted, bad URL: nothing can be sent
            return f"account '{name}' cannot be used: {type(exc).__name__}"
        return ""

    def _send(self, iv: IntentView, call=None) -> tuple[bool, tuple[IntentView, str] | None]:
        """POST placeorder once (``call``: its request is written already; read the answer). Returns (keep
        draining?, (intent, order id) when the broker answered with an order id: the caller commits 'placed'
        together with the next claim). Other outcomes are recorded here."""
        client = self.ctx.client(iv.account_id) if call is None else None  # outside the try: nothing sent yet
        try:
            oid = call.result() if call is not None else client.placeorder(**_order_fields(iv))
        except OrderOutcomeUnknown as exc:
            self._record(iv, Status.UNKNOWN, exc.message)
        except RateLimited as exc:
            self._record(iv, Status.QUEUED, f"rate limited, not processed: {exc.message}", claimed_by="")
            self._set_backoff(iv.account_id)
            return False, None
        except TemporaryBrokerError as exc:  # could not connect: nothing was sent
            self._record(iv, Status.QUEUED, f"not sent: {exc.message}", claimed_by="")
            self._set_backoff(iv.account_id)
            return False, None
        except AuthError as exc:
            # one transaction: nobody can see the rejection without the account marked invalid (or vice versa)
            msg = exc.message
            self._record(iv, Status.REJECTED, f"authentication failed: {msg}",
                         also=lambda s: set_status_in(s, iv.account_id, "invalid_key", msg))
            self.ctx.drop_client(iv.account_id)
            service_log(self.ctx.db, COMPONENT, "ERROR", f"account {iv.account_id}: API key rejected (403)")
            self._alert("key_rejected", f"account {iv.account_id}: the broker rejected the API key (403) for "
                        f"{iv.purpose} {iv.action} {iv.requested_qty} {iv.symbol}: {msg}"
                        + ("; this EXIT was not placed, the position is open" if iv.purpose == "exit" else ""),
                        f"account {iv.account_id}")
        except OrderRejected as exc:
            self._record(iv, Status.REJECTED, exc.message or "rejected by broker")
        except (BrokerError, Exception) as exc:  # anything else after sending: outcome cannot be known
            log.exception("placeorder for intent %s failed unexpectedly", iv.id)
            self._record(iv, Status.UNKNOWN, f"unexpected error after sending: {type(exc).__name__}")
        else:
            self._backoff.pop(iv.account_id, None)
            return True, (iv, str(oid))
        self._backoff.pop(iv.account_id, None)
        return True, None

    def _record_placed(self, iv: IntentView, oid: str) -> None:
        try:
            self._record(iv, Status.PLACED, f"broker order {oid}", broker_order_id=oid)
        except IntegrityError:  # that broker id is already linked to another intent: let the reconciler look
            self._record(iv, Status.UNKNOWN, f"broker order {oid} already linked to another intent")
            service_log(self.ctx.db, COMPONENT, "ERROR", f"intent {iv.id}: duplicate broker order id {oid}")

    def _record(self, iv: IntentView, to: Status, reason: str, also=None, **fields) -> None:
        """An outcome in its own transaction (with ``also(s)`` in the same one). If the reconciler got there
        first, keep its verdict."""
        with _write(self.ctx.db) as s:
            ok = transition(s, iv.id, Status.SENT, to, COMPONENT, reason, **fields)
            if also is not None:
                also(s)
            outcome = apply_intent_outcome(s, iv.id) if ok else Outcome()
        self._after_record(iv, to, reason, ok, outcome)

    def _after_record(self, iv: IntentView, to: Status, reason: str, ok: bool, outcome: Outcome) -> None:
        self.stats["requeued" if to == Status.QUEUED else to.value] += 1
        if not ok:
            service_log(self.ctx.db, COMPONENT, "WARNING",
                        f"intent {iv.id}: outcome '{to.value}' ({reason}) arrived after it left '{Status.SENT}'")
        elif to == Status.REJECTED:
            what = f"intent {iv.id} ({iv.purpose} {iv.action} {iv.requested_qty} {iv.symbol}) rejected: {reason}"
            service_log(self.ctx.db, COMPONENT, "ERROR" if iv.purpose == "exit" else "WARNING", what)
            if not reason.startswith("authentication failed"):  # a 403 has its own alert
                self._alert("exit_rejected" if iv.purpose == "exit" else "order_rejected", what,
                            f"intent {iv.id}" if iv.purpose == "exit" else f"account {iv.account_id}")
        self._after(outcome, iv.id, iv.account_id)

    def _after(self, outcome: Outcome, intent_id: int, account_id: int) -> None:
        """After the commit: a failed exit is reported (ERROR), changed runs go to ``on_change``."""
        self.ctx.intents_changed.bump(account_id)
        if outcome.failed_exits:
            service_log(self.ctx.db, COMPONENT, "ERROR", f"exit intent {intent_id} failed; execution left "
                                                          f"'{LegStatus.EXITING}' for the risk manager to retry")
        self._runs_changed(outcome.run_ids)

    def _runs_changed(self, run_ids: set[int]) -> None:
        if run_ids and self.on_change:
            try:
                self.on_change(run_ids)
            except Exception:
                log.exception("on_change callback failed")

    def _alert(self, kind: str, message: str, subject: str) -> None:
        """Alerts are throttled per (kind, subject): one per exit intent, one per account for entries."""
        if self.notifier is not None:
            self.notifier.alert(kind, message, subject=subject)

    def _set_backoff(self, account_id: int) -> None:
        b = self.ctx.settings.broker
        with self._lock:
            n = self._backoff.get(account_id, (0.0, 0))[1]
            delay = min(b.backoff_max_s, b.backoff_base_s * (2 ** n))
            self._backoff[account_id] = (time.monotonic() + delay, n + 1)
        log.warning("account %s paused %.2fs before the next order", account_id, delay)
