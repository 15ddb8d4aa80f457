"""UI writes and service writes at the same time for 60 s (APP_CONCURRENCY_SECONDS): zero 'database is locked'.

Two real processes on one real SQLite file. The 'UI' process enqueues orders (validated, with a fresh
client_order_id each time, plus a repeated one), heartbeats option-chain sessions and edits an account; the
'service' process claims/sends/places intents by CAS, flushes price batches and writes heartbeats — the same
write shapes the two halves of the product use.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
import traceback

from sqlalchemy import func, select

DURATION = float(os.environ.get("APP_CONCURRENCY_SECONDS", "60"))


def _ui_writer(path, key_file, seconds, out):
    from db import Database
    from db.commands import OrderRequest, enqueue_order
    from db.intents import new_client_order_id
    from db.models import OptionChainSession, utcnow
    errors, n = [], 0
    db = Database(path, key_file=key_file)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            enqueue_order(db, OrderRequest(1, "SBIN", "NSE", random.choice(["BUY", "SELL"]), 1),
                          new_client_order_id())
            enqueue_order(db, OrderRequest(1, "SBIN", "NSE", "BUY", 1), "same-click")  # double click
            with db.write() as s:
                sess = s.get(OptionChainSession, "chain-1")
                sess.last_heartbeat = utcnow()
            n += 1
        except Exception as exc:  # noqa: BLE001 - we count every failure
            errors.append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-300:]}")
    out.put(("ui", n, errors))


def _service_writer(path, key_file, seconds, out):
    from db import Database
    from db.intents import claim_path, next_queued_view, transition
    from db.order_fsm import Status
    from db.models import LatestPrice, utcnow
    from services.health import heartbeat
    errors, n, placed = [], 0, 0
    db = Database(path, key_file=key_file)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            for _ in range(20):  # the dispatcher's write shape: claim + 'sent' in one transaction, then the outcome
                with db.write() as s:
                    nxt = next_queued_view(s, 1)
                    ok = nxt is not None and claim_path(s, nxt.id, [Status.QUEUED, Status.CLAIMED, Status.SENT],
                                                        "dispatcher", claimed_by="svc")
                if not ok:
                    break
                with db.write() as s:
                    placed += transition(s, nxt.id, "sent", "placed", "dispatcher", broker_order_id=f"B{nxt.id}")
            with db.write() as s:  # one batched price flush
                for k in range(50):
                    s.merge(LatestPrice(symbol=f"SYM{k}", exchange="NFO", ltp=100 + random.random(), tick_ts=utcnow()))
            heartbeat(db, "dispatcher", details={"n": n})
            n += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-300:]}")
    out.put(("service", n, errors, placed))


def _reporting(fn, name, path, key_file, seconds, out):
    """Run a writer; whatever ends it early (an error outside its loop, at start-up) is reported, not swallowed."""
    try:
        from tests.market_clock import inherit
        inherit()  # enqueue_order refuses MIS entries after 15:15 IST on the market clock
        fn(path, key_file, seconds, out)
    except BaseException:  # noqa: BLE001 - the parent must hear of it either way
        out.put(("crashed", name, traceback.format_exc()[-2000:]))
        raise


def _collect(out, procs: dict, timeout: float) -> dict:
    """One result per writer. A writer that exits without one (killed, or died at start-up) fails the test at
    once with its exit code, instead of a silent wait for the timeout."""
    import queue
    results, deadline = {}, time.monotonic() + timeout

    def take(r) -> None:
        if r[0] == "crashed":
            results[r[1]] = ("crashed", r[2])
        else:
            results[r[0]] = r

    while len(results) < len(procs):
        try:
            take(out.get(timeout=0.5))
            continue
        except queue.Empty:
            pass
        gone = {n: p.exitcode for n, p in procs.items() if n not in results and p.exitcode is not None}
        if gone:
            try:
                take(out.get(timeout=2.0))  # its last message may still be in the pipe
                continue
            except queue.Empty:
                raise AssertionError(f"writer process(es) exited without a result: exit codes {gone}") from None
        assert time.monotonic() < deadline, f"no result from {set(procs) - set(results)} in {timeout:g} s"
    return results


def test_concurrent_ui_and_service_writes_when_run_together_then_no_database_is_locked(seeded_db, tmp_path):
    from db.models import OptionChainSession, OrderIntent
    from tests.builders import make_account
    make_account(seeded_db)
    with seeded_db.write() as s:
        s.add(OptionChainSession(id="chain-1", underlying="NIFTY", exchange="NSE_INDEX", expiry="X"))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    args = (str(tmp_path / "algomirror.db"), str(tmp_path / "algomirror.key"), DURATION, out)
    procs = {"ui": ctx.Process(target=_reporting, args=(_ui_writer, "ui", *args)),
             "service": ctx.Process(target=_reporting, args=(_service_writer, "service", *args))}
    for p in procs.values():
        p.start()
    results = _collect(out, procs, DURATION + 120)
    for p in procs.values():
        p.join(30)
    crashed = {name: r[1] for name, r in results.items() if r[0] == "crashed"}
    assert not crashed, crashed
    ui, svc = results["ui"], results["service"]
    all_errors = ui[2] + svc[2]
    assert not [e for e in all_errors if "locked" in e.lower()], all_errors[:3]
    assert not all_errors, all_errors[:3]
    assert ui[1] > 10 and svc[1] > 10  # both really wrote, many times
    with seeded_db.read() as s:
        total = s.scalar(select(func.count()).select_from(OrderIntent))
        per_client = s.scalar(select(func.count()).select_from(OrderIntent)
                              .where(OrderIntent.client_order_id == "same-click"))
    assert total == ui[1] + 1 and per_client == 1
