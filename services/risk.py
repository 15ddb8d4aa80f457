"""Risk manager: per strategy run max loss, max profit and trailing stop, evaluated on every tick.

P&L of a run (rupees) = sum over entered legs of (ltp - entry_price) x qty x (+1 BUY / -1 SELL)
                        + realized P&L of exited legs.
    (a leg whose last tick is older than its own entry fill is valued at the fill price until a newer tick
    arrives: the fill is the newer trade; services/pnl.py)

Rules, checked in this order on every tick of a symbol the run holds (and on every sweep):
    max loss:    exit when pnl <= -max_loss
    max profit:  exit when pnl >= max_profit
    trailing SL: peak = max(peak, pnl)     (peak starts at 0 when the run becomes active; it only ratchets up)
                 stop = peak - trailing_sl
                 exit when pnl <= stop
The risk_events ``threshold`` is the P&L level that was crossed (-max_loss, max_profit or the trailing stop).
State is per strategy run; tsl_peak / tsl_stop / pnl are persisted on strategy_runs (throttled, not per tick).

There is ONE exit path, ``exit_run``: a compare-and-set on strategy_runs.status (entering|active -> exiting)
plus one exit intent per entered leg (BUY exits first), in one BEGIN IMMEDIATE transaction. A run therefore
exits at most once however many triggers race. ``sweep`` retries exit orders that ended rejected/cancelled/
denied up to ``exit_retries`` times, then flags the leg loudly (risk_event 'exit_failed' + service_log ERROR).

A breach never goes silent. Once a breach is decided it is latched as a *pending exit* (keyed by run id, not on
the RunState, which ``reload`` replaces every second) until its exit transaction has committed. A write that
fails for any reason (lock timeout, disk full, I/O error, a bug) leaves it pending: the retry thread tries again
with backoff until it commits, and the watch thread raises an alert (ERROR log + Notifier) as soon as an attempt
fails with anything but a lock wait, or when the exit is still unwritten ``ALARM_AFTER_S`` after the breach.
The market-data thread makes the first attempt itself (the fast path) but waits at most ``FEED_WAIT_S`` for the
write lock, so a locked database never stops ticks being evaluated for long; the retry thread takes over.

Per-leg stops (services/leg_stops.py): an entered leg with a stop-loss / target / trailing stop of its own gets its
levels when it is loaded; ticks of its symbol check them (``_check_legs``). A hit is latched as a PendingExit keyed
(run id, leg no) and written by the same exit writer (db/leg_exits.py ``write_leg_exit``): only that leg exits, the
run's own limits keep applying to the rest. A stop with re-entries left writes a waiting re-entry row in the same
transaction; its entry is written on the retry thread once the leg is flat (and the price is back, when asked):
``process_reentries``. close_leg (``exit_leg``) and roll_leg (``roll_leg``) go through the same writer.

Partial fills: a leg's ``quantity`` is what its entry filled (db/executions.py), so a partly filled entry is
valued and exited on the filled units. The sweep cancels (cancelorder) the remainder of an entry still working at
the broker once its run exits, and exits whatever of it filled after the exit was written. An exit partially
filled for ``exit_partial_timeout_s`` is flagged (risk_event 'exit_partial' + service_log ERROR) and its remainder
cancelled; the cancelled exit is then retried for what is left, like any failed exit. A new exit is only ever
written once the previous one is terminal: one live exit per leg.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from db.clock import ist_now_str
from db.errors import DbLocked, classify
from db.commands import CommandError
from db.exits import failed_exits, flag_once, late_fills, repairs_due, write_exit_intent, write_run_exit
from db.leg_exits import Waiting, price_back, waiting_reentries, write_leg_exit, write_reentries, write_roll
from db.models import OrderIntent
from db.run_fsm import LegStatus
from db.runs import live_runs, persist_leg_best, persist_pnl
from db.vocab import LegExit
from services.alerts import Notifier
from services.cancels import CancelSender
from services.context import ServiceContext
from services.health import heartbeat, service_log
from services.leg_stops import leg_stop
from services.dispatcher import PlainExitWriter, Written
from services.market_data import MarketDataManager
from services.pnl import ACTIVE_LEG, Leg, fill_seen_at, leg_price, run_pnl
from services.risk_partial import cancel_remainders, exit_late_remainders

if TYPE_CHECKING:
    from services.dispatcher import OrderDispatcher

log = logging.getLogger("services.risk")
CONSUMER = "risk"
FEED_WAIT_S = 0.5  # the tick thread's own exit attempt waits this long for the write lock, then hands over
ALARM_AFTER_S = 1.0  # a breach whose exit has not committed after this long is alarmed (the limit: 2 s)
REALARM_S = 30.0  # ... and alarmed again this often while it stays unwritten
RETRY_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0)  # between attempts of an exit that did not commit


@dataclass
class RunState:
    run_id: int
    account_id: int
    strategy: str
    max_loss: float | None
    max_profit: float | None
    trailing_sl: float | None
    legs: list[Leg]
    peak: float | None = None
    stop: float | None = None
    pnl: float | None = None
    dirty: bool = False
    keys: set = field(default_factory=set)


@dataclass
class PendingExit:
    """A decided exit that has not committed yet (see the module docstring): of the whole run, or of one leg
    (``leg_no``: a leg's own stop, close_leg)."""
    run_id: int
    reason: str
    threshold: float | None
    value: float | None
    since: float  # monotonic time of the decision
    since_ist: str
    attempts: int = 0
    busy: bool = False  # an attempt is running on some thread
    next_try: float = 0.0
    error: str = ""
    alarmed_at: float | None = None
    decided_on: list = field(default_factory=list)  # the legs and their prices at the decision (the Journal)
    leg_no: int | None = None
    executions: frozenset = frozenset()  # a leg exit: the executions it was decided for

    @property
    def key(self):
        """Where it is latched: the run id, or (run id, leg no) for one leg's exit."""
        return self.run_id if self.leg_no is None else (self.run_id, self.leg_no)

    @property
    def label(self) -> str:
        return f"run {self.run_id}" if self.leg_no is None else f"run {self.run_id} leg {self.leg_no}"


def check_limits(run: RunState, pnl: float) -> tuple[str, float, float] | None:
    """Update the run's P&L / trailing state; return (reason, threshold, value) on a breach."""
    run.pnl, run.dirty = pnl, True
    if run.max_loss and pnl <= -run.max_loss:
        return "max_loss", -run.max_loss, pnl
    if run.max_profit and pnl >= run.max_profit:
        return "max_profit", run.max_profit, pnl
    if run.trailing_sl:
        run.peak = max(run.peak or 0.0, pnl)
        run.stop = run.peak - run.trailing_sl
        if pnl <= run.stop:
            return "trailing_sl", run.stop, pnl
    return None


def carry_state(st: RunState, old: RunState) -> None:
    """A reloaded run keeps its in-memory P&L state; the peak only ratchets up, and so does each leg's best price
    (its trailing stop). (Whether an exit is in flight is not run state: it lives in RiskManager._pending, which a
    reload does not replace.)"""
    peaks = [p for p in (st.peak, old.peak) if p is not None]
    st.peak = max(peaks) if peaks else None
    if st.peak is not None and st.trailing_sl:
        st.stop = st.peak - st.trailing_sl
    st.pnl, st.dirty = old.pnl, old.dirty
    if any(leg.stop is not None for leg in st.legs):
        before = {leg.execution_id: leg.stop for leg in old.legs if leg.stop is not None}
        for leg in st.legs:
            if leg.stop is not None and leg.execution_id in before:
                leg.stop.carry(before[leg.execution_id])


def _unfilled(failed: OrderIntent) -> int | None:
    """What a failed exit left open (None: the leg's whole quantity). A row whose quantities are not numbers (a
    poison row the dispatcher denied) must not stop the retry: the leg's own quantity is used then."""
    try:
        return max(0, int(failed.requested_qty) - int(failed.broker_filled_qty or 0)) or None
    except (TypeError, ValueError):
        return None


class RiskManager:
    def __init__(self, ctx: ServiceContext, md: MarketDataManager, on_exit_enqueued: Callable[[], None],
                 dispatcher: OrderDispatcher | None = None, notifier: Notifier | None = None):
        """With ``dispatcher`` (the service's own) every exit is written by its ``submit_now``: the dispatcher owns
        the transaction, claims the run's first exit (BUY first) in it and a worker POSTs it, then the remaining
        legs in order (the tick -> exit hot path). Without one, exits are only written and ``on_exit_enqueued``
        is called. ``notifier`` carries the alarms of exits that could not be written; ``start()`` runs the retry
        and watch threads (without them, ``sweep`` retries)."""
        self.ctx, self.md, self.on_exit_enqueued = ctx, md, on_exit_enqueued
        self.dispatcher, self.notifier = dispatcher, notifier
        # the one exit writer: every exit of this manager (breach, retry, late fill, manual) goes through it
        self.exits = dispatcher if dispatcher is not None else PlainExitWriter(ctx.db, on_exit_enqueued)
        self.cfg = ctx.settings.service
        self._runs: dict[int, RunState] = {}
        self._by_key: dict[tuple[str, str], list[RunState]] = {}
        self._lock = threading.RLock()
        self._pending: dict[object, PendingExit] = {}  # decided exits not yet committed (PendingExit.key)
        self._written: set[int] = set()  # exits committed that the last reload may not have seen yet
        # the same for one leg's exits: (run id, leg no) -> the executions exited (a re-entered leg is new ones)
        self._written_legs: dict[tuple[int, int], frozenset] = {}
        self._leg_watch: dict[tuple[str, str], list[tuple[RunState, Leg]]] = {}  # entered legs with own stops
        self._waiting: dict[tuple[str, str], list[Waiting]] = {}  # re-entries waiting for the price to come back
        self._reentry_due: set[tuple[int, int]] = set()  # (run id, leg no) whose re-entry may be written now
        self._retry_wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_persist = self._last_beat = float("-inf")
        self._stopped = False
        self.stats = dict(exits=0, retries=0, exit_failed=0, rest_quotes=0, evaluations=0, exit_write_failures=0,
                          leg_exits=0, reentries=0)
        md.add_listener(self._on_tick)

    def start(self) -> None:
        self._stop.clear()
        for name, target in (("risk-exit-retry", self._retry_loop), ("risk-watch", self._watch_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """The service is stopping (ticks and jobs have ended): the retry and watch threads end, an exit still not
        written is alarmed once more (it is lost with this process unless the breach is seen again after a
        restart), and the heartbeat row says 'stopped' from now on."""
        self._stop.set()
        self._retry_wake.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        for p in self.pending_exits():
            msg = (f"service stopping with the {p.reason} exit of {p.label} (breach at {p.since_ist}) still "
                   f"not written: {p.error or 'waiting for the database'}; the position is open")
            log.error("%s", msg)
            if self.notifier is not None:
                self.notifier.alert("exit_not_written", msg, subject=f"{p.label} stopping")
        self._stopped = True
        heartbeat(self.ctx.db, "risk", "stopped", dict(runs=len(self._runs), **self.stats))

    def pending_exits(self) -> list[PendingExit]:
        with self._lock:
            return list(self._pending.values())

    # ---- loading ---------------------------------------------------------------------------------------------
    def reload(self) -> None:
        fresh, waits = self._load_runs()
        with self._lock:
            for rid, st in fresh.items():
                if rid in self._runs:
                    carry_state(st, self._runs[rid])
            by_key: dict = {}
            leg_watch: dict = {}
            for st in fresh.values():
                for key in st.keys:
                    by_key.setdefault(key, []).append(st)
                for leg in st.legs:
                    if leg.stop is not None:
                        leg_watch.setdefault(leg.key, []).append((st, leg))
            self._runs, self._by_key, self._leg_watch = fresh, by_key, leg_watch
            # a committed exit leaves this set once a reload no longer loads the run as live
            self._written &= set(fresh)
            entered = {leg.execution_id for st in fresh.values() for leg in st.legs if leg.status == LegStatus.ENTERED}
            self._written_legs = {k: v for k, v in self._written_legs.items() if v & entered}
        watch_keys = self._watch_waiting(waits)
        self._sync_subscriptions(set(by_key) | watch_keys)
        try:
            self._maybe_persist()
        except Exception as exc:  # noqa: BLE001 - P&L persistence is display only; it must not stop the reload
            log.warning("risk: persisting run P&L failed: %s", exc)
        self._maybe_heartbeat()

    def _load_runs(self) -> tuple[dict[int, RunState], list[Waiting]]:
        """Every live run with its legs, and the re-entries waiting: three plain SELECTs (this runs every second,
        beside the feed thread). An entered leg with stops of its own gets its levels here, once."""
        with self.ctx.db.read() as s:
            rows, execs = live_runs(s)
            waits = waiting_reentries(s) if rows else []
        legs: dict[int, list[Leg]] = {}
        clock_now, wall_now = self.md.clock(), time.time()
        for run_id, *fields in execs:
            leg = Leg(*fields[:10])
            leg.fill_seen = fill_seen_at(leg.status, fields[10], clock_now, wall_now)
            sl_mode, sl_value, tp_mode, tp_value, trail, best = fields[11:17]
            leg.stop = leg_stop(leg.action, leg.status, leg.entry_price, sl_mode, sl_value, tp_mode, tp_value,
                                trail, best)
            legs.setdefault(run_id, []).append(leg)
        out = {}
        for run_id, account_id, max_loss, max_profit, trailing_sl, peak, stop, pnl, name in rows:
            run_legs = legs.get(run_id, [])
            if not any(leg.status == LegStatus.ENTERED for leg in run_legs):
                continue
            out[run_id] = RunState(run_id, account_id, name, max_loss, max_profit, trailing_sl, run_legs,
                                   peak=peak, stop=stop, pnl=pnl,
                                   keys={leg.key for leg in run_legs if leg.status in ACTIVE_LEG})
        return out, waits

    def _sync_subscriptions(self, keys: set) -> None:
        held = self.md.held_by(CONSUMER)
        if keys - held:
            self.md.subscribe(CONSUMER, sorted(keys - held), 1)
        if held - keys:
            self.md.unsubscribe(CONSUMER, sorted(held - keys), 1)

    # ---- evaluation ------------------------------------------------------------------------------------------
    def _on_tick(self, symbol: str, exchange: str, data: dict) -> None:
        runs = self._by_key.get((symbol, exchange))
        if runs:
            p = self.md.last_price(symbol, exchange)
            if p is not None and self.md.clock() - p[1] > self.cfg.risk_sweep_s:
                # A late tick (read from a backlog, dated by the feed) is not the price now: it does not trigger
                # an exit on its own. The sweep (every risk_sweep_s) fetches a REST quote for a price this old and
                # evaluates on that.
                return
            for run in runs:
                self.evaluate(run, wait_s=FEED_WAIT_S)
            legs = self._leg_watch.get((symbol, exchange))
            if legs and p is not None:
                self._check_legs(legs, p, FEED_WAIT_S)
        if self._waiting:
            waits = self._waiting.get((symbol, exchange))
            if waits:
                self._check_waiting(waits, self.md.last_price(symbol, exchange))

    # ---- one leg's own stops ---------------------------------------------------------------------------------
    def _check_legs(self, watched: list[tuple[RunState, Leg]], p: tuple[float, float],
                    wait_s: float | None = None) -> None:
        """The entered legs of one symbol with stops of their own, against its last price ``p`` (a tick older than
        a leg's own fill does not value that leg). A hit latches ONE exit of that leg (all its executions) and
        writes it through the one exit path; its run goes on with its other legs."""
        decided = []
        with self._lock:
            for run, leg in watched:
                if leg.status != LegStatus.ENTERED or p[1] < leg.fill_seen:
                    continue
                key = (run.run_id, leg.leg_no)
                if run.run_id in self._pending or run.run_id in self._written or key in self._pending \
                        or leg.execution_id in self._written_legs.get(key, ()):
                    continue
                hit = leg.stop.check(p[0])
                if hit is None:
                    continue
                same = frozenset(x.execution_id for x in run.legs
                                 if x.leg_no == leg.leg_no and x.status == LegStatus.ENTERED)
                pending = self._pending[key] = PendingExit(
                    run.run_id, hit[0], hit[1], p[0], since=time.monotonic(), since_ist=ist_now_str(),
                    decided_on=self._prices_of(run), leg_no=leg.leg_no, executions=same)
                decided.append(pending)
        for pending in decided:
            self._attempt(pending, wait_s)

    def exit_leg(self, run_id: int, leg_no: int, reason: str = LegExit.CLOSE.value) -> list[int]:
        """One leg's exit now (close_leg): its entered executions exit at market, its waiting re-entries are
        withdrawn; the run goes on with its other legs. Idempotent like exit_run; raises a db.errors.DbError if it
        could not be written (it then stays pending and is retried until it is)."""
        key = (run_id, leg_no)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                st = self._runs.get(run_id)
                same = frozenset(x.execution_id for x in (st.legs if st else ())
                                 if x.leg_no == leg_no and x.status == LegStatus.ENTERED)
                pending = self._pending[key] = PendingExit(run_id, reason, None, None, since=time.monotonic(),
                                                           since_ist=ist_now_str(), decided_on=self._prices_of(st),
                                                           leg_no=leg_no, executions=same)
        return self._attempt(pending, raise_errors=True) or []

    def roll_leg(self, command_id: int, run_id: int, leg_no: int, strike=None, offset=None,
                 expiry: str | None = None) -> str:
        """roll_leg: the leg's exits and the new contract's entries in one transaction of the one exit writer
        (the most urgent, a BUY, claimed and sent at once; the rest in priority order). CommandError (nothing
        written) when it cannot be rolled."""
        def write(s) -> Written:
            done = write_roll(s, command_id, run_id, leg_no, strike, offset, expiry, ist_now_str())
            return Written(done, (done[1],) if done else ())

        done = self.exits.submit_now(write)
        if done is None:
            return f"run {run_id} leg {leg_no} was rolled already by this command"
        ids, _account, what = done
        log.warning("run %s: %s: intents %s", run_id, what, ids)
        self.reload()
        return f"{what}: {len(ids)} order(s) queued"

    # ---- re-entry after a leg's stop -------------------------------------------------------------------------
    def _watch_waiting(self, waits: list[Waiting]) -> set:
        """Re-entries waiting for their turn: those whose leg is flat and need no price become due now; those
        that wait for the price are watched on ticks of the leg's symbol (and checked on the last price now).
        Returns the symbols to subscribe."""
        watch: dict = {}
        due = set()
        for w in waits:
            if not w.ready:
                continue
            if not w.wait:
                due.add((w.run_id, w.leg_no))
                continue
            watch.setdefault((w.symbol, w.exchange), []).append(w)
            p = self.md.last_price(w.symbol, w.exchange)
            if p is not None and price_back(w.action, w.ref, p[0]):
                due.add((w.run_id, w.leg_no))
        with self._lock:
            self._waiting = watch
            if due:
                self._reentry_due |= due
        if due:
            self._retry_wake.set()
        return {(w.symbol, w.exchange) for w in waits if w.wait}

    def _check_waiting(self, waits: list[Waiting], p: tuple[float, float] | None) -> None:
        if p is None:
            return
        due = {(w.run_id, w.leg_no) for w in waits if price_back(w.action, w.ref, p[0])}
        if due - self._reentry_due:
            with self._lock:
                self._reentry_due |= due
            self._retry_wake.set()

    def process_reentries(self) -> int:
        """Write the entries of the re-entries that are due (on the retry thread, never the tick thread): one
        transaction per leg, exactly once (db/leg_exits.py ``write_reentries``). Returns how many legs re-entered."""
        with self._lock:
            due, self._reentry_due = self._reentry_due, set()
        done_legs = 0
        for run_id, leg_no in sorted(due):
            try:
                with self.ctx.db.write(FEED_WAIT_S) as s:
                    done = write_reentries(s, run_id, leg_no, ist_now_str())
            except CommandError as exc:  # e.g. no live price to re-resolve the ATM strike: tried again next reload
                log.warning("run %s leg %s: re-entry not written: %s", run_id, leg_no, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - the next reload finds it due again
                log.warning("run %s leg %s: re-entry not written (%s); trying again", run_id, leg_no,
                            classify(exc) or exc)
                continue
            if not done:
                continue
            done_legs += 1
            self.stats["reentries"] += 1
            self.on_exit_enqueued()  # the dispatcher sends it (and denies it on a halted / reducing account)
            msg = f"run {run_id} leg {leg_no}: re-entry queued (intents {done[0]})"
            log.warning("%s", msg)
            if self.notifier is not None:
                self.notifier.alert("leg_reentry", msg, subject=f"run {run_id} leg {leg_no}")
        if done_legs:
            self.reload()
        return done_legs

    def evaluate(self, run: RunState, wait_s: float | None = None) -> tuple[str, float, float] | None:
        """Recompute the run's P&L from the latest prices and exit on a breach. Returns the breach, if any.
        ``wait_s`` bounds this thread's wait for the write lock; an exit not written then is retried elsewhere."""
        with self._lock:
            if run.run_id in self._pending or run.run_id in self._written:
                return None
            pnl = run_pnl(run.legs, self.md.last_price)
            if pnl is None:
                return None
            self.stats["evaluations"] += 1
            breach = check_limits(run, pnl[0] + pnl[1])
            if breach is None:
                return None
            pending = self._pending[run.run_id] = PendingExit(run.run_id, *breach, since=time.monotonic(),
                                                               since_ist=ist_now_str(),
                                                               decided_on=self._prices_of(run))
        self._attempt(pending, wait_s)
        return breach

    def run_state(self, run_id: int) -> RunState | None:
        return self._runs.get(run_id)

    # ---- the one exit path -----------------------------------------------------------------------------------
    def exit_run(self, run_id: int, reason: str, threshold: float | None = None,
                 value: float | None = None) -> list[int]:
        """Move the run to 'exiting' and queue one exit per entered leg. Idempotent: [] if already exiting (or an
        exit of it is being written right now). Raises a db.errors.DbError if the exit could not be written: it
        then stays pending and is retried until it is."""
        with self._lock:
            pending = self._pending.get(run_id)
            if pending is None:
                st = self._runs.get(run_id)
                value = st.pnl if value is None and st else value
                pending = self._pending[run_id] = PendingExit(run_id, reason, threshold, value,
                                                              since=time.monotonic(), since_ist=ist_now_str(),
                                                              decided_on=self._prices_of(st))
        return self._attempt(pending, raise_errors=True) or []

    def _attempt(self, p: PendingExit, wait_s: float | None = None, raise_errors: bool = False) -> list[int] | None:
        """One try at writing a pending exit. On success it is no longer pending; on any failure it stays pending
        for the retry thread (and is alarmed). Returns the exit intent ids, or None if not written now."""
        with self._lock:
            if p.busy or self._pending.get(p.key) is not p:
                return None
            p.busy, p.attempts = True, p.attempts + 1
            # the state the exit is decided on, for its log line: once the exit is written its fill may come
            # back (and a reload drop the finished run) before that line is written
            st = self._runs.get(p.run_id)
        try:
            ids, account_id = self._write_exit(p, wait_s)
        except Exception as exc:
            with self._lock:
                p.busy = False
                p.error = str(classify(exc) or f"{type(exc).__name__}: {exc}")
                p.next_try = time.monotonic() + RETRY_BACKOFF_S[min(p.attempts, len(RETRY_BACKOFF_S)) - 1]
            self._not_written(p, exc)
            if raise_errors:
                raise
            return None
        with self._lock:
            self._pending.pop(p.key, None)
            if p.leg_no is None:
                self._written.add(p.run_id)
            else:
                self._written_legs[p.key] = p.executions | self._written_legs.get(p.key, frozenset())
        try:
            self._after_written(p, ids, account_id, st)
        except Exception:  # the exit is committed and handed to the dispatcher: only the report failed
            log.exception("%s: after its exit was written", p.label)
        return ids

    def _write_exit(self, p: PendingExit, wait_s: float | None):
        """The run's exit, written by the one exit writer (the dispatcher's ``submit_now``: its transaction, its
        claim of the first exit, its POST). Returns (intent ids, account id), or ([], None) if the run was not
        live any more."""
        st = self._runs.get(p.run_id)
        tsl = {"tsl_peak": st.peak, "tsl_stop": st.stop, "pnl": st.pnl} if st and st.pnl is not None else {}
        decided_on = json.dumps(p.decided_on) if p.decided_on else ""
        if p.leg_no is not None:
            def write(s) -> Written:
                done = write_leg_exit(s, p.run_id, p.leg_no, p.reason, p.threshold, p.value, ist_now_str(),
                                      decided_on)
                return Written(done and done[:2], (done[1],) if done and done[0] else ())

            done = self.exits.submit_now(write, wait_s)
            return done if done else ([], None)

        def write(s) -> Written:
            done = write_run_exit(s, p.run_id, p.reason, p.threshold, p.value, ist_now_str(), tsl, decided_on)
            return Written(done, (done[1],) if done and done[0] else ())

        done = self.exits.submit_now(write, wait_s)
        return done if done is not None else ([], None)

    def _after_written(self, p: PendingExit, ids: list[int], account_id, st: RunState | None = None) -> None:
        st = st or self._runs.get(p.run_id)
        if not ids and account_id is None:  # the run was no longer live: exited by another trigger
            return
        if p.leg_no is not None:
            self._leg_written(p, ids)
            return
        if st:
            st.dirty = False
        self.stats["exits"] += 1
        log.warning("run %s exiting (%s, value %s, threshold %s): intents %s; legs %s", p.run_id, p.reason, p.value,
                    p.threshold, ids, self._legs_priced(st))
        if p.attempts > 1 or p.alarmed_at is not None:
            msg = (f"run {p.run_id}: {p.reason} exit written after {p.attempts} attempts, "
                   f"{time.monotonic() - p.since:.1f} s after the breach at {p.since_ist}")
            log.warning("%s", msg)
            if self.notifier is not None and p.alarmed_at is not None:
                self.notifier.alert("exit_written", msg, subject=f"run {p.run_id}")

    def _leg_written(self, p: PendingExit, ids: list[int]) -> None:
        self.stats["leg_exits"] += 1
        level = f" at {p.threshold:g} (price {p.value:g})" if p.threshold is not None and p.value is not None else ""
        msg = f"{p.label}: {p.reason}{level}: exit intents {ids}; the run's other legs stay"
        if p.attempts > 1 or p.alarmed_at is not None:
            msg += f" (written after {p.attempts} attempts, {time.monotonic() - p.since:.1f} s after {p.since_ist})"
        log.warning("%s", msg)
        if self.notifier is not None and p.reason != LegExit.CLOSE:
            self.notifier.alert("leg_stop", msg, subject=p.label)

    # ---- exits that did not commit: retry until written, alarm loudly --------------------------------------
    def _not_written(self, p: PendingExit, exc: BaseException) -> None:
        self.stats["exit_write_failures"] += 1
        err = classify(exc)
        if p.attempts == 1 and err is None:  # not a database fault: a bug; keep its traceback
            log.error("%s: writing its %s exit failed", p.label, p.reason, exc_info=exc)
        else:
            log.log(logging.WARNING if isinstance(err, DbLocked) and p.alarmed_at is None else logging.ERROR,
                    "%s: %s exit not written (attempt %d): %s; retrying", p.label, p.reason, p.attempts,
                    p.error)
        # waiting for the lock is alarmed by the watch thread if it lasts; any other fault at once
        if not isinstance(err, DbLocked):
            self._alarm(p)
        self._retry_wake.set()

    def _alarm(self, p: PendingExit) -> None:
        with self._lock:
            now = time.monotonic()
            if p.alarmed_at is not None and now - p.alarmed_at < REALARM_S:
                return
            p.alarmed_at = now
        msg = (f"EXIT NOT WRITTEN: {p.label} breached {p.reason} at {p.since_ist} (value {p.value}, threshold "
               f"{p.threshold}); its exit is still not written after {now - p.since:.1f} s and {p.attempts} "
               f"attempt(s): {p.error or 'waiting for the database write lock'}. Retrying until written; the "
               f"position is open meanwhile")
        log.error("%s", msg)
        if self.notifier is not None:
            self.notifier.alert("exit_not_written", msg, subject=p.label)

    def retry_pending(self, force: bool = False) -> int:
        """Try every pending exit whose backoff has passed (``force``: all of them). Returns how many were tried."""
        now = time.monotonic()
        due = [p for p in self.pending_exits() if not p.busy and (force or p.next_try <= now)]
        for p in due:
            self._attempt(p)
        return len(due)

    def _retry_loop(self) -> None:
        while not self._stop.is_set():
            self._retry_wake.wait(0.1)
            self._retry_wake.clear()
            try:
                self.retry_pending()
                if self._reentry_due:
                    self.process_reentries()
            except Exception:  # noqa: BLE001 - this loop must outlive any one failure
                log.exception("risk: exit retry loop")

    def _watch_loop(self) -> None:
        """Alarms only, never the database: it must speak while the database is the problem."""
        while not self._stop.wait(0.2):
            now = time.monotonic()
            for p in self.pending_exits():
                if now - p.since >= ALARM_AFTER_S:
                    self._alarm(p)

    def _prices_of(self, st: RunState | None) -> list[list]:
        """[symbol, action, qty, entry price, ltp, age s, valued at] per leg: the prices an exit was decided on, kept
        in its risk event (the Journal page). Plain lists, cheap on the tick path; JSON'd before the write. A record
        for display only: whatever goes wrong here gives [] and never holds up the exit."""
        if st is None:
            return []
        try:
            now, out = self.md.clock(), []
            for leg in st.legs:
                p = self.md.last_price(leg.symbol, leg.exchange)
                out.append([leg.symbol, leg.action, leg.quantity, leg.entry_price, p[0] if p else None,
                            round(now - p[1], 3) if p else None, leg_price(leg, p) if p else None])
            return out
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("run %s: recording the prices of its exit decision failed", st.run_id)
            return []

    def _legs_priced(self, st: RunState | None) -> str:
        """'SYMBOL SIDE qty @entry ltp x (age s)' per leg: the prices an exit was decided on, for the log."""
        if st is None:
            return "-"
        now, out = self.md.clock(), []
        for leg in st.legs:
            p = self.md.last_price(leg.symbol, leg.exchange)
            seen = f"ltp {p[0]} ({now - p[1]:.1f} s old)" if p else "no price"
            if p and leg_price(leg, p) != p[0]:
                seen += ", older than the fill: valued at the fill"
            out.append(f"{leg.symbol} {leg.action} {leg.quantity} @{leg.entry_price} {seen}")
        return "; ".join(out)

    # ---- periodic sweep --------------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Every risk_sweep_s: reload the live runs from the database, refresh stale prices by REST, evaluate every
        run (whatever happened to in-memory state), retry pending exits, repair failed exit orders."""
        try:
            self.reload()
        except Exception as exc:  # noqa: BLE001 - evaluate what is loaded rather than nothing
            log.error("risk sweep: reloading runs failed: %s", exc)
        self._refresh_stale_prices()
        for run in list(self._runs.values()):
            self.evaluate(run)
        for key, legs in list(self._leg_watch.items()):
            p = self.md.last_price(*key)
            if p is not None:
                self._check_legs(legs, p)
        self.retry_pending()
        if self._reentry_due:
            self.process_reentries()
        try:
            self._repair_exits()
        except Exception as exc:
            log.exception("risk sweep: repairing failed exits")
            if self.notifier is not None:
                self.notifier.alert("exit_not_written", f"failed or late-filled exit orders could not be re-sent: "
                                    f"{classify(exc) or exc}; retried on the next sweep", subject="repair")
        try:
            self._maybe_persist(force=True)
        except Exception as exc:  # noqa: BLE001 - display only
            log.warning("risk: persisting run P&L failed: %s", exc)
        self._maybe_heartbeat()

    def _refresh_stale_prices(self) -> None:
        now, max_age = self.md.clock(), self.cfg.risk_sweep_s
        need: dict[int, set] = {}
        for run in list(self._runs.values()):
            for key in run.keys:
                p = self.md.last_price(*key)
                if p is None or now - p[1] > max_age:
                    need.setdefault(run.account_id, set()).add(key)
        for key, waits in list(self._waiting.items()):  # a re-entry waiting for the price to come back
            p = self.md.last_price(*key)
            if p is None or now - p[1] > max_age:
                need.setdefault(waits[0].account_id, set()).add(key)
        for account_id, keys in need.items():
            try:
                results = self.ctx.client(account_id).multiquotes(
                    [{"symbol": s, "exchange": e} for s, e in sorted(keys)])
            except Exception as exc:  # noqa: BLE001 - a failed fallback must not stop the sweep
                log.warning("risk: REST quotes for account %s failed: %s", account_id, exc)
                continue
            for item in results:
                if isinstance(item.get("data"), dict):
                    self.stats["rest_quotes"] += 1
                    self.md.ingest_quote(item.get("symbol"), item.get("exchange"), item["data"])

    def _repair_exits(self) -> None:
        """Exits that failed get a new order (up to exit_retries); legs that filled after the run started
        exiting get their exit too (a late entry, or the late remainder of a partly filled one). Before that,
        remainders still working at the broker are cancelled (``_cancel_remainders``)."""
        self._cancel_remainders()
        with self.ctx.db.read() as s:
            due = repairs_due(s)
        if not due:
            return
        alerts: list[tuple[str, str]] = []

        def write(s) -> Written:
            alerts.clear()  # a retried transaction starts its report afresh
            accounts = self._retry_failed(s, alerts) + self._exit_late_fills(s) + exit_late_remainders(s)
            return Written(None, tuple(dict.fromkeys(accounts)))

        self.exits.submit_now(write)
        for subject, msg in alerts:
            if self.notifier is not None:  # an exit that cannot be sent is an alert, not only a log line
                self.notifier.alert("exit_failed", msg, subject=subject)
            service_log(self.ctx.db, "risk", "ERROR", msg)

    @property
    def _cancels(self) -> CancelSender:
        sender = self.__dict__.get("_cancel_sender")
        if sender is None:
            sender = self.__dict__["_cancel_sender"] = CancelSender(self.ctx, max(2.0, self.cfg.risk_sweep_s))
        return sender

    def _cancel_remainders(self) -> None:
        """Remainders still working at the broker that must not fill on their own are cancelled
        (services/risk_partial.py); a cancelled exit is then re-sent for what is left by ``_retry_failed``."""
        cancel_remainders(self.ctx, self._cancels)

    def _retry_failed(self, s, alerts: list[tuple[str, str]]) -> list[int]:
        """Failed exits get a new order (up to exit_retries), then are flagged. Returns the accounts of the new
        orders."""
        queued = []
        for ex, failed, run, tag in failed_exits(s):
            if ex.exit_attempts < self.cfg.exit_retries:
                ex.exit_attempts += 1
                write_exit_intent(s, run, tag, ex, _unfilled(failed))
                self.stats["retries"] += 1
                queued.append(run.account_id)
            elif self._flag_exit_failed(s, ex, run, failed):
                alerts.append((f"execution {ex.id}", f"EXIT FAILED: run {run.id} ({tag}) leg {ex.leg_no} {ex.symbol}: "
                               f"exit order {failed.status} after {ex.exit_attempts} retries "
                               f"({failed.status_reason}); position still open, act manually"))
        return queued

    def _flag_exit_failed(self, s, ex, run, failed) -> bool:
        prefix = f"execution {ex.id}:"
        if not flag_once(s, run.id, run.account_id, "exit_failed", prefix,
                         f"{prefix} {ex.symbol} exit {failed.status}: {failed.status_reason}", action="alert",
                         exit_order_ids=json.dumps([failed.client_order_id]), ts_ist=ist_now_str()):
            return False
        self.stats["exit_failed"] += 1
        return True

    @staticmethod
    def _exit_late_fills(s) -> list[int]:
        """Legs that filled after their run started exiting get their exit. Returns the accounts of the exits."""
        rows = late_fills(s)
        for ex, run, tag in rows:
            write_exit_intent(s, run, tag, ex)
        return [run.account_id for _, run, _ in rows]

    # ---- persistence and health ------------------------------------------------------------------------------
    def _maybe_persist(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_persist < self.cfg.flush_interval_s:
            return
        self._last_persist = now
        with self._lock:
            dirty = [(r.run_id, r.pnl, r.peak, r.stop) for r in self._runs.values()
                     if r.dirty and r.run_id not in self._pending and r.run_id not in self._written]
            for r in self._runs.values():
                r.dirty = False
            best = [(leg.stop.best, leg.execution_id) for legs in self._leg_watch.values() for _, leg in legs
                    if leg.stop.dirty]
            for legs in self._leg_watch.values():
                for _, leg in legs:
                    leg.stop.dirty = False
        if not dirty and not best:
            return
        with self.ctx.db.write() as s:  # one executemany: the writer lock is held for ~1 ms, not one ORM UPDATE per run
            persist_pnl(s, [(pnl, peak, stop, run_id) for run_id, pnl, peak, stop in dirty])
            if best:
                persist_leg_best(s, best)

    def _maybe_heartbeat(self) -> None:
        now = time.monotonic()
        if self._stopped or now - self._last_beat < self.cfg.heartbeat_s:
            return
        self._last_beat = now
        pending = self.pending_exits()
        blocked = [p for p in pending if p.alarmed_at is not None]
        details = dict(runs=len(self._runs), pending_exits=len(pending), **self.stats)
        if blocked:
            details["error"] = f"{len(blocked)} exit(s) not written: {blocked[0].error}"
        try:
            heartbeat(self.ctx.db, "risk", "error" if blocked else "ok", details)
        except Exception as exc:  # noqa: BLE001 - the database may be the very problem; alarms do not need it
            log.warning("risk heartbeat not written: %s", exc)
