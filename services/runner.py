"""The background service: one process per database (lock file), every component, the periodic jobs.

Start-up order (design guide §13): instruments (primary account) -> reconciler first pass (orphaned claims
re-queued, in-flight intents settled) -> market data -> position monitor -> risk manager -> dispatcher ->
poller / account sync / option-chain sessions / square-off / timed strategies on an APScheduler
BackgroundScheduler. SIGTERM / SIGINT stop it cleanly: scheduler, threads, broker clients, then the lock.
"""
from __future__ import annotations

import fcntl
import json
import logging
import gc
import os
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from config import Settings, parse_watchlist
from db import Database
from db.accounts import list_accounts
from db.clock import apply_settings, ist_now_str
from db.commands import finish_control, queued_controls
from db.vocab import CommandStatus
from db.wake import WakeListener
from services.account_limits import AccountLimits
from services.account_sync import AccountSync
from services.alerts import Notifier
from services.broker_calls import BrokerHealth, CallRecorder
from services.context import ServiceContext
from services.day_summary import DaySummaries
from services.health import heartbeat, service_log
from services.control import DEFERRED, ControlDeps, ControlHandlers
from services.margin_check import MarginChecker
from services.flatten import Flattener
from services.dispatcher import OrderDispatcher
from services.entry_convert import EntryConverter
from services.instruments import load_instruments
from services.market_data import MarketDataManager
from services.option_chain import OptionChainSessions
from services.poller import OrderPoller
from services.position_exit import PositionSquareOffs
from services.positions import PositionMonitor
from services.reconciler import Reconciler
from services.risk import RiskManager
from services.square_off import SquareOffs
from services.stops import StopWatcher
from services.timed import TimedStrategies

log = logging.getLogger("services.runner")


class AlreadyRunning(RuntimeError):
    pass


