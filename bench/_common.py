"""Shared helpers for the benchmarks: paths, temp databases, percentiles, result lines, machine info.

Every bench prints a human-readable report and, last, one machine-readable line
``RESULT {json}`` that ``bench/run_all.py`` collects into its summary table.
"""
from __future__ import annotations

import contextlib
import json
import math
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from config import load_settings  # noqa: E402
from db import Database  # noqa: E402
from db.accounts import add_account  # noqa: E402
from db.models import Execution, Strategy, StrategyRun  # noqa: E402
from tests.harness import queue_runs, wait_for  # noqa: E402
from tests.market_clock import use_market_hours  # noqa: E402

# The benches place MIS orders: every clock at 10:30 IST on a trading day, as the tests run (tests/market_clock.py),
# so a bench run in the evening measures orders, not the 15:15 cut-off.
use_market_hours()

wait_until = wait_for  # the benches' name for it
# After setting a breaching price the benches keep off the CPU this long before they look for the exit. Their
# first database read (~2 ms of SQLAlchemy) woke on the simulator's reply and took the simulator's core before it
# had written the tick: measured with the simulator's writes timestamped, a breach tick reached every client 2.0 ms
# after it was applied at the median in the service's trials, 0.7 ms in the reflex client's (whose bench side
# only blocks on a pipe), and 0.7 ms in both with this pause. Latencies come from the simulator's own clock, so the
# pause changes nothing but that.
HANDS_OFF_S = 0.03

logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def quiet() -> None:
    """The service logs WARNINGs on normal events (exits, backoff); keep bench output readable."""
    for name in ("services", "apscheduler", "httpx", "broker", "websocket"):
        logging.getLogger(name).setLevel(logging.ERROR)


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): the smallest value with at least q% of the samples at or below it
    (p99 of 100 samples is the 99th smallest, not the largest)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(round(q / 100.0 * len(s), 9)) - 1))
    return s[k]


def stats(xs: list[float]) -> dict:
    return dict(n=len(xs), median=pct(xs, 50), p99=pct(xs, 99), min=min(xs) if xs else float("nan"),
                max=max(xs) if xs else float("nan"))


def fmt_stats(xs: list[float], unit: str = "ms") -> str:
    st = stats(xs)
    return (f"n={st['n']} median={st['median']:.1f} {unit} p99={st['p99']:.1f} {unit} "
            f"min={st['min']:.1f} max={st['max']:.1f}")


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"algomirror-{prefix}-"))


def temp_db(prefix: str) -> Database:
    d = temp_dir(prefix)
    return Database(d / "algomirror.db", key_file=d / "algomirror.key")


def settings_for(db: Database, **env) -> object:
    """Default settings, the DB path set, plus overrides ``section__key=value``."""
    e = {"APP__DB__PATH": str(db.path), "APP__SECRETS__KEY_FILE": str(db.path.with_name("algomirror.key"))}
    for k, v in env.items():
        section, key = k.split("__", 1)
        e[f"APP__{section.upper()}__{key.upper()}"] = str(v)
    return load_settings(e)


def sim_account(db: Database, sim, prefix: str = "bench", **kw) -> tuple[int, str]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    key = sim.create_account(name)
    return add_account(db, name, sim.rest_url, sim.ws_url, key, **kw), name


def make_run(db: Database, account_id: int, legs: list[dict], *, max_loss=None, status: str = "active",
             name: str = "bench") -> tuple[int, list[int]]:
    """A strategy run with entered executions (an open position per leg)."""
    with db.write() as s:
        st = s.scalar(select(Strategy).where(Strategy.name == name))
        if st is None:
            st = Strategy(name=name, underlying="NIFTY", exchange="NSE_INDEX", expiry="", product="NRML")
            s.add(st)
            s.flush()
        run = StrategyRun(strategy_id=st.id, account_id=account_id, group_id="bench", status=status,
                          max_loss=max_loss)
        s.add(run)
        s.flush()
        ids = []
        for n, leg in enumerate(legs, start=1):
            ex = Execution(run_id=run.id, account_id=account_id, leg_no=n, symbol=leg["symbol"],
                           exchange=leg.get("exchange", "NFO"), action=leg["action"], quantity=leg["qty"],
                           product=leg.get("product", "NRML"), status="entered", entry_price=leg["entry"],
                           **{k: leg[k] for k in ("sl_mode", "sl_value") if k in leg})
            s.add(ex)
            s.flush()
            ids.append(ex.id)
        return run.id, ids


def queue_strategy(db: Database, account_ids: list[int], legs: list[dict], name: str) -> list[int]:
    """Like db.strategies.execute_strategy: one transaction writes a run + executions + queued entry intents
    per account. Returns the intent ids."""
    return [i for _, ids in queue_runs(db, account_ids, legs, name) for i in ids]


@contextlib.contextmanager
def service_process(db: Database, ready_timeout: float = 60.0, cmd: list[str] | None = None,
                    extra_env: dict | None = None):
    """The service as its own process (``python -m services``, default settings, the deployment shape), started
    on ``db``; yields once its dispatcher heartbeat and the symbol master are in the database; SIGTERM on exit.
    Its output goes to service.out beside the temp DB. ``cmd`` replaces ``[python, -m, services]`` (the traced
    launcher, bench/_traced_service.py); ``extra_env`` is added to its environment."""
    from db.models import Instrument, ServiceHeartbeat
    from sqlalchemy import func

    env = {k: v for k, v in os.environ.items() if not k.startswith("APP__")}
    env["PYTHONPATH"] = str(ROOT)
    env["APP__MARKET__CLOCK_OFFSET_S"] = os.environ["APP__MARKET__CLOCK_OFFSET_S"]  # the simulators' clock too
    env.update(extra_env or {})
    log = open(db.path.with_name("service.out"), "ab")
    proc = subprocess.Popen([*(cmd or [sys.executable, "-m", "services"]), "--db", str(db.path), "--log-file",
                             str(db.path.with_name("service.log"))], cwd=str(ROOT), env=env, stdout=log, stderr=log)
    try:
        def ready():
            with db.read() as s:
                hb = s.get(ServiceHeartbeat, "dispatcher")
                n = s.scalar(select(func.count()).select_from(Instrument))
            return hb is not None and n
        if not wait_until(ready, ready_timeout, 0.1):
            raise RuntimeError("the service did not start (see service.out beside the temp DB)")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return dict(nproc=os.cpu_count(), cpu=model or platform.processor(), ram=ram,
                python=platform.python_version(), platform=platform.platform())


def result(name: str, **fields) -> None:
    """The last line of a bench: machine-readable figures for run_all.py."""
    print("RESULT " + json.dumps(dict(bench=name, **fields), default=float), flush=True)


def main_guard(fn) -> None:
    """Exit 0 whenever the bench ran (targets missed or not); 1 only when it failed to run."""
    try:
        rc = fn()
    except Exception as exc:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print(f"benchmark failed to run: {exc!r}", file=sys.stderr)
        sys.exit(1)
    sys.exit(rc or 0)
