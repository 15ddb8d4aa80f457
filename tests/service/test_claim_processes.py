"""Two dispatcher PROCESSES on one queue (one SQLite file, one simulator): every intent claimed exactly once."""
from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter

from sqlalchemy import select

from db.models import OrderEvent, OrderIntent
from tests.service.fixtures_orders import add_intent, order_sim, placed_at_sim, sim_account  # noqa: F401

N_PER_ACCOUNT = 10


def _dispatch_process(db_path: str, key_file: str, worker: str, start_at: float, out) -> None:
    try:
        from db import Database
        from services.context import ServiceContext
        from services.dispatcher import OrderDispatcher
        from tests.market_clock import inherit
        from tests.service.fixtures_orders import fast_settings
        inherit()  # the dispatcher denies MIS entries after 15:15 IST on the market clock
        ctx = ServiceContext(Database(db_path, key_file=key_file),
                             fast_settings(broker__order_rate_per_s=4))  # 2 processes stay under the sim's 10/s
        d = OrderDispatcher(ctx, worker_id=worker)
        time.sleep(max(0.0, start_at - time.time()))
        idle_since = None
        while True:
            d.run_once()
            with ctx.db.read() as s:
                left = s.scalar(select(OrderIntent.id).where(OrderIntent.status == "queued").limit(1))
            if left is None:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 0.3:
                    break
            time.sleep(0.005)
        d.stop()
        ctx.close()
        out.put((worker, "ok"))
    except Exception as exc:  # surfaced by the assertion in the parent
        out.put((worker, repr(exc)))


def test_two_processes_when_claiming_same_queue_then_each_intent_claimed_exactly_once(db, order_sim, tmp_path):
    accounts = [sim_account(db, order_sim, prefix="cp") for _ in range(3)]
    for _, name in accounts:
        order_sim.fault("latency", endpoints=["placeorder"], account=name, ms=20)
    ids = [add_intent(db, acct) for acct, _ in accounts for _ in range(N_PER_ACCOUNT)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 2.0
    procs = [ctx.Process(target=_dispatch_process,
                         args=(str(db.path), str(tmp_path / "algomirror.key"), f"worker-{n}", start_at, out))
             for n in range(2)]
    try:
        for p in procs:
            p.start()
        results = dict(out.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(10)
    finally:
        order_sim.clear_faults()
        for p in procs:
            if p.is_alive():
                p.kill()
    assert results == {"worker-0": "ok", "worker-1": "ok"}
    with db.read() as s:
        claims = Counter(s.scalars(select(OrderEvent.intent_id).where(OrderEvent.to_status == "claimed")))
        by_worker = Counter(s.scalars(select(OrderIntent.claimed_by)))
        statuses = set(s.scalars(select(OrderIntent.status)))
    assert sum(claims.values()) == len(ids) and set(claims) == set(ids)
    assert max(claims.values()) == 1
    with db.read() as s:  # and nothing was bounced back by a 429 (which would legitimately re-claim)
        assert not s.scalar(select(OrderEvent.id).where(OrderEvent.to_status == "queued").limit(1))
    assert set(by_worker) == {"worker-0", "worker-1"}, by_worker  # both really competed
    assert statuses == {"placed"}
    assert sum(len(placed_at_sim(order_sim, name)) for _, name in accounts) == len(ids)
