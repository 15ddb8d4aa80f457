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
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from db.intents import new_client_order_id, transition
from db.models import Execution, OrderIntent, RiskEvent, Strategy, StrategyRun, utcnow
from db.order_fsm import Status
from db.rawsql import insert_row, raw_cursor, update_rows
from services.common import ServiceContext, heartbeat, ist_now_str, service_log
from services.market_data import MarketDataManager
from services.pnl import ACTIVE_LEG, Leg, fill_seen_at, leg_price, run_pnl

if TYPE_CHECKING:
    from services.dispatcher import OrderDispatcher

log = logging.getLogger("services.risk")
CONSUMER = "risk"
LIVE_RUN = ("entering", "active")
LIVE_IN = f"IN ({', '.join(repr(x) for x in LIVE_RUN)})"  # the same statuses in SQL
FAILED_EXIT = ("rejected", "cancelled", "denied")


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
    exiting: bool = False
    keys: set = field(default_factory=set)


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
    """A reloaded run keeps its in-memory state; the peak only ratchets up."""
    peaks = [p for p in (st.peak, old.peak) if p is not None]
    st.peak = max(peaks) if peaks else None
    if st.peak is not None and st.trailing_sl:
        st.stop = st.peak - st.trailing_sl
    st.pnl, st.exiting, st.dirty = old.pnl, old.exiting, old.dirty


def exit_priority(action: str, leg_no: int) -> int:
    """Exits that BUY (closing shorts) go first: margin is released in the right order."""
    return (0 if action == "BUY" else 20) + leg_no


def exit_intent_fields(account_id: int, run_id: int, tag: str, ex, qty: int | None = None) -> dict:
    """The reduce-only MARKET order that closes one leg (opposite side, same qty); BUY exits sort first."""
    action = "SELL" if ex.action == "BUY" else "BUY"
    return dict(client_order_id=new_client_order_id(), account_id=account_id, run_id=run_id, execution_id=ex.id,
                purpose="exit", source="risk", priority=exit_priority(action, ex.leg_no), strategy_tag=tag[:64],
                symbol=ex.symbol, exchange=ex.exchange, action=action, requested_qty=qty or ex.quantity,
                pricetype="MARKET", product=ex.product)


class ExitLeg(NamedTuple):
    id: int
    leg_no: int
    action: str
    symbol: str
    exchange: str
    quantity: int
    product: str


RUNS, EXECUTIONS = StrategyRun.__table__, Execution.__table__
RUN_TAG_SQL = ("SELECT r.account_id, s.name FROM strategy_runs r JOIN strategies s ON s.id = r.strategy_id "
               "WHERE r.id = ?")
ENTERED_LEGS_SQL = (f"SELECT {', '.join(ExitLeg._fields)} FROM executions WHERE run_id = ? AND status = 'entered' "
                    "ORDER BY leg_no, id")


PERSIST_SQL = ("UPDATE strategy_runs SET pnl = ?, tsl_peak = ?, tsl_stop = ? "
               f"WHERE id = ? AND status {LIVE_IN}")
LIVE_RUNS_SQL = ("SELECT r.id, r.account_id, r.max_loss, r.max_profit, r.trailing_sl, r.tsl_peak, r.tsl_stop, r.pnl, "
                 "s.name FROM strategy_runs r JOIN strategies s ON s.id = r.strategy_id "
                 f"WHERE r.status {LIVE_IN} ORDER BY r.id")
LIVE_LEGS_SQL = ("SELECT e.run_id, e.id, e.leg_no, e.symbol, e.exchange, e.action, e.quantity, e.product, e.status, "
                 "e.entry_price, e.exit_price, (julianday(e.updated_at) - 2440587.5) * 86400.0 "
                 "FROM executions e JOIN strategy_runs r ON r.id = e.run_id "
                 f"WHERE r.status {LIVE_IN} ORDER BY e.run_id, e.leg_no, e.id")


def write_exit_intent(s, run: StrategyRun, tag: str, ex: Execution, qty: int | None = None) -> OrderIntent:
    intent = OrderIntent(**exit_intent_fields(run.account_id, run.id, tag, ex, qty))
    s.add(intent)
    s.flush()
    ex.status, ex.exit_intent_id = "exiting", intent.id
    return intent


