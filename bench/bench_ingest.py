"""Tick ingest: ticks/s the market-data path sustains on one core (target: >= 20,000).

    .venv/bin/python bench/bench_ingest.py [--ticks 200000] [--symbols 100]

The path measured is exactly what the WebSocket thread runs per frame: MarketDataManager.on_message (json.loads,
price dict) + the PositionMonitor listener + the RiskManager listener (P&L of every run holding the symbol and the
max-loss / max-profit / trailing checks). 50 runs hold one option each (limits far away: evaluated, never
breached); 100 symbols tick in turn with realistic mode-2 (Quote) frames built like the simulator's. The process
is pinned to one CPU. Figures: (a) the bare loop, (b) the same while the service's flush (latest_prices +
positions + P&L snapshot, every 1 s) runs in a second thread, as in the service. The WebSocket receive itself
(websocket-client) is not included; it is shown separately by bench_simulator.py.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import main_guard, make_run, quiet, result, settings_for, temp_db  # noqa: E402

from db.accounts import add_account  # noqa: E402
from services.context import ServiceContext  # noqa: E402
from services.market_data import MarketDataManager  # noqa: E402
from services.positions import PositionMonitor  # noqa: E402
from services.risk import RiskManager  # noqa: E402


def frames(symbols: list[str], n: int) -> list[str]:
    rng = random.Random(1)
    px = {s: 100.0 + rng.random() * 50 for s in symbols}
    out = []
    for i in range(n):
        sym = symbols[i % len(symbols)]
        px[sym] = round(max(1.0, px[sym] * (1 + rng.gauss(0, 0.001))), 2)
        ltp = px[sym]
        ms = 1_760_000_000_000 + i
        data = {"symbol": sym, "exchange": "NFO", "mode": 2, "ltp": ltp, "ltt": ms, "timestamp": ms,
                "volume": 1000 + i, "open": 100.0, "high": 160.0, "low": 90.0, "close": 120.0, "last_quantity": 65,
                "last_trade_quantity": 65, "average_price": ltp, "avg_trade_price": ltp,
                "total_buy_quantity": 500 + i, "total_sell_quantity": 500 + i, "oi": 1_500_000,
                "change": round(ltp - 120.0, 2), "change_percent": round((ltp - 120.0) / 1.2, 2)}
        out.append(json.dumps({"type": "market_data", "symbol": sym, "exchange": "NFO", "mode": 2,
                               "broker": "simulator", "data": data}))
    return out


def run_loop(md: MarketDataManager, msgs: list[str]) -> float:
    on_message = md.on_message
    t = time.perf_counter()
    for m in msgs:
        on_message(m)
    return len(msgs) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=200_000)
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--runs", type=int, default=50)
    a = ap.parse_args()
    quiet()
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
        pinned = f"pinned to CPU {sorted(os.sched_getaffinity(0))[0]}"
    except (AttributeError, OSError):
        pinned = "not pinned"
    db = temp_db("ingest")
    acct = add_account(db, "ingest", "http://127.0.0.1:9", "ws://127.0.0.1:9", "k" * 32, is_primary=True)
    symbols = [f"NIFTY25DEC{24000 + 50 * i}{'CE' if i % 2 else 'PE'}" for i in range(a.symbols)]
    for sym in symbols[:a.runs]:
        make_run(db, acct, [dict(symbol=sym, exchange="NFO", action="SELL", qty=65, entry=120.0)],
                 max_loss=1e12, name="ingest")
    ctx = ServiceContext(db, settings_for(db))
    md = MarketDataManager(ctx)  # not started: no socket, frames are fed directly
    positions = PositionMonitor(ctx, md)
    risk = RiskManager(ctx, md, lambda: None)
    risk.reload()
    md.subscribe("bench", [(s, "NFO") for s in symbols], 2)
    msgs = frames(symbols, a.ticks)
    run_loop(md, msgs[:10_000])  # warm-up
    bare = [run_loop(md, msgs) for _ in range(3)]

    stop = threading.Event()
    flushes = []

    def flusher():
        while not stop.wait(1.0):
            t = time.perf_counter()
            positions.flush()
            flushes.append((time.perf_counter() - t) * 1000)
    th = threading.Thread(target=flusher, daemon=True)
    th.start()
    with_flush = [run_loop(md, msgs) for _ in range(3)]
    stop.set()
    th.join()
    evals = risk.stats["evaluations"]
    b, f = sorted(bare)[1], sorted(with_flush)[1]
    print(f"{pinned}; {a.symbols} symbols, {a.runs} runs held by the risk manager, {a.ticks:,} frames per pass")
    print(f"on_message + positions + risk listeners: {b:,.0f} ticks/s  ({1e6 / b:.1f} us/tick; "
          f"passes {', '.join(f'{x:,.0f}' for x in bare)})")
    print(f"  ... with the 1-s flush thread running : {f:,.0f} ticks/s  "
          f"(flush {sum(flushes) / max(1, len(flushes)):.0f} ms each, {len(flushes)} flushes)")
    print(f"risk evaluations: {evals:,}; target >= 20,000 ticks/s: {'met' if min(b, f) >= 20_000 else 'MISSED'}")
    result("ingest", ticks_per_s=b, ticks_per_s_with_flush=f, us_per_tick=1e6 / b)
    return 0


if __name__ == "__main__":
    main_guard(main)
