"""Greeks of a 41-strike option chain, both sides, recomputed (issue 15's target: <= 5 ms).

    .venv/bin/python bench/bench_greeks.py [--repeats 300]

What the Option Chain page does on every refresh (ui/chain_grid.build_grid): for each of the 82 contracts, the
implied volatility from its LTP (Newton, safeguarded by bisection) and delta / theta at that volatility, plus the
grid itself. The chain is NIFTY-like: spot 24,012.5, strikes 23,000-25,000 every 50, 5 days to expiry, LTPs from
Black-Scholes on a volatility smile (12 % ATM, +0.5 % a strike away from it) rounded to the 0.05 tick, OI and
volume set. Also timed alone: the 82 implied_vol + greeks calls without the DataFrame around them. One warm-up
call, then --repeats timed calls; median, p99, max.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_stats, main_guard, result, stats  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import pandas as pd  # noqa: E402

from quant.black_scholes import bs_price, greeks, implied_vol, years_to_expiry  # noqa: E402
from ui.chain_grid import build_grid  # noqa: E402

SPOT, ATM, STEP, SIDE = 24012.5, 24000, 50, 20


def chain(t_years: float) -> pd.DataFrame:
    rows = []
    for i in range(-SIDE, SIDE + 1):
        k = ATM + STEP * i
        for kind in ("CE", "PE"):
            p = bs_price(SPOT, k, t_years, 0.12 + 0.005 * abs(i), kind)
            ltp = max(0.05, round(p * 20) / 20)
            rows.append(dict(symbol=f"NIFTY{k}{kind}", strike=float(k), kind=kind, ltp=ltp, bid=ltp - 0.05,
                             ask=ltp + 0.05, oi=150000.0 + 1000 * i, volume=2.0e6, oi_base=140000.0))
    return pd.DataFrame(rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=300)
    a = ap.parse_args()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    expiry = (now + timedelta(days=5)).strftime("%d-%b-%y").upper()
    t = years_to_expiry(expiry, now)
    df = chain(t)
    grid, atm = build_grid(df, SPOT, expiry, now, strikes_each_side=SIDE)  # warm-up, and the sanity check below
    solved = int(grid["CE_iv"].notna().sum() + grid["PE_iv"].notna().sum())
    if len(grid) != 2 * SIDE + 1 or atm != ATM or solved < 2 * (2 * SIDE + 1) - 8:
        raise RuntimeError(f"grid {len(grid)} rows, ATM {atm}, {solved} volatilities solved")
    grid_ms, math_ms = [], []
    quotes = [(r.ltp, r.strike, r.kind) for r in df.itertuples(index=False)]
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        build_grid(df, SPOT, expiry, now, strikes_each_side=SIDE)
        t1 = time.perf_counter()
        for ltp, k, kind in quotes:
            iv = implied_vol(ltp, SPOT, k, t, kind)
            if iv:
                greeks(SPOT, k, t, iv, kind)
        t2 = time.perf_counter()
        grid_ms.append((t1 - t0) * 1000.0)
        math_ms.append((t2 - t1) * 1000.0)
    g, m = stats(grid_ms), stats(math_ms)
    print(f"chain: {len(grid)} strikes x 2 sides, {solved} of {2 * len(grid)} volatilities solved "
          f"(deep in-the-money LTPs at the 0.05 tick can sit below what any volatility gives)")
    print(f"build_grid (IV + greeks + the grid): {fmt_stats(grid_ms)}")
    print(f"IV + greeks alone, 82 contracts    : {fmt_stats(math_ms)}")
    print(f"target <= 5 ms (p99 of build_grid): {'met' if g['p99'] <= 5 else 'MISSED'}")
    result("greeks", median_ms=g["median"], p99_ms=g["p99"], max_ms=g["max"], math_median_ms=m["median"],
           math_p99_ms=m["p99"], repeats=g["n"], solved=solved)
    return 0


if __name__ == "__main__":
    main_guard(main)