class RiskManager:
    def __init__(self, ctx: ServiceContext, md: MarketDataManager, on_exit_enqueued: Callable[[], None],
                 dispatcher: OrderDispatcher | None = None):
        """``on_exit_enqueued`` wakes the dispatcher. With ``dispatcher`` (the service's own), ``exit_run`` claims
        the run's first exit (BUY first) in the transaction that writes the exits and hands it to a dispatcher
        worker, which POSTs it and then the remaining legs in order (the tick -> exit hot path)."""
        self.ctx, self.md, self.on_exit_enqueued = ctx, md, on_exit_enqueued
        self.dispatcher = dispatcher
        self.cfg = ctx.settings.service
        self._runs: dict[int, RunState] = {}
        self._by_key: dict[tuple[str, str], list[RunState]] = {}
        self._lock = threading.RLock()
        self._last_persist = self._last_beat = float("-inf")
        self._stopped = False
        self.stats = dict(exits=0, retries=0, exit_failed=0, rest_quotes=0, evaluations=0)
        md.add_listener(self._on_tick)

    # ---- loading ---------------------------------------------------------------------------------------------
    def reload(self) -> None:
        fresh = self._load_runs()
        with self._lock:
            for rid, st in fresh.items():
                if rid in self._runs:
                    carry_state(st, self._runs[rid])
            by_key: dict = {}
            for st in fresh.values():
                for key in st.keys:
                    by_key.setdefault(key, []).append(st)
            self._runs, self._by_key = fresh, by_key
        self._sync_subscriptions(set(by_key))
        self._maybe_persist()
        self._maybe_heartbeat()

    def _load_runs(self) -> dict[int, RunState]:
        """Every live run with its legs: two plain SELECTs (this runs every second, beside the feed thread)."""
        with self.ctx.db.read() as s:
            cur = raw_cursor(s)
            rows = cur.execute(LIVE_RUNS_SQL).fetchall()
            execs = cur.execute(LIVE_LEGS_SQL).fetchall() if rows else []
        legs: dict[int, list[Leg]] = {}
        clock_now, wall_now = self.md.clock(), time.time()
        for run_id, *fields, filled_epoch in execs:
            leg = Leg(*fields)
            leg.fill_seen = fill_seen_at(leg.status, filled_epoch, clock_now, wall_now)
            legs.setdefault(run_id, []).append(leg)
        out = {}
        for run_id, account_id, max_loss, max_profit, trailing_sl, peak, stop, pnl, name in rows:
            run_legs = legs.get(run_id, [])
            if not any(leg.status == "entered" for leg in run_legs):
                continue
            out[run_id] = RunState(run_id, account_id, name, max_loss, max_profit, trailing_sl, run_legs,
                                   peak=peak, stop=stop, pnl=pnl,
                                   keys={leg.key for leg in run_legs if leg.status in ACTIVE_LEG})
        return out

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
            for run in runs:
                self.evaluate(run)

    def evaluate(self, run: RunState) -> tuple[str, float, float] | None:
        """Recompute the run's P&L from the latest prices and exit on a breach. Returns the breach, if any."""
        with self._lock:
            if run.exiting:
                return None
            pnl = run_pnl(run.legs, self.md.last_price)
            if pnl is None:
                return None
            self.stats["evaluations"] += 1
            breach = check_limits(run, pnl[0] + pnl[1])
            if breach is None:
                return None
            run.exiting = True
        try:
            self.exit_run(run.run_id, *breach)
        except SQLAlchemyError:
            run.exiting = False  # the next tick or sweep tries again
            log.exception("exit of run %s failed to write", run.run_id)
        return breach

    def run_state(self, run_id: int) -> RunState | None:
        return self._runs.get(run_id)

    # ---- the one exit path -----------------------------------------------------------------------------------
    def exit_run(self, run_id: int, reason: str, threshold: float | None = None,
                 value: float | None = None) -> list[int]:
        """Move the run to 'exiting' and queue one exit per entered leg. Idempotent: [] if already exiting."""
        st = self._runs.get(run_id)
        value = st.pnl if value is None and st else value
        claimed, account_id = None, None
        try:
            with self.ctx.db.write() as s:  # one transaction: the exits, and the first one claimed 'sent'
                written = self._write_exits(s, run_id, reason, threshold, value, st)
                if written is None:
                    return []
                ids, account_id = written
                if ids and self.dispatcher is not None:
                    claimed = self.dispatcher.claim_next_in(s, account_id)
        except BaseException:
            if claimed is not None:
                self.dispatcher.release_claim(account_id, claimed)
            raise
        if st:
            st.exiting, st.dirty = True, False
        self.stats["exits"] += 1
        if claimed is not None:
            self.dispatcher.send_claimed(claimed)
        else:
            self.on_exit_enqueued()
        log.warning("run %s exiting (%s, value %s, threshold %s): intents %s; legs %s", run_id, reason, value,
                    threshold, ids, self._legs_priced(st))
        return ids

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

    def _write_exits(self, s, run_id: int, reason: str, threshold, value, st):
        """In the caller's transaction: run -> 'exiting' (CAS), one exit intent per entered leg, queued entries
        cancelled, the risk event. Returns (intent ids, account id), or None if the run was not live (already
        exiting: idempotent). Plain sqlite3 statements (db/rawsql.py): this is the tick -> exit hot path."""
        now = utcnow()
        cur = raw_cursor(s)
        tsl = {"tsl_peak": st.peak, "tsl_stop": st.stop, "pnl": st.pnl} if st and st.pnl is not None else {}
        if update_rows(cur, RUNS, dict(status="exiting", exit_reason=reason[:64], exit_requested_at=now, **tsl),
                       f"id = ? AND status {LIVE_IN}", (run_id,)) != 1:
            return None
        account_id, tag = cur.execute(RUN_TAG_SQL, (run_id,)).fetchone()
        legs = [ExitLeg(*row) for row in cur.execute(ENTERED_LEGS_SQL, (run_id,)).fetchall()]
        fields = [exit_intent_fields(account_id, run_id, tag, ex) for ex in legs]
        ids = [insert_row(cur, OrderIntent.__table__, f, now) for f in fields]
        for ex, intent_id in zip(legs, ids, strict=True):
            update_rows(cur, EXECUTIONS, dict(status="exiting", exit_intent_id=intent_id, updated_at=now),
                        "id = ?", (ex.id,))
        self._cancel_queued_entries(s, cur, run_id)
        insert_row(cur, RiskEvent.__table__, dict(
            run_id=run_id, account_id=account_id, event_type=reason[:32], threshold=threshold, value=value,
            action="exit", ts_ist=ist_now_str(), ts_utc=now,
            exit_order_ids=json.dumps([f["client_order_id"] for f in fields]),
            message=f"{tag}: {reason} exit of {len(ids)} leg(s)"), now)
        return ids, account_id

    @staticmethod
    def _cancel_queued_entries(s, cur, run_id: int) -> None:
        """Entries not yet sent are withdrawn so they cannot open a position after the exit."""
        rows = cur.execute("SELECT id, execution_id FROM order_intents WHERE run_id = ? AND purpose = 'entry' "
                           "AND status = 'queued'", (run_id,)).fetchall()
        for intent_id, ex_id in rows:
            if transition(s, intent_id, Status.QUEUED, Status.CANCELLED, "risk", "run is exiting"):
                update_rows(cur, EXECUTIONS, dict(status="failed", updated_at=utcnow()),
                            "id = ? AND status = 'pending'", (ex_id,))

    # ---- periodic sweep --------------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Every risk_sweep_s: refresh stale prices by REST, evaluate every run, repair failed exits."""
        self._refresh_stale_prices()
        for run in list(self._runs.values()):
            self.evaluate(run)
        self._repair_exits()
        self._maybe_persist(force=True)
        self._maybe_heartbeat()

    def _refresh_stale_prices(self) -> None:
        now, max_age = self.md.clock(), self.cfg.risk_sweep_s
        need: dict[int, set] = {}
        for run in list(self._runs.values()):
            for key in run.keys:
                p = self.md.last_price(*key)
                if p is None or now - p[1] > max_age:
                    need.setdefault(run.account_id, set()).add(key)
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
        exiting get their exit too."""
        with self.ctx.db.read() as s:
            failed = s.scalar(select(Execution.id).join(OrderIntent, OrderIntent.id == Execution.exit_intent_id)
                              .where(Execution.status == "exiting", OrderIntent.status.in_(FAILED_EXIT)).limit(1))
            late = s.scalar(select(Execution.id).join(StrategyRun, StrategyRun.id == Execution.run_id)
                            .where(Execution.status == "entered", StrategyRun.status == "exiting").limit(1))
        if failed is None and late is None:
            return
        alerts: list[str] = []
        with self.ctx.db.write() as s:
            queued = self._retry_failed(s, alerts) + self._exit_late_fills(s)
        for msg in alerts:
            service_log(self.ctx.db, "risk", "ERROR", msg)
        if queued:
            self.on_exit_enqueued()

    def _retry_failed(self, s, alerts: list[str]) -> int:
        rows = s.execute(select(Execution, OrderIntent, StrategyRun, Strategy.name)
                         .join(OrderIntent, OrderIntent.id == Execution.exit_intent_id)
                         .join(StrategyRun, StrategyRun.id == Execution.run_id)
                         .join(Strategy, Strategy.id == StrategyRun.strategy_id)
                         .where(Execution.status == "exiting", OrderIntent.status.in_(FAILED_EXIT))).all()
        queued = 0
        for ex, failed, run, tag in rows:
            if ex.exit_attempts < self.cfg.exit_retries:
                ex.exit_attempts += 1
                write_exit_intent(s, run, tag, ex, max(0, failed.requested_qty - failed.broker_filled_qty))
                self.stats["retries"] += 1
                queued += 1
            elif self._flag_exit_failed(s, ex, run, failed):
                alerts.append(f"EXIT FAILED: run {run.id} ({tag}) leg {ex.leg_no} {ex.symbol}: exit order "
                              f"{failed.status} after {ex.exit_attempts} retries ({failed.status_reason}); "
                              f"position still open, act manually")
        return queued

    def _flag_exit_failed(self, s, ex: Execution, run: StrategyRun, failed: OrderIntent) -> bool:
        prefix = f"execution {ex.id}:"
        if s.scalar(select(RiskEvent.id).where(RiskEvent.run_id == run.id, RiskEvent.event_type == "exit_failed",
                                               RiskEvent.message.startswith(prefix)).limit(1)):
            return False
        s.add(RiskEvent(run_id=run.id, account_id=run.account_id, event_type="exit_failed", action="alert",
                        exit_order_ids=json.dumps([failed.client_order_id]), ts_ist=ist_now_str(),
                        message=f"{prefix} {ex.symbol} exit {failed.status}: {failed.status_reason}"[:512]))
        self.stats["exit_failed"] += 1
        return True

    @staticmethod
    def _exit_late_fills(s) -> int:
        rows = s.execute(select(Execution, StrategyRun, Strategy.name)
                         .join(StrategyRun, StrategyRun.id == Execution.run_id)
                         .join(Strategy, Strategy.id == StrategyRun.strategy_id)
                         .where(Execution.status == "entered", StrategyRun.status == "exiting")).all()
        for ex, run, tag in rows:
            write_exit_intent(s, run, tag, ex)
        return len(rows)

    # ---- persistence and health ------------------------------------------------------------------------------
    def stop(self) -> None:
        """The service is stopping (ticks and jobs have ended): the heartbeat row says 'stopped' from now on."""
        self._stopped = True
        heartbeat(self.ctx.db, "risk", "stopped", dict(runs=len(self._runs), **self.stats))

    def _maybe_persist(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_persist < self.cfg.flush_interval_s:
            return
        self._last_persist = now
        with self._lock:
            dirty = [(r.run_id, r.pnl, r.peak, r.stop) for r in self._runs.values() if r.dirty and not r.exiting]
            for r in self._runs.values():
                r.dirty = False
        if not dirty:
            return
        with self.ctx.db.write() as s:  # one executemany: the writer lock is held for ~1 ms, not one ORM UPDATE per run
            raw_cursor(s).executemany(PERSIST_SQL, [(pnl, peak, stop, run_id) for run_id, pnl, peak, stop in dirty])

    def _maybe_heartbeat(self) -> None:
        now = time.monotonic()
        if self._stopped or now - self._last_beat < self.cfg.heartbeat_s:
            return
        self._last_beat = now
        heartbeat(self.ctx.db, "risk", "ok", dict(runs=len(self._runs), **self.stats))
