"""Crash harness: SIGKILL the real service process at random moments while a 10-account, 4-leg strategy enters
and exits, restart it, and check the simulator's order log against the database.

Used by ``tests/reliability/test_crash.py`` (CI, >= 10 kills) and ``scripts/crash_soak.py`` (>= 100 kills).

Checks (``verify``):
  * linked   - every order the simulator accepted (it has an orderid) for our accounts is linked to exactly one
               intent (``order_intents.broker_order_id``); so no intent reached the broker twice and no order
               exists that we do not know about;
  * settled  - after the final settle no intent is queued / claimed / sent / unknown (nothing lost, nothing
               left hanging), every run is exited or failed and every execution exited or failed;
  * one exit - per execution at most one filled exit intent, and per (account, symbol) the simulator's filled
               quantities net to zero (no exit was sent twice, no position left open);
  * agree    - every filled intent is 'complete' at the simulator with the same quantity.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from db import Database
from db.accounts import add_account, api_key_for
from db.commands import enqueue_control
from db.models import (ControlCommand, Execution, Instrument, LatestPrice, OrderEvent, OrderIntent, StrategyRun,
                       utcnow)
from db.vocab import CommandStatus
from db.strategies import LegSpec, execute_strategy, parse_expiry, save_strategy
from tests import harness
from tests.harness import kill_service, stop_service, wait_for  # noqa: F401 (used by callers too)

ROOT = Path(__file__).resolve().parents[2]
NON_FINAL = ("queued", "claimed", "sent", "unknown")
# Fast but realistic knobs for a subprocess service against the local simulator.
SERVICE_ENV = {
    "APP__SERVICE__DISPATCH_POLL_S": "0.02", "APP__SERVICE__RECONCILE_INTERVAL_S": "0.5",
    "APP__SERVICE__RECONCILE_MAX_CHECKS": "3", "APP__SERVICE__HEARTBEAT_S": "0.5",
    "APP__SERVICE__POLLER_INTERVAL_S": "1.0", "APP__SERVICE__RISK_SWEEP_S": "0.5",
    "APP__SERVICE__FUNDS_REFRESH_S": "5.0", "APP__SERVICE__FLUSH_INTERVAL_S": "0.2",
    "APP__SERVICE__WS_RECONNECT_BASE_S": "0.1", "APP__SERVICE__WS_RECONNECT_MAX_S": "0.5",
    "APP__BROKER__BACKOFF_BASE_S": "0.05", "APP__BROKER__BACKOFF_MAX_S": "0.5",
    "APP__BROKER__READ_TIMEOUT_S": "1.0", "APP__BROKER__CONNECT_TIMEOUT_S": "0.5",
    "APP__BROKER__READ_RETRIES": "1",
}


def service_env(**extra) -> dict:
    env = dict(os.environ, **SERVICE_ENV, PYTHONPATH=str(ROOT))
    env.pop("APP__DB__PATH", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_service(db_path: Path, log_path: Path, env: dict | None = None) -> subprocess.Popen:
    return harness.start_service(db_path, log_path, env or service_env())


@dataclass
class CrashReport:
    kills: int = 0
    rounds: int = 0
    intents: int = 0
    broker_orders: int = 0
    statuses: dict = field(default_factory=dict)
    recoveries: dict = field(default_factory=dict)  # reconciler transitions: what the kills left behind
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"kills={self.kills} rounds={self.rounds} intents={self.intents} broker_orders={self.broker_orders} "
                f"statuses={dict(sorted(self.statuses.items()))} recoveries={dict(sorted(self.recoveries.items()))} "
                f"violations={len(self.violations)} "
                f"time={self.seconds:.0f}s")


class CrashScenario:
    """One simulator, one database, N accounts; ``run(kills)`` drives rounds of enter -> exit with kills."""

    def __init__(self, sim, workdir: Path, accounts: int = 10, seed: int | None = None, log=print,
                 burst: tuple[int, ...] = (1, 1, 2)):
        self.sim, self.workdir = sim, Path(workdir)
        self.burst = burst  # kills per phase, drawn at random (later kills of a burst hit the start-up path)
        self.rng = random.Random(seed)
        self.log = log
        self.db = Database(self.workdir / "crash.db", key_file=self.workdir / "algomirror.key")
        self.log_path = self.workdir / "service.log"
        self.proc: subprocess.Popen | None = None
        self.report = CrashReport()
        self.names: dict[int, str] = {}
        for n in range(accounts):
            name = f"crash{n:02d}-{self.rng.randrange(1 << 30):x}"
            key = sim.create_account(name, capital=1e9)
            self.names[add_account(self.db, name, sim.rest_url, sim.ws_url, key, is_primary=(n == 0),
                                   backup_order=None if n == 0 else n)] = name

    # ---- process control -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.proc = start_service(self.db.path, self.log_path)

    def kill(self) -> None:
        kill_service(self.proc)
        self.report.kills += 1

    def restart_after_kill(self, delay: float) -> None:
        time.sleep(delay)
        self.kill()
        self.start()

    def tail(self, n: int = 3000) -> str:
        out = self.log_path.with_suffix(".out")
        return out.read_text(errors="replace")[-n:] if out.exists() else ""

    # ---- waiting ---------------------------------------------------------------------------------------------
    def _scalar(self, q):
        with self.db.read() as s:
            return s.scalar(q)

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Instruments loaded by the service and a fresh NIFTY price row from the position monitor. Returns expiry."""
        ok = wait_for(lambda: self._scalar(select(func.count()).select_from(Instrument).where(
            Instrument.name == "NIFTY", Instrument.exchange == "NFO", Instrument.instrumenttype == "CE")), timeout)
        assert ok, "service did not load the symbol master:\n" + self.tail()

        def fresh_price():
            p = self._scalar(select(LatestPrice).where(LatestPrice.symbol == "NIFTY",
                                                      LatestPrice.exchange == "NSE_INDEX"))
            return p is not None and p.ltp > 0 and (utcnow() - p.tick_ts).total_seconds() < 60
        assert wait_for(fresh_price, timeout), "no NIFTY price row from the service:\n" + self.tail()
        with self.db.read() as s:
            expiries = set(s.scalars(select(Instrument.expiry).where(
                Instrument.name == "NIFTY", Instrument.exchange == "NFO", Instrument.instrumenttype == "CE")))
        return min(expiries, key=parse_expiry)

    def runs_in(self, run_ids: list[int], statuses: tuple[str, ...]) -> bool:
        with self.db.read() as s:
            return all(st in statuses for st in s.scalars(select(StrategyRun.status).where(
                StrategyRun.id.in_(run_ids))))

    def settle_runs(self, run_ids: list[int], statuses: tuple[str, ...], timeout: float = 60.0) -> None:
        """Keep the service alive (restart it if it died) until the runs reach ``statuses``."""
        if self.proc.poll() is not None:
            self.start()
        if not wait_for(lambda: self.runs_in(run_ids, statuses), timeout, 0.1):
            self.report.violations.append(f"runs {run_ids} did not reach {statuses} within {timeout}s")

    def settle_intents(self, timeout: float = 60.0) -> None:
        if self.proc.poll() is not None:
            self.start()
        wait_for(lambda: not self._scalar(select(func.count()).select_from(OrderIntent).where(
            OrderIntent.status.in_(NON_FINAL))), timeout, 0.1)

    # ---- one round -------------------------------------------------------------------------------------------
    def round(self, expiry: str, kills_left: int) -> None:
        r = self.report.rounds = self.report.rounds + 1
        # rounds take turns: max-loss exits from prices, manual exit_run commands, a flatten of every account
        mode = ("flatten", "max loss", "exit_run")[r % 3]
        by_price = mode == "max loss"
        sid = save_strategy(self.db, f"crash-r{r}", "NIFTY", "NSE_INDEX", expiry, [
            LegSpec("CE", "SELL"), LegSpec("PE", "SELL"),
            LegSpec("CE", "BUY", strike_mode="OTM", offset=2), LegSpec("PE", "BUY", strike_mode="OTM", offset=2)],
            max_loss=20000)
        _, run_ids = execute_strategy(self.db, sid, list(self.names))
        # Entry phase: kill while the dispatcher fans out 40 orders (sometimes twice in a row).
        for _ in range(min(kills_left, self.rng.choice(self.burst))):
            self.restart_after_kill(self.rng.uniform(0.0, 1.2))
            kills_left -= 1
        self.settle_runs(run_ids, ("active", "failed", "exited"))
        # Exit phase.
        with self.db.read() as s:
            live = list(s.scalars(select(StrategyRun.id).where(StrategyRun.id.in_(run_ids),
                                                               StrategyRun.status == "active")))
            sells = sorted(set(s.scalars(select(Execution.symbol).where(
                Execution.run_id.in_(run_ids), Execution.action == "SELL", Execution.status == "entered"))))
        saved, flatten = {}, None
        if by_price:
            for sym in sells:
                saved[sym] = self._quote(sym)
                self.sim.set_price(sym, "NFO", round(saved[sym] * 4 + 200, 1))  # short legs blow up: max loss
        elif mode == "flatten":
            flatten = enqueue_control(self.db, "flatten_all", {})
        else:
            for rid in live:
                enqueue_control(self.db, "exit_run", {"run_id": rid})
        for _ in range(min(kills_left, self.rng.choice(self.burst))):
            self.restart_after_kill(self.rng.uniform(0.0, 1.2))
            kills_left -= 1
        self.settle_runs(run_ids, ("failed", "exited"), timeout=90)
        for sym, px in saved.items():
            self.sim.set_price(sym, "NFO", px)
        if flatten is not None:
            self.settle_command(flatten)
            for acct in self.names:  # a flatten halts the accounts: re-armed for the next round's entries
                self.settle_command(enqueue_control(self.db, "rearm_account", {"account_id": acct}))
        self.log(f"round {r}: kills so far {self.report.kills} ({mode})")

    def settle_command(self, command_id: int, timeout: float = 90.0) -> None:
        """Keep the service alive until the control command has finished (a flatten survives a kill: the command
        stays queued until done and runs again after the restart)."""
        def done():
            if self.proc.poll() is not None:
                self.start()
            with self.db.read() as s:
                return s.get(ControlCommand, command_id).status != CommandStatus.QUEUED
        if not wait_for(done, timeout, 0.1):
            self.report.violations.append(f"control command {command_id} not finished within {timeout}s")
            return
        with self.db.read() as s:
            cmd = s.get(ControlCommand, command_id)
        if cmd.status != CommandStatus.DONE:
            self.report.violations.append(f"command {command_id} ({cmd.kind}) {cmd.status}: {cmd.result}")
        elif "NOT DONE" in (cmd.result or ""):  # e.g. a run's exit still settling after a kill: verify() decides
            self.log(f"command {command_id} ({cmd.kind}): {cmd.result}")

    def _quote(self, symbol: str) -> float:
        key = api_key_for(self.db, next(iter(self.names)))
        r = self.sim.api("quotes", {"apikey": key, "symbol": symbol, "exchange": "NFO"})
        return float(r.json()["data"]["ltp"])

    def run(self, kills: int) -> CrashReport:
        t0 = time.monotonic()
        self.start()
        try:
            expiry = self.wait_ready()
            while self.report.kills < kills:
                self.round(expiry, kills - self.report.kills)
            self.settle_intents()
        finally:
            if self.proc and self.proc.poll() is None:
                rc = stop_service(self.proc)
                if rc != 0:
                    self.report.violations.append(f"service exit code {rc} on SIGTERM")
        self.verify()
        self.report.seconds = time.monotonic() - t0
        return self.report

    # ---- the checks ------------------------------------------------------------------------------------------
    def verify(self) -> CrashReport:
        rep, v = self.report, self.report.violations
        ours = set(self.names.values())
        book = [o for o in self.sim.orders() if o.get("account") in ours and o.get("orderid")]
        name_of = self.names
        with self.db.read() as s:
            intents = list(s.scalars(select(OrderIntent)))
            execs = list(s.scalars(select(Execution)))
            runs = list(s.scalars(select(StrategyRun)))
            rep.recoveries = {f"{a}->{b}": n for a, b, n in s.execute(
                select(OrderEvent.from_status, OrderEvent.to_status, func.count())
                .where(OrderEvent.source == "reconciler").group_by(OrderEvent.from_status, OrderEvent.to_status))}
        rep.intents, rep.broker_orders = len(intents), len(book)
        rep.statuses = dict(Counter(i.status for i in intents))
        linked = Counter((name_of[i.account_id], i.broker_order_id) for i in intents if i.broker_order_id)
        for (acct, oid), n in linked.items():
            if n > 1:
                v.append(f"broker order {oid} of {acct} linked to {n} intents")
        by_key = {(o["account"], o["orderid"]): o for o in book}
        for key, o in by_key.items():
            if key not in linked:
                v.append(f"broker order {key[1]} ({o['action']} {o['quantity']} {o['symbol']} tag {o['strategy']}) "
                         f"of {key[0]} is linked to no intent: placed twice or lost")
        for i in intents:
            if i.status in NON_FINAL:
                v.append(f"intent {i.id} ({i.purpose} {i.action} {i.symbol}) stuck in '{i.status}'")
            if i.broker_order_id:
                o = by_key.get((name_of[i.account_id], i.broker_order_id))
                if o is None:
                    v.append(f"intent {i.id} linked to broker order {i.broker_order_id} the broker never had")
                elif (o["symbol"], o["action"], int(o["quantity"]), o["strategy"]) != (
                        i.symbol, i.action, i.requested_qty, i.strategy_tag):
                    v.append(f"intent {i.id} linked to a different order {o}")
                elif i.status == "filled" and (o["order_status"] != "complete"
                                               or int(o["filled_quantity"]) != i.requested_qty):
                    v.append(f"intent {i.id} filled but broker says {o['order_status']} {o['filled_quantity']}")
            elif i.status == "filled":
                v.append(f"intent {i.id} filled without a broker order id")
        exits = Counter(i.execution_id for i in intents if i.purpose == "exit" and i.status == "filled")
        for ex_id, n in exits.items():
            if n > 1:
                v.append(f"execution {ex_id} has {n} filled exits")
        for ex in execs:
            if ex.status not in ("exited", "failed"):
                v.append(f"execution {ex.id} left '{ex.status}'")
        for run in runs:
            if run.status not in ("exited", "failed"):
                v.append(f"run {run.id} left '{run.status}'")
        net: dict = defaultdict(int)
        for o in book:
            if o["order_status"] == "complete":
                net[(o["account"], o["symbol"])] += int(o["filled_quantity"]) * (1 if o["action"] == "BUY" else -1)
        for key, q in net.items():
            if q:
                v.append(f"position {key} left at {q} at the broker (an exit missing or sent twice)")
        return rep
