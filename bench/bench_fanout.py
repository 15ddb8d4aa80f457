"""Fan-out: a 4-leg strategy on 10 accounts vs the same strategy on 1 account (target: ratio <= 1.5).

    .venv/bin/python bench/bench_fanout.py [--trials 7] [--latency-ms 50]

Wall time = from the commit of the transaction that queues the legs (one run + 4 queued entry intents per
account, as db.strategies.execute_strategy writes them) to the last intent's 'placed' event (order_events
ts_utc, written by the dispatcher when it records the broker's order id). The dispatcher (services/dispatcher.py)
runs its normal loop and is woken at once (as a risk exit wakes it; the UI-side poll pick-up is measured by
bench_enqueue.py). Two broker conditions: the bare local simulator (~1-3 ms per order) and the simulator's
`latency` fault on placeorder (a real broker answers in tens to hundreds of ms).

CPU per placed order: the dispatcher runs in this process, so over the timed trials the CPU time of every thread
but the main one (``time.process_time()`` less the main thread's ``time.thread_time()``: the main thread only
queues the legs and polls for the outcome) is the service-side cost of claim + POST + outcome, divided by the
orders placed. The simulator's CPU (its own process) is not in it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    main_guard, quiet, queue_strategy, result, settings_for, sim_account, temp_db, wait_until)

from sqlalchemy import func, select  # noqa: E402

from db.models import OrderEvent, OrderIntent  # noqa: E402
from services.context import ServiceContext  # noqa: E402
from services.dispatcher import OrderDispatcher  # noqa: E402
from simulator.testing import SimProcess  # noqa: E402

LEGS = [dict(symbol="SBIN", action="BUY", qty=1), dict(symbol="INFY", action="BUY", qty=1),
        dict(symbol="TCS", action="SELL", qty=1), dict(symbol="RELIANCE", action="SELL", qty=1)]


def one_trial(db, disp: OrderDispatcher, accounts: list[int], name: str) -> float:
    # Let every account's order token bucket refill first (8 orders/s, burst 8): back-to-back trials would
    # otherwise throttle the single account's legs and flatter the 10/1 ratio.
    time.sleep(1.1)
    ids = queue_strategy(db, accounts, LEGS, name)
    t0 = time.time()
    disp.wake()

    def done():
        with db.read() as s:
            return s.scalar(select(func.count()).where(OrderIntent.id.in_(ids),
                                                       OrderIntent.status.notin_(("queued", "claimed", "sent")))) \
                == len(ids)
    if not wait_until(done, 60, 0.02):
        raise RuntimeError("orders were not all dispatched within 60 s")
    with db.read() as s:
        statuses = set(s.scalars(select(OrderIntent.status).where(OrderIntent.id.in_(ids))))
        last = s.scalar(select(func.max(OrderEvent.ts_utc)).where(OrderEvent.intent_id.in_(ids),
                                                                   OrderEvent.to_status == "placed"))
    if statuses != {"placed"}:
        raise RuntimeError(f"unexpected outcomes {statuses}")
    return (last.replace(tzinfo=timezone.utc).timestamp() - t0) * 1000.0


def scenario(sim, latency_ms: int, trials: int) -> dict:
    db = temp_db("fanout")
    ctx = ServiceContext(db, settings_for(db))
    accts = [sim_account(db, sim, prefix="fan") for _ in range(11)]
    if latency_ms:
        for _, name in accts:
            sim.fault("latency", endpoints=["placeorder"], account=name, ms=latency_ms)
    for a, _ in accts:
        ctx.client(a)  # the key decrypt / client build happens once per account in the service too
    single, ten = [accts[0][0]], [a for a, _ in accts[1:]]
    disp = OrderDispatcher(ctx)
    disp.start()
    t1, t10 = [], []
    try:
        one_trial(db, disp, single, "warm")  # warm-up: HTTP keep-alive, SQLAlchemy statement caches
        one_trial(db, disp, ten, "warm")
        idle_ms_per_s = others_cpu_ms(2.0)  # the dispatcher's idle polling, to take out of the per-order figure
        cpu0, main0, wall0 = time.process_time(), time.thread_time(), time.monotonic()
        for i in range(trials):
            t1.append(one_trial(db, disp, single, f"s{i}"))
            t10.append(one_trial(db, disp, ten, f"t{i}"))
        cpu_ms = ((time.process_time() - cpu0) - (time.thread_time() - main0)) * 1000.0
        idle_ms = idle_ms_per_s * (time.monotonic() - wall0)
    finally:
        disp.stop()
        ctx.close()
        if latency_ms:
            sim.clear_faults()
    m1, m10 = statistics.median(t1), statistics.median(t10)
    orders = trials * len(LEGS) * (len(single) + len(ten))
    return dict(latency_ms=latency_ms, one_ms=m1, ten_ms=m10, ratio=m10 / m1, one_all=t1, ten_all=t10,
                cpu_ms_per_order=(cpu_ms - idle_ms) / orders, cpu_gross_ms_per_order=cpu_ms / orders,
                idle_ms_per_s=idle_ms_per_s, orders=orders)


def others_cpu_ms(seconds: float) -> float:
    """CPU ms per second of every thread but this one, while this one sleeps (the dispatcher idle)."""
    c0, m0 = time.process_time(), time.thread_time()
    time.sleep(seconds)
    return ((time.process_time() - c0) - (time.thread_time() - m0)) * 1000.0 / seconds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=7)
    ap.add_argument("--latency-ms", type=int, default=50)
    a = ap.parse_args()
    quiet()
    out = {}
    with SimProcess(seed=5, args=["--frozen", "--order-rate", "1000", "--api-rate", "1000"]) as sim:
        for lat in (0, a.latency_ms):
            r = scenario(sim, lat, a.trials)
            label = "local sim" if not lat else f"latency {lat} ms"
            print(f"[{label}] 4 legs x 1 account : median {r['one_ms']:.1f} ms  "
                  f"(trials {', '.join(f'{x:.0f}' for x in r['one_all'])})")
            print(f"[{label}] 4 legs x 10 accounts: median {r['ten_ms']:.1f} ms  "
                  f"(trials {', '.join(f'{x:.0f}' for x in r['ten_all'])})")
            limit = 1.5 if not lat else 1.2
            print(f"[{label}] ratio 10/1 = {r['ratio']:.2f}  (target <= {limit}: "
                  f"{'met' if r['ratio'] <= limit else 'MISSED'})")
            print(f"[{label}] service CPU per placed order (dispatcher threads, claim + POST + outcome): "
                  f"{r['cpu_ms_per_order']:.2f} ms over {r['orders']} orders, net of idle polling "
                  f"({r['idle_ms_per_s']:.1f} ms/s; gross {r['cpu_gross_ms_per_order']:.2f} ms) (target <= 1 ms: "
                  f"{'met' if r['cpu_ms_per_order'] <= 1.0 else 'MISSED'})")
            out["local" if not lat else "latency"] = r
    loc, lat = out["local"], out["latency"]
    result("fanout", one_ms=loc["one_ms"], ten_ms=loc["ten_ms"], ratio=loc["ratio"],
           lat_ms=a.latency_ms, lat_one_ms=lat["one_ms"], lat_ten_ms=lat["ten_ms"], lat_ratio=lat["ratio"],
           cpu_ms_per_order=loc["cpu_ms_per_order"], lat_cpu_ms_per_order=lat["cpu_ms_per_order"],
           orders=loc["orders"])
    return 0


if __name__ == "__main__":
    main_guard(main)
