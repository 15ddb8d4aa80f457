"""Streamlit Dashboard page script time on a full day of data (target: <= 1 s).

    .venv/bin/python bench/bench_dashboard.py [--runs 5]

Seeded temp DB: 10 accounts (funds, 5 positions each), 2,000 order intents, 20 strategy runs, and a full
trading day of 1-s P&L snapshots: 22,500 rows per account with run_id NULL (09:15-15:30 IST) plus 3,600 rows
per strategy run. The page runs under streamlit.testing.v1.AppTest with APP__DB__PATH pointing at that DB. The
wall clock the page's queries use (db.repo.utcnow) is set to 15:30 IST today, so "today" holds the whole seeded
day whatever time the bench runs. Timed: AppTest.run() of pages/dashboard.py, the first run (cold: new
process caches, SQLite page cache cold) and the following runs (warm: the kept P&L history serves the chart and
only its tail is read). A "cold-cache" run clears st.cache_data and st.cache_resource first, so the 225,000-row
chart query runs again.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import random
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, main_guard, result, temp_db  # noqa: E402

from sqlalchemy import insert  # noqa: E402

from db.accounts import add_account  # noqa: E402
from db.models import (  # noqa: E402
    Execution, Funds, OrderIntent, PnlSnapshot, Position, ServiceHeartbeat, Strategy, StrategyRun)


def make_accounts(db) -> list[int]:
    return [add_account(db, f"acct{i:02d}", "http://127.0.0.1:9", "ws://127.0.0.1:9", f"{'k' * 30}{i:04d}",
                        is_primary=i == 0) for i in range(10)]


def seed(db, now_utc: datetime, accts: list[int] | None = None) -> dict:
    """Today's data; ``accts``: the accounts already made (bench_curves.py seeds past days first)."""
    rng = random.Random(5)
    accts = accts or make_accounts(db)
    start = now_utc - timedelta(seconds=22_500)
    with db.write() as s:
        s.execute(insert(Funds), [dict(account_id=a, available_cash=1e6, used_margin=2e5) for a in accts])
        s.execute(insert(Position), [dict(account_id=a, symbol=f"NIFTY25DEC{24000 + 100 * k}CE", exchange="NFO",
                                          product="NRML", quantity=-65, average_price=120.0, ltp=110.0,
                                          unrealized_pnl=650.0, pnl=650.0) for a in accts for k in range(5)])
        st = Strategy(name="straddle", underlying="NIFTY", exchange="NSE_INDEX", product="NRML")
        s.add(st)
        s.flush()
        runs = []
        for k in range(20):
            r = StrategyRun(strategy_id=st.id, account_id=accts[k % 10], group_id="g", max_loss=5000.0,
                            max_profit=8000.0, trailing_sl=2000.0, status="active" if k < 12 else "exited",
                            pnl=rng.uniform(-3000, 3000), started_at=start + timedelta(minutes=k))
            s.add(r)
            s.flush()
            runs.append(r.id)
            s.add(Execution(run_id=r.id, account_id=r.account_id, leg_no=1, symbol="NIFTY25DEC24000CE",
                            exchange="NFO", action="SELL", quantity=65, product="NRML", status="entered",
                            entry_price=120.0))
        intents = [dict(client_order_id=uuid.uuid4().hex, account_id=accts[i % 10], symbol="SBIN", exchange="NSE",
                        action="BUY" if i % 2 else "SELL", requested_qty=1, status=rng.choice(
                            ["filled", "filled", "placed", "rejected", "cancelled"]),
                        created_at=start + timedelta(seconds=11 * i), broker_order_id=f"B{i}")
                   for i in range(2000)]
        s.execute(insert(OrderIntent), intents)
        for a in accts:
            total, rows = 0.0, []
            for t in range(22_500):
                total += rng.gauss(0, 25)
                rows.append(dict(ts_utc=start + timedelta(seconds=t), account_id=a, run_id=None, realized=0.0,
                                 unrealized=total, total=total))
            s.execute(insert(PnlSnapshot), rows)
        for r in runs:
            total, rows = 0.0, []
            for t in range(3_600):
                total += rng.gauss(0, 10)
                rows.append(dict(ts_utc=start + timedelta(seconds=t), account_id=accts[0], run_id=r,
                                 realized=0.0, unrealized=total, total=total, tsl_peak=max(0, total),
                                 tsl_stop=max(0, total) - 2000))
            s.execute(insert(PnlSnapshot), rows)
        for comp in ("runner", "dispatcher"):
            s.merge(ServiceHeartbeat(component=comp, pid=1, status="ok", last_beat=datetime.utcnow()))
    return dict(accounts=10, intents=2000, snapshots=22_500 * 10 + 3_600 * 20, runs=20)


