"""Quick Order stop-loss / target watcher: arms each stop when its entry fills, watches it on every tick, and exits
the position through the one exit path (the dispatcher's ``submit_now``) when a level is crossed, exactly once.

    reload (every 1 s)   (the remainder of an entry still working when its stop fired is cancelled at the
                         broker); entries that filled arm their stops (levels from the average fill price, on the filled
                         quantity; more filled later raises both) and the account's positionbook is read at once
                         (a hit is acted on only with a book newer than the fill); entries that ended with nothing
                         filled cancel theirs; exits that ended are followed (filled -> exited; failed -> retried
                         up to exit_retries, then 'failed' and alarmed); stops whose position the book shows flat
                         (closed by hand, elsewhere) are cancelled; the armed stops are loaded and subscribed.
    tick                 a crossed level is handed to the exit thread (the tick thread never waits on SQLite).
    exit thread          db/stops.py ``write_stop_exit`` in the dispatcher's transaction: armed -> triggered with
                         ONE exit intent (opposite side, MARKET, min(stop qty, what the account still holds)),
                         its claim and POST; or cancelled if the position is flat; or, while the stored book is not
                         newer than our fills, the hit is latched in the row, a sync is asked for and it is tried
                         again. A hit not written within ALARM_AFTER_S is alarmed (ERROR + Notifier), and again
                         every REALARM_S while it stays unwritten.
    sweep (risk_sweep_s) everything again from the database, with the stored last price (latest_prices) where the
                         feed has none fresh.
Nothing here is the truth: a hit in memory is a cache of the row; after a restart the latched hit, or the next
tick / sweep through the level, decides again, and the compare-and-set on the row makes it one exit.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from db.clock import ist_now_str
from db.errors import classify
from db.prices import fresh_ltp
from db.stop_levels import STOP_LOSS, crossed
from db.stops import (EntryRow, StopAct, WatchedStop, armed_stops, arm_stop, arming_change, cancel_if_closed,
                      cancel_stop_in, closed_candidates, exits_settled_due, follow_exits, live_stop_entries,
                      working_entries_of_triggered, write_stop_exit)
from db.vocab import StopStatus
from services.cancels import CancelSender
from services.context import ServiceContext
from services.dispatcher import PlainExitWriter, Written
from services.health import heartbeat, service_log

log = logging.getLogger("services.stops")
CONSUMER = "stops"
WAIT_S = 0.5  # the exit thread's wait for the write lock per attempt
ALARM_AFTER_S = 2.0
REALARM_S = 30.0
RETRY_S = (0.1, 0.25, 0.5, 1.0, 2.0)
SYNC_GAP_S = 0.5  # positionbook reads asked for by stops: at most this often per account


@dataclass
class Hit:
    """A crossed level whose exit is not written yet."""
    stop: WatchedStop
    kind: str
    level: float
    ltp: float
    since: float
    since_ist: str
    attempts: int = 0
    next_try: float = 0.0
    error: str = ""
    alarmed_at: float | None = None
    busy: bool = False  # an attempt is running (the exit thread and the sweep both try)


class StopWatcher:
    def __init__(self, ctx: ServiceContext, md, dispatcher=None, refresh_account: Callable[[int], bool] | None = None,
                 notifier=None, wake: Callable[[], None] = lambda: None):
        """``dispatcher``: the service's (its ``submit_now`` writes, claims and POSTs the exit); ``refresh_account``:
        account sync's ``refresh`` (reads the positionbook now)."""
        self.ctx, self.md, self.notifier = ctx, md, notifier
        self.exits = dispatcher if dispatcher is not None else PlainExitWriter(ctx.db, wake)
        self.refresh_account = refresh_account
        self.cfg = ctx.settings.service
        self._stops: dict[int, WatchedStop] = {}
        self._by_key: dict[tuple[str, str], list[WatchedStop]] = {}
        self._hits: dict[int, Hit] = {}
        self._done: set[int] = set()  # acted on; until a reload no longer loads them armed
        self._lock = threading.Lock()
        self._wake, self._sync_wake, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._sync_due: set[int] = set()
        self._synced: dict[int, float] = {}
        self._threads: list[threading.Thread] = []
        self._last_beat = float("-inf")
        self._cancels = CancelSender(ctx, max(2.0, self.cfg.risk_sweep_s))
        self.stats = dict(armed=0, exits=0, closed=0, unsettled=0, write_failures=0, rest_fallbacks=0)
        md.add_listener(self._on_tick)

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        for name, target in (("stops-exit", self._exit_loop), ("stops-sync", self._sync_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._sync_wake.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        for h in self.pending_hits():
            self._alarm(h, force=True, stopping=True)
        heartbeat(self.ctx.db, "stops", "stopped", dict(stops=len(self._stops), **self.stats))

    def pending_hits(self) -> list[Hit]:
        with self._lock:
            return list(self._hits.values())

    # ---- reload: arming, exits' outcomes, closed positions, what to watch -------------------------------------
    def reload(self) -> None:
        self._arm()
        self._follow_exits()
        self._cancel_closed()
        with self.ctx.db.read() as s:
            rows = armed_stops(s)
            working = working_entries_of_triggered(s)
        if working:  # a partly filled entry whose stop fired: its remainder must not reopen the position
            self._cancels.cancel(working)
        by_key: dict[tuple[str, str], list[WatchedStop]] = {}
        for w in rows:
            by_key.setdefault((w.symbol, w.exchange), []).append(w)
        with self._lock:
            self._stops, self._by_key = {w.id: w for w in rows}, by_key
            self._done &= set(self._stops)
        held = self.md.held_by(CONSUMER)
        if set(by_key) - held:
            self.md.subscribe(CONSUMER, sorted(set(by_key) - held), 1)
        if held - set(by_key):
            self.md.unsubscribe(CONSUMER, sorted(held - set(by_key)), 1)
        for w in rows:
            if w.hit_kind:  # latched before (this process or the last one): decide it
                self._decide(w, w.hit_kind, (w.sl_level if w.hit_kind == STOP_LOSS else w.tp_level) or 0.0,
                             w.hit_price or 0.0)
            else:
                p = self._live_price(w)
                if p is not None:
                    self._check(w, p)
        self._maybe_heartbeat()

    def _arm(self) -> None:
        with self.ctx.db.read() as s:
            todo: list[tuple[EntryRow, str]] = [(r, c) for r in live_stop_entries(s) if (c := arming_change(r))]
        if not todo:
            return
        armed = set()
        with self.ctx.db.write() as s:
            for r, change in todo:
                if change == "arm" and arm_stop(s, r.stop_id):
                    armed.add(r.account_id)
                    self.stats["armed"] += 1
                elif change == "cancel":
                    cancel_stop_in(s, r.stop_id, f"entry {r.entry_status}, nothing filled",
                                   frozenset({StopStatus.PENDING}))
        for account_id in armed:  # the book must show the fill before a hit can be acted on: read it now
            self.request_sync(account_id)

    def _follow_exits(self) -> None:
        with self.ctx.db.read() as s:
            if not exits_settled_due(s):
                return
        report: dict = {}

        def write(s) -> Written:
            accounts, alarms, unsettled = follow_exits(s, self.cfg.exit_retries)
            report.update(alarms=alarms, unsettled=unsettled)
            return Written(None, tuple(dict.fromkeys(accounts)))

        self.exits.submit_now(write)
        for account_id in report.get("unsettled", ()):
            self.request_sync(account_id)
        for stop_id, msg in report.get("alarms", ()):
            log.error("%s", msg)
            service_log(self.ctx.db, "stops", "ERROR", msg)
            if self.notifier is not None:
                self.notifier.alert("exit_failed", msg, subject=f"stop {stop_id}")

    def _cancel_closed(self) -> None:
        with self.ctx.db.read() as s:
            ids = closed_candidates(s)
        if not ids:
            return
        with self.ctx.db.write() as s:
            done = [i for i in ids if cancel_if_closed(s, i)]
        for i in done:
            self.stats["closed"] += 1
            log.info("stop %s cancelled: its position is closed (flat in the positionbook)", i)

    # ---- evaluation ------------------------------------------------------------------------------------------
    def _live_price(self, w: WatchedStop) -> float | None:
        """The feed's price if it is recent (a tick read late from a backlog is not the price now)."""
        p = self.md.last_price(w.symbol, w.exchange)
        if p is None or self.md.clock() - p[1] > self.cfg.risk_sweep_s:
            return None
        return p[0]

    def _on_tick(self, symbol: str, exchange: str, data: dict) -> None:
        stops = self._by_key.get((symbol, exchange))
        if stops:
            p = self._live_price(stops[0])
            if p is not None:
                for w in stops:
                    self._check(w, p)

    def _check(self, w: WatchedStop, ltp: float) -> None:
        hit = crossed(w.side, w.sl_level, w.tp_level, ltp)
        if hit is not None:
            self._decide(w, *hit, ltp)

    def _decide(self, w: WatchedStop, kind: str, level: float, ltp: float) -> None:
        with self._lock:
            if w.id in self._hits or w.id in self._done:
                return
            self._hits[w.id] = Hit(w, kind, level, ltp, time.monotonic(), ist_now_str())
        self._wake.set()

    # ---- the exit thread -------------------------------------------------------------------------------------
    def _exit_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.1)
            self._wake.clear()
            try:
                self.process_hits()
            except Exception:  # noqa: BLE001 - this loop must outlive any one failure
                log.exception("stops: exit loop")

    def process_hits(self, force: bool = False) -> int:
        now = time.monotonic()
        due = [h for h in self.pending_hits() if force or h.next_try <= now]
        for h in due:
            self._attempt(h)
        for h in self.pending_hits():
            if time.monotonic() - h.since >= ALARM_AFTER_S:
                self._alarm(h)
        return len(due)

    def _attempt(self, h: Hit) -> None:
        with self._lock:
            if h.busy or self._hits.get(h.stop.id) is not h:
                return
            h.busy, h.attempts = True, h.attempts + 1
        try:
            self._try(h)
        finally:
            h.busy = False

    def _try(self, h: Hit) -> None:

        def write(s) -> Written:
            act = write_stop_exit(s, h.stop.id, h.kind, h.level, h.ltp, h.since_ist)
            return Written(act, (act.account_id,) if act.what == "exit" else ())

        try:
            act: StopAct = self.exits.submit_now(write, WAIT_S)
        except Exception as exc:  # noqa: BLE001 - stays pending: retried with backoff, alarmed if it lasts
            self.stats["write_failures"] += 1
            h.error = str(classify(exc) or f"{type(exc).__name__}: {exc}")
            h.next_try = time.monotonic() + RETRY_S[min(h.attempts, len(RETRY_S)) - 1]
            log.warning("stop %s: %s exit not written (attempt %d): %s", h.stop.id, h.kind, h.attempts, h.error)
            return
        if act.what == "unsettled":
            self.stats["unsettled"] += 1
            h.error = "the positionbook does not show our last fill on this position yet (reading it now)"
            h.next_try = time.monotonic() + 0.25
            self.request_sync(h.stop.account_id)
            return
        with self._lock:
            self._hits.pop(h.stop.id, None)
            self._done.add(h.stop.id)
        self._report(h, act)

    def _report(self, h: Hit, act: StopAct) -> None:
        if act.what == "exit":
            self.stats["exits"] += 1
            log.warning("%s", act.message)
            if self.notifier is not None:
                self.notifier.alert("stop_exit", act.message, subject=f"stop {h.stop.id}")
        elif act.what == "closed":
            self.stats["closed"] += 1
            log.warning("%s", act.message)
        if h.alarmed_at is not None and self.notifier is not None:
            self.notifier.alert("exit_written", f"stop {h.stop.id}: {act.message} after {h.attempts} attempt(s), "
                                f"{time.monotonic() - h.since:.1f} s after the hit at {h.since_ist}",
                                subject=f"stop {h.stop.id}")

    def _alarm(self, h: Hit, force: bool = False, stopping: bool = False) -> None:
        now = time.monotonic()
        if not force and h.alarmed_at is not None and now - h.alarmed_at < REALARM_S:
            return
        h.alarmed_at = now
        w = h.stop
        msg = (f"STOP EXIT NOT WRITTEN: Quick Order stop #{w.id} {w.side} {w.quantity} {w.symbol} ({w.exchange}) "
               f"{h.kind} {h.level:g} hit at {h.ltp:g} ({h.since_ist}); still no exit after {now - h.since:.1f} s "
               f"and {h.attempts} attempt(s): {h.error or 'waiting for the database'}. "
               + ("The service is stopping: the next start decides it again" if stopping else "Retrying")
               + "; the position is open meanwhile")
        log.error("%s", msg)
        if self.notifier is not None:
            self.notifier.alert("exit_not_written", msg, subject=f"stop {w.id}")

    # ---- positionbook reads ----------------------------------------------------------------------------------
    def request_sync(self, account_id: int) -> None:
        if self.refresh_account is None:
            return
        with self._lock:
            self._sync_due.add(account_id)
        self._sync_wake.set()

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            self._sync_wake.wait(0.2)
            self._sync_wake.clear()
            with self._lock:
                now = time.monotonic()
                due = {a for a in self._sync_due if now - self._synced.get(a, float("-inf")) >= SYNC_GAP_S}
                self._sync_due -= due
            if self._sync_due:
                self._sync_wake.set()
            for account_id in sorted(due):
                self._synced[account_id] = time.monotonic()
                try:
                    self.refresh_account(account_id)
                except Exception:  # noqa: BLE001 - asked again while a hit waits for it
                    log.exception("stops: positionbook of account %s", account_id)
            if due:
                for h in self.pending_hits():
                    h.next_try = 0.0
                self._wake.set()

    # ---- sweep -----------------------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Every risk_sweep_s: reload, and evaluate every armed stop on the stored last price where the feed has
        no recent one (a symbol that stopped ticking, a feed that is down)."""
        try:
            self.reload()
        except Exception as exc:  # noqa: BLE001 - evaluate what is loaded rather than nothing
            log.error("stops sweep: reload failed: %s", classify(exc) or exc)
        stale = [w for w in list(self._stops.values()) if self._live_price(w) is None]
        if stale:
            with self.ctx.db.read() as s:
                prices = {w.id: fresh_ltp(s, w.symbol, w.exchange) for w in stale}
            for w in stale:
                if prices[w.id] is not None:
                    self.stats["rest_fallbacks"] += 1
                    self._check(w, prices[w.id])
        self.process_hits()

    def _maybe_heartbeat(self) -> None:
        now = time.monotonic()
        if self._stop.is_set() or now - self._last_beat < self.cfg.heartbeat_s:
            return
        self._last_beat = now
        blocked = [h for h in self.pending_hits() if h.alarmed_at is not None]
        details = dict(stops=len(self._stops), pending_exits=len(self.pending_hits()), **self.stats)
        if blocked:
            details["error"] = f"{len(blocked)} stop exit(s) not written: {blocked[0].error}"
        try:
            heartbeat(self.ctx.db, "stops", "error" if blocked else "ok", details)
        except Exception as exc:  # noqa: BLE001 - the database may be the very problem
            log.warning("stops heartbeat not written: %s", exc)
