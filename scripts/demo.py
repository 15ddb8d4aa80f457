"""Start the whole product on this machine: simulator (paper market), demo accounts, service, local API, Streamlit.

    .venv/bin/python -m scripts.demo [--port 5000] [--ws-port 8765] [--ui-port 8501] [--api-port 5100] [--seed 7]
                                     [--market-hours | --clock "YYYY-MM-DD HH:MM[:SS]"]

The simulator refuses MIS orders from 15:15 to 09:00 IST unless they reduce a position (``--mis-gate``), as a real
OpenAlgo server does, and the service squares MIS positions off at 15:15 IST on trading days. In the evening run
the demo with ``--market-hours`` (every clock at 10:30 IST on the latest trading day, then running on) or
``--clock`` (a chosen IST instant, e.g. "2026-12-01 15:14:00" to watch the square-off): the simulator, the
service, the local API and the app then share one market clock (APP__MARKET__CLOCK_OFFSET_S).

Demo accounts are created once: their API keys are generated here, registered with the simulator and stored
encrypted (Fernet) in the database like any other account. On later starts the stored keys are registered
with the fresh simulator again, so the database stays valid. Everything binds to 127.0.0.1. Ctrl-C (or SIGTERM)
stops all. The service is supervised: if it dies it is started again with backoff (1 s, 2 s, 4 s ... 30 s), the
other processes staying up; an exit code that means it refuses to run (a second service on the database, a
database it cannot upgrade, ...) stops the restarts with the reason (scripts/supervise.py).
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime, time as dtime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import ConfigError, load_settings, parse_clock_start  # noqa: E402
from db import Database  # noqa: E402
from db.accounts import AccountError, add_account, api_key_for, list_accounts  # noqa: E402
from db.clock import IST, is_trading_day, ist_now_str, set_offset  # noqa: E402
from db.logmask import install  # noqa: E402
from scripts.supervise import Supervisor  # noqa: E402

DEMO_ACCOUNTS = [("Demo Primary", None), ("Demo Backup", 1), ("Demo Third", None)]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {url}")


def register_demo_accounts(db: Database, rest: str, ws: str) -> list[str]:
    """Create (first run) or re-register (later runs) the demo accounts with the simulator."""
    existing = {a.name: a for a in list_accounts(db)}
    names = []
    for name, backup in DEMO_ACCOUNTS:
        key = api_key_for(db, existing[name].id) if name in existing else secrets.token_hex(32)
        r = httpx.post(f"{rest}/_sim/accounts", json={"name": name, "apikey": key}, timeout=5)
        r.raise_for_status()
        if name not in existing:
            try:
                add_account(db, name, rest, ws, key, is_primary=backup is None and not names, backup_order=backup,
                            broker="simulator")
            except AccountError as exc:
                print(f"demo: could not add {name}: {exc}")
        names.append(name)
    return names


def market_offset(settings, args) -> float:
    """Seconds to add to the real clock: --market-hours / --clock, else the settings' clock (0 = real)."""
    now = datetime.now(IST)
    if args.market_hours:
        day = now.date()
        while not is_trading_day(day):
            day -= timedelta(days=1)
        return (datetime.combine(day, dtime(10, 30), IST) - now).total_seconds()
    start = parse_clock_start(args.clock, "--clock") if args.clock else parse_clock_start(
        settings.market.clock_start_ist)
    if start is not None:
        return (start.replace(tzinfo=IST) - now).total_seconds()
    return settings.market.clock_offset_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--ws-port", type=int, default=8765)
    ap.add_argument("--ui-port", type=int, default=8501)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--api-port", type=int, default=5100, help="the local API (python -m api); 0 = do not start it")
    ap.add_argument("--no-ui", action="store_true", help="start simulator + service only")
    clk = ap.add_mutually_exclusive_group()
    clk.add_argument("--market-hours", action="store_true",
                     help="run every clock at 10:30 IST on the latest NSE/BSE trading day (then in real time)")
    clk.add_argument("--clock", metavar="'YYYY-MM-DD HH:MM[:SS]'",
                     help="run every clock from this IST instant (then in real time)")
    args = ap.parse_args(argv)
    install()
    # SIGTERM (kill, CI, systemd) must stop the children too: turn it into SystemExit so `finally` runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        settings = load_settings()
        offset_s = market_offset(settings, args)
    except ConfigError as exc:
        raise SystemExit(f"demo: {exc}") from None
    db = Database.from_settings(settings)
    # one market clock for every process: the offset, computed once here (a start instant would start
    # each process's clock at its own start)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "APP__MARKET__CLOCK_OFFSET_S": repr(offset_s)}
    env.pop("APP__MARKET__CLOCK_START_IST", None)
    py = sys.executable
    procs: list[subprocess.Popen] = []  # simulator, API, app: if one of them exits, the demo stops
    service = Supervisor("service", [py, "-m", "services"], cwd=ROOT, env=env)
    set_offset(timedelta(seconds=offset_s))
    print(f"demo: market clock {ist_now_str()}" + (" (moved)" if offset_s else " (real); MIS orders are refused "
          "15:15-09:00 IST like a real server: --market-hours runs the demo on a 10:30 IST clock"))
    try:
        procs.append(subprocess.Popen([py, "-m", "simulator", "--host", "127.0.0.1", "--port", str(args.port),
                                       "--ws-port", str(args.ws_port), "--seed", str(args.seed), "--mis-gate",
                                       "--clock-offset-s", repr(offset_s)], cwd=ROOT, env=env))
        rest, ws = f"http://127.0.0.1:{args.port}", f"ws://127.0.0.1:{args.ws_port}"
        wait_http(f"{rest}/_sim/accounts")
        names = register_demo_accounts(db, rest, ws)
        print(f"demo: simulator on {rest} / {ws} (pid {procs[0].pid}); accounts: {', '.join(names)}")
        service.start()
        if args.api_port:
            procs.append(subprocess.Popen([py, "-m", "api", "--host", "127.0.0.1", "--port", str(args.api_port)],
                                          cwd=ROOT, env=env))
            print(f"demo: local API on http://127.0.0.1:{args.api_port}/docs (pid {procs[-1].pid}; keys: API & "
                  "Webhooks page)")
        if not args.no_ui:
            procs.append(subprocess.Popen([py, "-m", "scripts.serve", "--server.address", "127.0.0.1",
                                           "--server.port", str(args.ui_port), "--server.headless", "true"],
                                          cwd=ROOT, env=env))
            print(f"demo: open http://127.0.0.1:{args.ui_port}  (app pid {procs[-1].pid}; Ctrl-C to stop)")
        # The service is supervised (restarted with backoff when it dies, scripts/supervise.py): the simulator's
        # paper positions and the app stay up meanwhile, and the app's banner says the service is down.
        while all(p.poll() is None for p in procs):
            service.poll()
            time.sleep(0.5)
        bad = [p.args[2] if len(p.args) > 2 else p.args for p in procs if p.poll() is not None]
        print(f"demo: a process exited: {bad}; stopping the rest")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(procs, service)


def stop_all(procs: list[subprocess.Popen], service: Supervisor) -> None:
    """The app and the API first, then the service (no restart after this), the simulator last."""
    for p in reversed(procs[1:]):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    service.stop()
    if procs and procs[0].poll() is None:
        procs[0].send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()

if __name__ == "__main__":
    sys.exit(main())