def measure(db_path: str, runs: int, preloaded: bool, fake_now: datetime, page: str = "dashboard.py") -> dict:
    """In THIS (fresh) process: optionally scripts.serve.preload() (what `python -m scripts.serve` does before the
    server starts), then time AppTest.run() of the Dashboard ``runs`` times and once after clearing st.cache_data and
    st.cache_resource."""
    os.environ["APP__DB__PATH"] = db_path
    os.environ["APP__SECRETS__KEY_FILE"] = str(Path(db_path).with_name("algomirror.key"))
    os.chdir(ROOT)

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import db.repo as repo
    _t0 = datetime.utcnow()
    repo.utcnow = lambda: fake_now + (datetime.utcnow() - _t0)  # "now" = 15:30 IST today, ticking
    preload_s = 0.0
    if preloaded:
        from scripts.serve import preload
        preload_s = preload()

    times, errors = [], []
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=120)
    for _ in range(runs):
        t = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t)
        if at.exception:
            errors.append("; ".join(str(e.message)[:300] for e in at.exception))
    st.cache_data.clear()
    st.cache_resource.clear()  # the Dashboard keeps its P&L history there
    t = time.perf_counter()
    at.run()
    cold_cache = time.perf_counter() - t
    if at.exception:
        errors.append("; ".join(str(e.message)[:300] for e in at.exception))
    return dict(preload_s=preload_s, times=times, cold_cache=cold_cache, errors=errors,
                caption=[c.value for c in at.caption][:1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # child mode: DB path
    ap.add_argument("--preloaded", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fake-now", help=argparse.SUPPRESS)
    ap.add_argument("--page", default="dashboard.py", help=argparse.SUPPRESS)  # child mode: pages/<page>
    a = ap.parse_args()
    if a.measure:
        print("MEASURED " + json.dumps(measure(a.measure, a.runs, a.preloaded,
                                               datetime.fromisoformat(a.fake_now), a.page)), flush=True)
        return 0
    db = temp_db("dash")
    ist_today = (datetime.utcnow() + timedelta(hours=5, minutes=30)).date()
    fake_now = datetime(ist_today.year, ist_today.month, ist_today.day, 10, 0, 0)  # 15:30 IST
    t = time.perf_counter()
    counts = seed(db, fake_now)
    print(f"seeded {counts} in {time.perf_counter() - t:.1f} s ({db.path})")
    out = {}
    for mode in ("fresh", "preloaded"):  # each in a new Python process: first runs are what a new server pays
        cmd = [sys.executable, __file__, "--measure", str(db.path), "--runs", str(a.runs),
               "--fake-now", fake_now.isoformat()] + (["--preloaded"] if mode == "preloaded" else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), timeout=600)
        line = [x for x in proc.stdout.splitlines() if x.startswith("MEASURED ")]
        if proc.returncode or not line:
            raise RuntimeError(f"{mode} measurement failed: {proc.stderr[-2000:]}")
        out[mode] = json.loads(line[0][len("MEASURED "):])
    errors = out["fresh"]["errors"] + out["preloaded"]["errors"]
    for mode, label in (("fresh", "new process, nothing preloaded"),
                        ("preloaded", "new process after scripts.serve.preload (python -m scripts.serve)")):
        m = out[mode]
        extra = f" (preload took {m['preload_s'] * 1000:.0f} ms before the server starts)" if m["preload_s"] else ""
        print(f"AppTest.run() of pages/dashboard.py, {label}: first {m['times'][0] * 1000:.0f} ms; warm "
              f"{', '.join(f'{x * 1000:.0f}' for x in m['times'][1:])} ms; after st.cache_data.clear() "
              f"{m['cold_cache'] * 1000:.0f} ms{extra}")
    print(f"chart caption: {out['fresh']['caption']}")
    pre, fresh = out["preloaded"], out["fresh"]
    warm_all = sorted(fresh["times"][1:] + pre["times"][1:])
    warm = warm_all[len(warm_all) // 2]
    worst = max(pre["times"] + [pre["cold_cache"], fresh["cold_cache"]] + fresh["times"][1:])
    if errors:
        print(f"PAGE ERRORS (reported, not fixed here): {errors[0]}")
    print(f"target <= 1 s (every run of the served app: preloaded first run, warm runs, cache cleared): "
          f"{'met' if worst <= 1.0 else 'MISSED'} (worst {worst * 1000:.0f} ms); first run of an unwarmed process "
          f"{fresh['times'][0] * 1000:.0f} ms")
    result("dashboard", first_ms=pre["times"][0] * 1000, first_unwarmed_ms=fresh["times"][0] * 1000,
           warm_ms=warm * 1000, cold_cache_ms=max(pre["cold_cache"], fresh["cold_cache"]) * 1000,
           worst_ms=worst * 1000, errors=len(errors), error=errors[0] if errors else "")
    return 0


if __name__ == "__main__":
    main_guard(main)
