"""Service memory: RSS with 100 subscriptions over 1,000,000 ticks (target: flat).

    .venv/bin/python bench/bench_memory.py [--ticks 1000000] [--subs 100]

The whole service (ServiceRunner, default settings) runs in this process against the simulator: feed, position
monitor, risk manager, dispatcher, poller, scheduler jobs (1-s flush + P&L snapshots to SQLite). 50 strategy runs
hold one option each and 50 more symbols are subscribed (100 symbols + the 3 watchlist indices). The 1 M ticks
are fed through MarketDataManager.on_message (the WebSocket thread's entry point) with realistic mode-2 JSON
frames for those 100 symbols, because the simulator cannot push 1 M ticks through a real socket within the
2-minute budget on this machine; the real WebSocket feed runs alongside at the simulator's default 4 Hz.
RSS (psutil) is sampled every 100,000 ticks (every 10 % of --ticks when that is fewer), after a gc.collect().
``--subs`` other than 100 (bench_curves.py rss: 1,000) takes NIFTY options of every listed expiry, then
BANKNIFTY's; 50 of them are strategy runs as above.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import main_guard, make_run, quiet, result, settings_for, sim_account, temp_db, wait_until  # noqa
from bench_exit_latency import option_symbols  # noqa: E402
from bench_ingest import frames  # noqa: E402

import psutil  # noqa: E402

from services.runner import ServiceRunner  # noqa: E402
from simulator.testing import SimProcess  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=1_000_000)
    ap.add_argument("--subs", type=int, default=100)
    a = ap.parse_args()
    quiet()
    proc = psutil.Process()
    db = temp_db("mem")
    with SimProcess(seed=6) as sim:
        acct, _ = sim_account(db, sim, prefix="mem", is_primary=True)
        probe = sim.create_account("probe")
        if a.subs == 100:
            syms = option_symbols(sim, probe, 100)
        else:
            from bench_curves import nifty_options
            syms = nifty_options(sim, probe, a.subs)
        for sym in syms[:50]:
            make_run(db, acct, [dict(symbol=sym, exchange="NFO", action="SELL", qty=65, entry=120.0)],
                     max_loss=1e12, name="mem")
        runner = ServiceRunner(settings_for(db), db=db)
        runner.start()
        try:
            md = runner.md
            md.subscribe("bench", [(s, "NFO") for s in syms], 2)
            if not wait_until(lambda: md.status()["connected"] and len(md._wire) >= len(syms), 30, 0.1):
                raise RuntimeError(f"feed not subscribed: {md.status()}")
            msgs = frames(syms, 20_000)  # the NFO symbols the sim really lists
            time.sleep(2.0)
            gc.collect()
            points = [(0, proc.memory_info().rss / 2**20)]
            t0 = time.perf_counter()
            step = min(100_000, max(1, a.ticks // 10))
            n = 0
            on_message = md.on_message
            while n < a.ticks:
                for i in range(step):
                    on_message(msgs[(n + i) % len(msgs)])
                n += step
                gc.collect()
                points.append((n, proc.memory_info().rss / 2**20))
            elapsed = time.perf_counter() - t0
            time.sleep(2.5)  # let a flush / snapshot cycle or two run after the burst
            gc.collect()
            points.append((n, proc.memory_info().rss / 2**20))
        finally:
            runner.stop()
    print(f"{a.ticks:,} ticks through on_message in {elapsed:.1f} s ({a.ticks / elapsed:,.0f} ticks/s, "
          f"with the service's threads running); subscriptions: {len(syms)} + watchlist")
    print(f"subscribed: {len(syms)} symbols (+ watchlist)")
    print("RSS (MiB) by ticks fed: " + ", ".join(f"{k // 1000}k={v:.1f}" for k, v in points))
    start, end = points[0][1], points[-1][1]
    after_warm = points[1][1]
    growth = end - after_warm
    print(f"start {start:.1f} MiB, after {points[1][0] // 1000}k {after_warm:.1f} MiB, end {end:.1f} MiB "
          f"(growth after warm-up {growth:+.1f} MiB; flat: {'yes' if abs(growth) < 5 else 'NO'})")
    result("memory", subs=len(syms), ticks=a.ticks, rss_start_mb=start, rss_100k_mb=after_warm, rss_end_mb=end,
           growth_mb=growth, points=[round(v, 1) for _, v in points])
    return 0


if __name__ == "__main__":
    main_guard(main)
