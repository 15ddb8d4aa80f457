"""CPU cost of one tick in the risk manager, in process (no network, no exit): the per-tick price of evaluating
runs, with and without per-leg stops.

    .venv/bin/python bench/bench_tick_eval.py [--runs 50] [--ticks 20000] [--leg-stops 0]

Set-up: a temp database with ``--runs`` live runs of two entered legs each (one NIFTY option per leg, limits far
away, so every tick is evaluated and nothing exits), a RiskManager loaded from it and a MarketDataManager with no
feed. Each tick goes through MarketDataManager.on_message (JSON decode, price store, listeners), the same entry
point the WebSocket thread uses, round-robin over the runs' symbols with a small random walk. Printed: the time
per tick (median and p99 over batches of 100 ticks). ``--leg-stops N`` gives the first N runs' legs a stop-loss,
a target and a trailing stop (levels far away) so that their cost shows too. Runs on this branch and on one
without per-leg stops alike (the leg columns are only written when asked for).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_stats, main_guard, make_run, quiet, result, settings_for, stats, temp_db  # noqa: E402

from sqlalchemy import update  # noqa: E402

from db.accounts import add_account  # noqa: E402
from db.models import Execution  # noqa: E402
from services.context import ServiceContext  # noqa: E402
from services.market_data import MarketDataManager  # noqa: E402
from services.risk import RiskManager  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--ticks", type=int, default=20_000)
    ap.add_argument("--leg-stops", type=int, default=0)
    a = ap.parse_args()
    quiet()
    db = temp_db("tick")
    ctx = ServiceContext(db, settings_for(db))
    acct = add_account(db, "bench", "http://127.0.0.1:1", "ws://127.0.0.1:1", "k" * 32)
    symbols = []
    for n in range(a.runs):
        legs = [dict(symbol=f"NIFTY30DEC25{24000 + 50 * n}{k}", exchange="NFO", action="SELL", qty=65, entry=100.0)
                for k in ("CE", "PE")]
        _, ids = make_run(db, acct, legs, max_loss=1e12)
        symbols += [leg["symbol"] for leg in legs]
        if n < a.leg_stops:
            with db.write() as s:
                s.execute(update(Execution).where(Execution.id.in_(ids)).values(
                    sl_mode="points", sl_value=1e6, tp_mode="points", tp_value=99.0, trail_points=1e6))
    md = MarketDataManager(ctx)
    risk = RiskManager(ctx, md, lambda: None)
    rng = random.Random(7)
    price = {s: 100.0 for s in symbols}

    def msg(sym: str) -> str:
        price[sym] = max(50.0, min(150.0, price[sym] + rng.choice((-0.05, 0.05))))
        return json.dumps({"type": "market_data", "symbol": sym, "exchange": "NFO", "mode": 1,
                           "data": {"ltp": round(price[sym], 2)}})

    for sym in symbols:
        md.on_message(msg(sym))
    risk.reload()
    batches, batch = [], 100
    msgs = [msg(symbols[i % len(symbols)]) for i in range(a.ticks)]
    for i in range(0, a.ticks, batch):
        t0 = time.perf_counter()
        for m in msgs[i:i + batch]:
            md.on_message(m)
        batches.append((time.perf_counter() - t0) / batch * 1e6)
    md.stop()
    ctx.close()
    st = stats(batches)
    print(f"{a.runs} runs x 2 legs ({a.leg_stops} with leg stops), {a.ticks} ticks, evaluations "
          f"{risk.stats['evaluations']}, leg exits {risk.stats.get('leg_exits', 0)}")
    print(f"per tick (us, over batches of {batch}): {fmt_stats(batches, 'us')}")
    result("tick_eval", median_us=st["median"], p99_us=st["p99"], runs=a.runs, leg_stops=a.leg_stops)
    return 0


if __name__ == "__main__":
    main_guard(main)