class InstanceLock:
    """fcntl.flock on ``<db>.service.lock`` (pid inside). The kernel drops it if the process dies."""

    def __init__(self, db_path: str | Path):
        self.path = Path(str(db_path) + ".service.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"another AlgoMirror service (pid {holder}) already runs on this database "
                                 f"(lock {self.path}); not starting a second one") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class ServiceRunner:
    def __init__(self, settings: Settings, db: Database | None = None):
        ControlHandlers.check()  # a command the UI can queue that nothing here carries out: refuse to start
        self.settings = settings
        self.calls = CallRecorder()
        self.ctx = ServiceContext(db or Database.from_settings(settings), settings, recorder=self.calls)
        self.broker_health = BrokerHealth(self.ctx, self.calls)
        self.notifier = Notifier(self.ctx.db, settings.alerts)
        self.dispatcher = OrderDispatcher(self.ctx, on_change=self.on_runs_changed, notifier=self.notifier)
        self.reconciler = Reconciler(self.ctx, inflight=self.dispatcher.inflight_ids, on_change=self.on_runs_changed,
                                     notifier=self.notifier)
        self.poller = OrderPoller(self.ctx, on_fill=self.on_runs_changed)
        self.account_sync = AccountSync(self.ctx)
        self.entry_convert = EntryConverter(self.ctx, self.notifier)
        # Built in start(); still None for the reconciler's first pass (its on_change) and for a stop() after a
        # start that failed before them.
        self.md = self.positions = self.risk = self.chains = self.account_limits = self.stops = None
        self.scheduler = BackgroundScheduler(timezone="UTC", job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
        self.control = ControlHandlers(ControlDeps(
            ctx=self.ctx, account_sync=self.account_sync, risk=lambda: self.risk, market_data=lambda: self.md,
            instruments_loaded=lambda: self.instruments_loaded, load_instruments_soon=self.load_instruments_soon,
            flatten=lambda command_id, accounts: self.flattener.start(command_id, accounts),
            margin_check=lambda command_id, payload: self.margin_checker.start(command_id, payload),
            summarise_day=lambda: self.day_summaries.summarise(),
            square_off_position=lambda command_id, payload: self.position_exits.start(command_id, payload)))
        self.margin_checker = MarginChecker(self.ctx)
        self.day_summaries = DaySummaries(self.ctx)
        self.flattener = Flattener(self.ctx, lambda: self.risk, self.dispatcher.wake, self.notifier,
                                   poll_now=self.poller.poll_now, submit=self.dispatcher.submit_now,
                                   wait_idle=self.dispatcher.wait_idle)
        self.position_exits = PositionSquareOffs(self.ctx, self.dispatcher, lambda: self.risk,
                                                 self.flattener.account_lock)
        self.wake_listener = WakeListener(self.ctx.db.path, self.on_wake)
        self.square_offs = SquareOffs(self.ctx, self.flattener, self.notifier)
        self.timed = TimedStrategies(self.ctx, lambda: self.risk, self.margin_checker.answers, self.notifier,
                                     wake=self.dispatcher.wake)
        self.job_errors: dict[str, int] = {}
        self.job_last_ok: dict[str, float] = {}
        self._control_wake, self._control_stop = threading.Event(), threading.Event()
        self._control_thread = threading.Thread(target=self._control_loop, name="control", daemon=True)
        self.instruments_loaded = False
        self.started_at = time.monotonic()

    # ---- start-up ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.ctx.db.own_checkpoints()  # WAL checkpoints on a timer job, never inside a risk exit's commit
        self.notifier.start()
        self._load_instruments()
        self.reconciler.startup()
        self._start_market_components()
        self.dispatcher.start()
        self._schedule_jobs()
        self.scheduler.start()
        self._control_thread.start()
        self.wake_listener.start()
        heartbeat(self.ctx.db, "runner", "ok", {"pid": os.getpid(), "db": str(self.ctx.db.path)})
        # Latency: move everything allocated at start-up (modules, symbol master, ORM metadata) out of the
        # collector's reach, so the periodic full collections scan only what was allocated since: shorter pauses
        # on the tick -> risk -> exit path.
        gc.collect()
        gc.freeze()
        log.info("AlgoMirror service started (db %s)", self.ctx.db.path)

    def _load_instruments(self) -> bool:
        """Symbol master from the primary account. True once loaded (False: no primary yet, or it failed)."""
        primary = next((a for a in list_accounts(self.ctx.db, active_only=True) if a.is_primary), None)
        if primary is None:
            return False
        try:
            n = load_instruments(self.ctx, primary.id)
            self.instruments_loaded = n > 0
            log.info("symbol master: %s instruments from account %s", n, primary.name)
        except Exception as exc:  # the service must still reconcile and place orders
            service_log(self.ctx.db, "runner", "ERROR", f"loading instruments failed: {type(exc).__name__}: {exc}")
        return self.instruments_loaded

    def ensure_instruments(self) -> bool:
        """Load the symbol master if start-up could not (e.g. the first account was added after start)."""
        return self.instruments_loaded or self._load_instruments()

    def load_instruments_soon(self) -> None:
        """ensure_instruments as a one-off job of its own: a broker's master can take seconds to download, and
        the control job must stay free for the commands behind it (a manual exit among them)."""
        self.scheduler.add_job(self._guard("load_instruments", self.ensure_instruments), id="load_instruments",
                               name="load_instruments", replace_existing=True)

    def _start_market_components(self) -> None:
        self.md = MarketDataManager(self.ctx, notifier=self.notifier)
        self.md.start()
        # Always-on watchlist (indices): a new user sees live prices on the dashboard within seconds.
        self.md.subscribe("watchlist", parse_watchlist(self.settings.service.watchlist), 2)
        self.positions = PositionMonitor(self.ctx, self.md)
        self.risk = RiskManager(self.ctx, self.md, on_exit_enqueued=self.dispatcher.wake, dispatcher=self.dispatcher,
                                notifier=self.notifier)
        self.risk.start()
        self.chains = OptionChainSessions(self.ctx, self.md)
        self.account_limits = AccountLimits(self.ctx, self.md, self.flattener.start, self.notifier,
                                            exits=self.dispatcher)
        # Quick Order stop-loss / target: exits through the dispatcher like the risk manager's
        self.stops = StopWatcher(self.ctx, self.md, self.dispatcher, refresh_account=self.account_sync.refresh,
                                 notifier=self.notifier)
        self.stops.start()
        self.on_runs_changed(set())

    def _schedule_jobs(self) -> None:
        sv = self.settings.service
        jobs = [("poller", self.poller.run_once, sv.poller_interval_s),
                ("account_sync", self.account_sync.run_once, min(sv.funds_refresh_s, 1.0)),
                ("reconciler", self.reconciler.run_once, sv.reconcile_interval_s),
                # LIMIT strategy entries still working after their 'convert after N s': modifyorder to MARKET
                ("entry_convert", self.entry_convert.run_once, 1.0),
                ("heartbeat", self.beat, sv.heartbeat_s),
                ("broker_calls", self.broker_health.flush, 1.0),
                ("account_ping", self.broker_health.ping_all, sv.account_ping_s),
                ("wal_checkpoint", self.ctx.db.checkpoint, 1.0),
                # flush() also writes the P&L snapshot every pnl_snapshot_s
                ("positions_flush", self.positions.flush, sv.flush_interval_s),
                ("positions_subs", self.positions.refresh_subscriptions, 1.0),
                # reload picks up fills made outside this process's callbacks (e.g. after a restart)
                ("risk_sweep", self.risk.sweep, sv.risk_sweep_s), ("risk_reload", self.risk.reload, 1.0),
                ("account_limits", self.account_limits.reload, 1.0),
                ("square_off", self.square_offs.run_once, self.settings.market.square_off_check_s),
                # saved strategies' timed entries and exits (db/schedules.py)
                ("timed", self.timed.run_once, self.settings.market.square_off_check_s),
                ("stops_reload", self.stops.reload, 1.0), ("stops_sweep", self.stops.sweep, sv.risk_sweep_s),
                ("chain_process", self.chains.process, 1.0),
                ("chain_cleanup", self.chains.cleanup, sv.chain_cleanup_s),
                # the trading day's summary once its close (day_summary_at IST) has passed
                ("day_summary", self.day_summaries.end_of_day, 30.0)]
        # Spread over the second, not all due at once: started together, a dozen 1 s jobs woke in the same
        # millisecond every second and queued for the writer lock and the GIL together, and an order claimed in
        # that burst waited behind all of them (a 3-statement flush held the lock 40-86 ms while the others ran).
        start = datetime.now(timezone.utc)
        for i, (name, fn, every) in enumerate(jobs):
            phase = timedelta(seconds=min(every, 1.0) * i / len(jobs))
            self.scheduler.add_job(self._guard(name, fn), "interval", seconds=every, id=name, name=name,
                                   start_date=start + timedelta(seconds=every) + phase)

    def _guard(self, name: str, fn):
        def job():
            try:
                fn()
                self.job_last_ok[name] = time.monotonic()
            except Exception as exc:
                self.job_errors[name] = self.job_errors.get(name, 0) + 1
                log.exception("job %s failed", name)
                try:
                    service_log(self.ctx.db, name, "ERROR", f"{type(exc).__name__}: {exc}"[:500])
                except Exception:
                    log.exception("could not record the failure of %s", name)
        return job

    # ---- callbacks ---------------------------------------------------------------------------------------------
    def on_runs_changed(self, run_ids: set[int]) -> None:
        """Fills / failures changed runs: the risk manager and the position monitor re-read what they track."""
        if self.risk:
            self.risk.reload()
        if self.positions:
            self.positions.refresh_subscriptions()

    def on_wake(self) -> None:
        """The app or the local API committed work (db/wake.py): send queued orders and carry out control commands
        now, not at the next poll (a Flatten pressed in the app starts at once instead of up to 0.25 s later)."""
        self.dispatcher.wake()
        self._control_wake.set()

    def _control_loop(self) -> None:
        """Control commands on a thread of their own: at once when woken, else every control_poll_s (a command
        written by something that sends no wake, or whose datagram was lost). A scheduler job could not be
        pulled forward while it runs (that run would only be skipped); this loop runs again right after."""
        job, every = self._guard("control", self.process_commands), self.settings.service.control_poll_s
        while not self._control_stop.is_set():
            job()
            self._control_wake.wait(every)
            self._control_wake.clear()

    # ---- control commands --------------------------------------------------------------------------------------
    def process_commands(self) -> int:
        """Carry out every queued control command, each marked done / failed in its own write; returns how many."""
        with self.ctx.db.read() as s:
            cmds = queued_controls(s)
        for cid, kind, payload in cmds:
            try:
                result = self.control.handle(kind, json.loads(payload or "{}"), cid)
                status = CommandStatus.DONE.value
            except Exception as exc:
                result, status = f"{type(exc).__name__}: {exc}", CommandStatus.FAILED.value
                log.warning("control command %s (%s) failed: %s", cid, kind, exc)
            if result == DEFERRED:  # its worker finishes it
                continue
            with self.ctx.db.write() as s:
                finish_control(s, cid, status, result)
        return len(cmds)

    # ---- health ------------------------------------------------------------------------------------------------
    def beat(self) -> None:
        sv = self.settings.service
        db = self.ctx.db
        heartbeat(db, "runner", "ok", {"pid": os.getpid(), "uptime_s": round(time.monotonic() - self.started_at),
                                       "job_errors": self.job_errors})
        heartbeat(db, "dispatcher", "ok" if self.dispatcher.is_alive() else "down", self.dispatcher.stats)
        for name, every, details in (("poller", sv.poller_interval_s, self.poller.last_cycle),
                                     ("reconciler", sv.reconcile_interval_s, self.reconciler.last_result),
                                     ("account_sync", 1.0, {"errors": self.account_sync.errors})):
            last = self.job_last_ok.get(name)
            stale = last is None or time.monotonic() - last > 3 * every + 2
            status = "starting" if last is None and time.monotonic() - self.started_at < 3 * every + 2 else \
                ("stale" if stale else "ok")
            if status == "ok" and _has_errors(details):  # running, but not doing its job for every account
                status = "degraded"
            heartbeat(db, name, status, details)

    # ---- shutdown ----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        log.info("AlgoMirror service stopping")
        self._quietly(self.wake_listener.stop)
        self._control_stop.set()
        self._control_wake.set()
        if self._control_thread.is_alive():
            self._control_thread.join(10)  # a command being carried out finishes (its result is written)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.dispatcher.stop()
        self.poller.close()
        if self.positions:
            self._quietly(self.positions.flush)
        if self.md:
            self._quietly(self.md.stop)  # after the feed thread: no tick reaches the risk manager any more
        if self.risk:
            self._quietly(self.risk.stop)
        if self.stops:
            self._quietly(self.stops.stop)
        self.ctx.close()
        for comp in ("runner", "dispatcher", "poller", "reconciler", "account_sync"):
            self._quietly(lambda c=comp: heartbeat(self.ctx.db, c, "stopped", {}))
        self._quietly(self.notifier.stop)

    @staticmethod
    def _quietly(fn) -> None:
        try:
            fn()
        except Exception:
            log.exception("during shutdown")


def _has_errors(details: dict) -> bool:
    """A component's details report a current failure: a non-empty 'errors' map, or an 'errors' count above 0."""
    errors = details.get("errors") if isinstance(details, dict) else None
    return bool(errors) if not isinstance(errors, (int, float)) else errors > 0


def settings_for(db_path: str | None, base: Settings) -> Settings:
    return replace(base, db=replace(base.db, path=db_path)) if db_path else base


def run(settings: Settings, stop_event: threading.Event) -> None:
    """Run until ``stop_event`` is set (the signal handlers in __main__ set it)."""
    shift = apply_settings(settings.market)  # the process's market clock: a test's or the demo's, else the real one
    if shift:
        log.warning("market clock moved: %s (real clock %+.0f s)", ist_now_str(), shift.total_seconds())
    runner = ServiceRunner(settings)
    try:
        runner.start()
        # with a timeout: the kernel may hand SIGTERM to any thread, and then the main thread, blocked in a wait
        # with none, never got to run the Python handler (CI: a service ignored its SIGTERM for 20 s)
        while not stop_event.wait(0.5):
            pass
    finally:
        runner.stop()
