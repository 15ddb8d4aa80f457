"""Flatten (the kill switch): cancel every working order of an account and close every position it holds at the
broker, then leave it halted. One account, or all of them (in parallel: a slow broker holds up only its own).
The time-based square-off (services/square_off.py) runs the same steps for one product, without the halt
(``CloseJob``).

Per account, in this order:
  1. halted (new entries denied with the reason), its queued entries withdrawn and its Quick Order stops
     cancelled (the flatten closes what they protect), in one transaction;
  2. every live strategy run exits through the risk manager's one exit path (reason 'flatten');
  3. cancelorder for every order still working at the broker that is not one of our exits (Quick Order limits,
     orders placed outside the app);
  4. once the run exits have settled (bounded wait), the positionbook is read and every position still open,
     net of the exits still in flight, gets a MARKET exit intent (BUY exits first), sent by the dispatcher like
     any order (exactly once; reconciled if its outcome is unknown);
  5. the outcome (cancelled n/N, closed n/N, and what could not be closed, with the broker's reason) is a risk
     event and the command's result; anything left open is an alert.
The command stays 'queued' until the flatten has finished, so a service killed in the middle runs it again at
start-up; every step is idempotent (db/flatten.py: the exits' client_order_ids derive from the command), so the
second run closes what is left and never places anything twice. A daily limit's trip writes the first closes in
its own transaction (db.flatten.early_closes, step 0 of the same command); the flatten skips those positions
while their exits are live and closes whatever is left once they settled. One close job of an account runs at a
time (a flatten, a square-off): two at once would each read the positionbook before the other's exits are
written and close the same units twice.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from broker.errors import BrokerError
from db.clock import ist_now_str
from db.accounts import set_trading_state
from db.errors import DbError
from db.flatten import (WORKING_AT_BROKER, all_at_broker, busy_keys, close_intents, live_orders, live_run_ids,
                        withdraw_queued_entries, working_orders_of_ours, write_close_exit)
from db.models import RiskEvent
from db.order_fsm import Status
from db.stops import cancel_account_stops
from db.vocab import CommandStatus, TradingState
from services.context import ServiceContext
from services.control import DeferredRuns, finish_deferred
from services.dispatcher import PlainExitWriter, Written

log = logging.getLogger("services.flatten")
FIRST_EXITS_S = 0.05  # how long a flatten lets the exits already claimed for its accounts go out first


@dataclass(frozen=True)
class CloseJob:
    """What to close and how it is labelled: a flatten (everything, the account halted) or a square-off (one
    product, the account's trading state untouched)."""
    key: str  # the exits' client_order_id base (db.flatten.close_coid)
    tag: str  # the exits' strategy tag (and the cancels'), the job's own
    source: str  # order_intents.source of its exits, the risk event's type
    label: str  # in reasons and logs
    product: str | None = None  # None = every product
    halt: bool = True
    run_reason: str = "flatten"  # strategy runs exit with this reason

    @classmethod
    def flatten(cls, command_id: int) -> "CloseJob":
        return cls(f"flatten:{command_id}", f"flatten-{command_id}", "flatten", f"flatten #{command_id}")

    @classmethod
    def square_off(cls, day: str, product: str) -> "CloseJob":
        return cls(f"square_off:{day}:{product}", f"sqoff-{day.replace('-', '')}-{product}", "square_off",
                   f"square-off {product} {day}", product=product, halt=False, run_reason="square_off")


class Flattener:
    def __init__(self, ctx: ServiceContext, risk, wake, notifier=None, settle_s: float = 20.0, poll_now=None,
                 submit=None, wait_idle=None):
        """``risk``: a getter for the risk manager (exits of strategy runs); ``wake``: the dispatcher's wake;
        ``poll_now(account_id)``: the poller's read of one account's orderbook (fills seen without waiting a cycle);
        ``submit``: the dispatcher's ``submit_now`` (the exits are claimed in their own transaction and posted at
        once, not on the dispatcher loop's next pass); without one, the exits are written and the loop woken.
        ``wait_idle(account_ids, timeout_s)``: the dispatcher's (the flatten lets exits already claimed go out
        first)."""
        self.ctx, self.risk, self.notifier, self.settle_s = ctx, risk, notifier, settle_s
        self.wait_idle = wait_idle
        self.poll_now = poll_now
        self.submit = submit or PlainExitWriter(ctx.db, wake).submit_now
        self._runs = DeferredRuns("flatten")
        self._lock = threading.Lock()
        # One close job of an account at a time: two at once (the trader's Flatten all while a daily limit trips,
        # a square-off while a flatten runs) would each read the positionbook before the other's exits are
        # written and close the same units twice.
        self._account_locks: dict[int, threading.Lock] = {}

    def start(self, command_id: int, account_ids: list[int]) -> bool:
        """Run the flatten of command ``command_id`` on a thread of its own (once: False if it runs already)."""
        return self._runs.start(command_id, self._run, account_ids)

    def _run(self, command_id: int, account_ids: list[int]) -> None:
        try:
            if self.wait_idle is not None:
                # A limit trip claimed its first closes in its own transaction and a dispatcher thread is POSTing
                # them now: this thread's reads and broker calls would take the GIL (and the broker's attention)
                # from that POST: most of bench_account_limit's tick -> first exit tail came from here (commit ->
                # received p99 12-13 ms -> 6.9 ms, bench/README.md). Bounded: a slow broker delays the flatten by
                # at most this.
                self.wait_idle(account_ids, FIRST_EXITS_S)
            summary, ok = self.flatten(command_id, account_ids)
            status = CommandStatus.DONE
        except Exception as exc:  # noqa: BLE001 - reported on the command and as an alert
            log.exception("flatten %s failed", command_id)
            summary, ok, status = f"flatten failed: {type(exc).__name__}: {exc}", False, CommandStatus.FAILED
        self._alert("flatten_done" if ok else "flatten_incomplete", f"flatten #{command_id}: {summary}",
                    f"command {command_id}")
        self._finish(command_id, status, summary)

    def _finish(self, command_id: int, status: CommandStatus, summary: str) -> None:
        finish_deferred(self.ctx.db, command_id, status, summary, "flatten", 20)

    def flatten(self, command_id: int, account_ids: list[int]) -> tuple[str, bool]:
        """Flatten the accounts (in parallel); returns (summary, everything closed)."""
        summary, ok, _idle = self.close_all(CloseJob.flatten(command_id), account_ids)
        return summary, ok

    def close_all(self, job: CloseJob, account_ids: list[int]) -> tuple[str, bool, bool]:
        """``close_account`` of every account, in parallel; returns (summary, everything closed, nothing to do)."""
        prepared = self._prepare_all(job, account_ids) if len(account_ids) > 1 else {}
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(account_ids))), thread_name_prefix="flatten") as pool:
            results = list(pool.map(lambda a: self._guarded(job, a, prepared.get(a)), account_ids))
        return ("; ".join(r for r, _, _ in results) or "no accounts", all(ok for _, ok, _ in results),
                all(idle for _, _, idle in results))

    def account_lock(self, account_id: int) -> threading.Lock:
        """The lock a close job of the account holds while it runs (a position's square-off takes it too)."""
        with self._lock:
            return self._account_locks.setdefault(account_id, threading.Lock())

    def _prepare_all(self, job: CloseJob, account_ids: list[int]) -> dict[int, tuple[int, list[int]]]:
        """Step 0 of every account in ONE transaction: ten accounts' own transactions, one after another behind
        the writer lock, started the last account's broker calls ~100 ms after the first's. If it fails, each
        account does its own (``close_account``), so one bad row cannot stop the others' close."""
        try:
            with self.ctx.db.write() as s:
                return {a: self._prepare(s, job, a) for a in account_ids}
        except Exception:  # noqa: BLE001 - retried per account, where a failure is reported for that account
            log.exception("%s: the accounts' first step in one transaction failed; each account tries its own",
                          job.label)
            return {}

    def _prepare(self, s, job: CloseJob, account_id: int) -> tuple[int, list[int]]:
        """In ``s``: halted (a flatten), its queued entries withdrawn and its Quick Order stops cancelled; returns
        (entries withdrawn, the live runs to exit)."""
        when = ist_now_str()
        if job.halt:
            set_trading_state(s, account_id, TradingState.HALTED, f"{job.label} at {when}", "service")
        withdrawn = withdraw_queued_entries(s, account_id, job.label, job.product)
        # the job closes what the Quick Order stops (of its product) protect: they must not exit it a second time
        cancel_account_stops(s, account_id, f"{job.label} at {when}", job.product)
        return withdrawn, live_run_ids(s, account_id, job.product)

    def _guarded(self, job: CloseJob, account_id: int, prepared: tuple[int, list[int]] | None = None
                 ) -> tuple[str, bool, bool]:
        try:
            with self.account_lock(account_id):
                return self.close_account(job, account_id, prepared)
        except Exception as exc:  # noqa: BLE001 - one account's failure must not stop the others' close
            log.exception("%s: account %s", job.label, account_id)
            return f"account {account_id}: NOT DONE: {type(exc).__name__}: {exc}", False, False

    # ---- one account -----------------------------------------------------------------------------------------
    def flatten_account(self, command_id: int, account_id: int) -> tuple[str, bool]:
        summary, ok, _idle = self.close_account(CloseJob.flatten(command_id), account_id)
        return summary, ok

    def close_account(self, job: CloseJob, account_id: int, prepared: tuple[int, list[int]] | None = None
                      ) -> tuple[str, bool, bool]:
        """Close what the account holds (of ``job.product``, or everything) at the broker: the steps above.
        ``prepared``: step 0's result when ``close_all`` wrote it for every account at once. Returns (summary,
        everything closed, there was nothing to do)."""
        if prepared is None:
            with self.ctx.db.write() as s:
                prepared = self._prepare(s, job, account_id)
        withdrawn, runs = prepared
        cancelled, to_cancel, problems = self._cancel_working(account_id, job)
        # Step 1, exits that BUY (closing shorts) first: the free positions' BUYs are queued before the runs' exits
        # are written and their SELLs after (the dispatcher sends an account's queue in priority order).
        free, unread, _ = self._free_positions(account_id, job.product)
        if runs:
            self._write_exits(job, account_id, {k: v for k, v in free.items() if v < 0}, step=1)
            self._exit_runs(job, runs)
            self._write_exits(job, account_id, {k: v for k, v in free.items() if v > 0}, step=1)
        else:  # one transaction: the dispatcher sends an account's queue BUYs first (exit_priority)
            self._write_exits(job, account_id, free, step=1)
        # Step 2, once everything in flight has settled: whatever is still open (what a run's exit did not close,
        # a fill that raced the first read) gets its exit now.
        self._wait_settled(account_id, job.product)
        rest, unread2, held = self._free_positions(account_id, job.product)
        self._write_exits(job, account_id, rest, step=2)
        self._wait_settled(account_id, job.product)
        closed, to_close, left = self._flatten_outcome(job, account_id)
        # The step-2 read, taken once nothing of ours could still trade, is the check when it showed the account
        # flat and nothing was sent after it; otherwise the broker is asked again.
        flat = not unread2 and not rest and not held
        problems += [p for p in (unread, unread2) if p] + left + ([] if flat else self._still_open(account_id,
                                                                                                   job.product))
        ok = not problems
        idle = ok and not (to_cancel or to_close or runs or withdrawn)
        summary = (f"account {account_id}: cancelled {cancelled}/{to_cancel}, closed {closed}/{to_close}, "
                   f"{len(runs)} run(s) exited, {withdrawn} queued entr(ies) withdrawn"
                   + (f"; NOT DONE: {'; '.join(problems)}" if problems else ""))
        if job.halt or not idle:  # a daily square-off of an account that holds nothing is not news
            self._event(account_id, ok, summary, job.source)
        return summary, ok, idle

    def _free_positions(self, account_id: int, product: str | None = None
                        ) -> tuple[dict[tuple[str, str, str], int], str, bool]:
        """Open positions at the broker (of ``product``, if given) that no strategy leg holds and no order of ours
        may still trade: ({(symbol, exchange, product): net qty}, '' or why the positionbook could not be read,
        whether the book showed any other open position of ``product``)."""
        try:
            book = self.ctx.client(account_id).positionbook()
        except (BrokerError, KeyError) as exc:
            return {}, f"positionbook unavailable: {exc}", False
        with self.ctx.db.read() as s:
            busy = busy_keys(s, account_id)
        out, held = {}, False
        for p in book:
            key = (str(p.get("symbol")), str(p.get("exchange")), str(p.get("product")))
            if _qty(p) and product in (None, key[2]):
                if key in busy:
                    held = True
                else:
                    out[key] = _qty(p)
        return out, "", held

    def _write_exits(self, job: CloseJob, account_id: int, rest: dict, step: int) -> None:
        if not rest:
            return

        def write(s) -> Written:
            # BUYs (closing shorts) numbered first, so each sorts ahead of every SELL (exit_priority)
            for n, (key, net) in enumerate(sorted(rest.items(), key=lambda kv: (kv[1] > 0, kv[0]))):
                write_close_exit(s, job.key, job.source, account_id, *key, net, n, job.tag, step)
            return Written(None, (account_id,))
        self.submit(write)

    def _exit_runs(self, job: CloseJob, runs: list[int]) -> None:
        risk = self.risk()
        for run_id in runs if risk is not None else ():
            try:
                risk.exit_run(run_id, job.run_reason)
            except DbError:  # left pending in the risk manager: retried there until written, and alarmed
                log.error("%s: exit of run %s not written yet", job.label, run_id)

    def _cancel_working(self, account_id: int, job: CloseJob) -> tuple[int, int, list[str]]:
        """cancelorder for every working order at the broker (of ``job.product``, if given) that is not one of our
        exits."""
        with self.ctx.db.read() as s:
            ours = working_orders_of_ours(s, account_id)
        try:
            book = self.ctx.client(account_id).orderbook()
        except (BrokerError, KeyError) as exc:
            return 0, 0, [f"orderbook unavailable: {exc}"]
        working = [o for o in book if str(o.get("order_status", "")).strip().lower() in WORKING_AT_BROKER
                   and str(o.get("orderid")) not in ours and job.product in (None, str(o.get("product")))]
        done, problems = 0, []
        for o in working:
            try:
                self.ctx.client(account_id).cancelorder(str(o["orderid"]), job.tag)
                done += 1
            except BrokerError as exc:
                problems.append(f"order {o.get('orderid')} ({o.get('symbol')}) not cancelled: {exc}")
        return done, len(working), problems

    def _wait_settled(self, account_id: int, product: str | None = None) -> bool:
        """Wait (bounded by settle_s) until no order of the account (of ``product``, if given) may still trade.
        True if none may."""
        deadline = time.monotonic() + self.settle_s
        changes = self.ctx.intents_changed
        while True:
            seen = changes.seen(account_id)  # before the read: a change committed after it ends the wait
            with self.ctx.db.read() as s:
                live = live_orders(s, account_id, product)  # exits in flight included
            if not live or time.monotonic() > deadline:
                return not live
            if self.poll_now is not None and all_at_broker(live):
                self.poll_now(account_id)  # every order is at the broker: its fills are in the next orderbook
            else:
                # the dispatcher's outcomes and the poller's fills bump it; the reconciler's verdicts do not, so
                # the wait stays short
                changes.wait_past(account_id, seen, 0.2)

    def _flatten_outcome(self, job: CloseJob, account_id: int) -> tuple[int, int, list[str]]:
        """(the job's exits filled, exits written, the ones that did not fill, with the broker's reason)."""
        with self.ctx.db.read() as s:
            rows = [(i.symbol, i.status, i.status_reason, i.requested_qty) for i in
                    close_intents(s, job.source, job.tag, account_id)]
        closed = sum(1 for _, st, _, _ in rows if st == Status.FILLED)
        left = [f"{sym} {qty}: {st}" + (f" ({why})" if why else "") for sym, st, why, qty in rows
                if st != Status.FILLED]
        return closed, len(rows), left

    def _still_open(self, account_id: int, product: str | None = None) -> list[str]:
        """What the broker still reports open (of ``product``, if given) afterwards (each named, for the alert)."""
        try:
            book = self.ctx.client(account_id).positionbook()
        except (BrokerError, KeyError) as exc:
            return [f"positionbook unavailable after the close: {exc}"]
        return [f"{p.get('symbol')} {p.get('product')} still {_qty(p):+d} at the broker" for p in book
                if _qty(p) and product in (None, str(p.get("product")))]

    # ---- reporting -------------------------------------------------------------------------------------------
    def _event(self, account_id: int, ok: bool, summary: str, kind: str = "flatten") -> None:
        try:
            with self.ctx.db.write() as s:
                s.add(RiskEvent(account_id=account_id, event_type=kind, action=kind if ok else "alert",
                                message=summary[:512], ts_ist=ist_now_str()))
        except DbError as exc:
            log.error("%s event not written: %s", kind, exc)

    def _alert(self, kind: str, message: str, subject: str) -> None:
        (log.warning if kind.endswith("_done") else log.error)("%s", message)
        if self.notifier is not None:
            self.notifier.alert(kind, message, subject=subject)


def _qty(p: dict) -> int:
    try:
        return int(float(p.get("quantity") or 0))
    except (TypeError, ValueError):
        return 0
