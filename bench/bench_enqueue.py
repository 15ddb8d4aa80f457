"""UI enqueue -> order placed at the broker (targets: p50 <= 150 ms, p99 <= 500 ms).

    .venv/bin/python bench/bench_enqueue.py [--orders 80]

The service runs as its own process (`python -m services --db ...`) with DEFAULT settings (dispatch poll 50 ms).
This process plays the Streamlit app: db.commands.enqueue_order writes one queued intent (validated against the
symbol master the service loaded from the simulator); nothing wakes the service. t0 = time.time() when
enqueue_order returns (committed); t1 = `received_at_ms` of that order in the simulator's order log (matched by
a unique strategy tag). Orders are spaced 150-300 ms apart (the default token bucket allows 8 orders/s per
account; OpenAlgo allows 10/s).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_stats, main_guard, result, service_process, sim_account, stats, temp_db  # noqa: E402

from db.commands import OrderRequest, enqueue_order  # noqa: E402
from simulator.testing import SimProcess  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=80)
    a = ap.parse_args()
    db = temp_db("enqueue")
    lat = []
    with SimProcess(seed=4) as sim:
        acct, name = sim_account(db, sim, prefix="enq", is_primary=True)
        with service_process(db):
            time.sleep(1.0)
            rng = random.Random(7)
            tags = []
            for i in range(a.orders + 3):
                tag = f"enq{i}x{uuid.uuid4().hex[:6]}"
                req = OrderRequest(account_id=acct, symbol="SBIN", exchange="NSE", action="BUY" if i % 2 else "SELL",
                                   quantity=1, strategy_tag=tag)
                enqueue_order(db, req, uuid.uuid4().hex)
                tags.append((tag, time.time()))
                time.sleep(rng.uniform(0.15, 0.3))
            time.sleep(1.0)
            by_tag = {o.get("strategy"): o for o in sim.orders() if o.get("account") == name}
            for tag, t0 in tags[3:]:  # the first three warm the service's client connection
                o = by_tag.get(tag)
                if o is None:
                    raise RuntimeError(f"order {tag} never reached the simulator")
                lat.append(o["received_at_ms"] - t0 * 1000.0)
    st = stats(lat)
    print(f"enqueue (UI row committed) -> placeorder received by the sim: {fmt_stats(lat)}")
    print(f"targets p50 <= 150 ms: {'met' if st['median'] <= 150 else 'MISSED'}; "
          f"p99 <= 500 ms: {'met' if st['p99'] <= 500 else 'MISSED'}")
    result("enqueue", median_ms=st["median"], p99_ms=st["p99"], max_ms=st["max"], orders=st["n"])
    return 0


if __name__ == "__main__":
    main_guard(main)
