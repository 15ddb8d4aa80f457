"""Helpers shared by the tests and the benchmarks: polling, seeding queued strategy runs, and driving the
service as a real subprocess (``python -m services``)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from db.models import Execution, OrderIntent, Strategy, StrategyRun

ROOT = Path(__file__).resolve().parents[1]


def wait_for(pred, timeout: float = 5.0, every: float = 0.02):
    """Poll ``pred`` until it returns something truthy or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(every)


def queue_runs(db, account_ids: list[int], legs: list[dict], name: str) -> list[tuple[int, list[int]]]:
    """Like db.strategies.execute_strategy, without leg resolution: in one transaction, per account a run in
    'entering' with one execution and one queued entry intent per leg (BUY legs first).
    ``legs``: dicts with symbol, action, qty and optionally exchange (NSE), product (MIS), pricetype, price.
    Returns [(run_id, [intent ids])] in account order."""
    out = []
    with db.write() as s:
        st = s.scalar(select(Strategy).where(Strategy.name == name))
        if st is None:
            st = Strategy(name=name, underlying="NIFTY", exchange="NSE_INDEX", product="MIS")
            s.add(st)
            s.flush()
        group = uuid.uuid4().hex
        for acct in account_ids:
            run = StrategyRun(strategy_id=st.id, account_id=acct, group_id=group, status="entering")
            s.add(run)
            s.flush()
            ids = []
            for n, leg in enumerate(legs, start=1):
                ex = Execution(run_id=run.id, account_id=acct, leg_no=n, symbol=leg["symbol"],
                               exchange=leg.get("exchange", "NSE"), action=leg["action"], quantity=leg["qty"],
                               product=leg.get("product", "MIS"))
                s.add(ex)
                s.flush()
                i = OrderIntent(client_order_id=uuid.uuid4().hex, account_id=acct, run_id=run.id,
                                execution_id=ex.id, purpose="entry", source="strategy",
                                priority=(10 if leg["action"] == "BUY" else 50) + n, strategy_tag=name,
                                symbol=ex.symbol, exchange=ex.exchange, action=ex.action, requested_qty=ex.quantity,
                                pricetype=leg.get("pricetype", "MARKET"), limit_price=leg.get("price", 0.0),
                                product=ex.product)
                s.add(i)
                s.flush()
                ex.entry_intent_id = i.id
                ids.append(i.id)
            out.append((run.id, ids))
    return out


def start_service(db_path: Path, log_path: Path, env: dict) -> subprocess.Popen:
    """``python -m services --db ... --log-file ...``; stdout/stderr go to ``<log>.out`` (a file, never a pipe:
    an undrained pipe would block the service)."""
    out = open(log_path.with_suffix(".out"), "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "services", "--db", str(db_path), "--log-file", str(log_path)],
                                cwd=str(ROOT), env=env, stdout=out, stderr=out)
    finally:
        out.close()


def stop_service(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGTERM and wait; a service that does not stop in time is killed and the timeout re-raised."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise


def kill_service(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)
