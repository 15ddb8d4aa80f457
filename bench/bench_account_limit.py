"""Tick -> first exit order at the broker, when a tick breaches an ACCOUNT's daily max loss (target: p99 <= 20 ms).

    .venv/bin/python bench/bench_account_limit.py [--trials 20] [--tick-hz 20]

Set-up: as bench_exit_latency.py (the same conditions as the run bench): the simulator (random walk at --tick-hz)
and the service as its own process (`python -m services`, default settings), 49 strategy runs holding one NIFTY
option each on the primary account (limits far away, evaluated on every tick) plus the watchlist: about 1,000
ticks/s into the service. Each trial adds a fresh account (a halted, flattened account is done with) that buys
1 SBIN (NSE, MIS) at the broker directly, as an order placed outside the app would be (no strategy run protects
it), with a daily max loss of 5 % of its price. Once account sync has stored the position (default
funds_refresh_s: up to 10 s), a sync has begun after the poller stored the buy order (a position is usually
traded well before its limit trips; --no-wait-sync skips this, see below) and the limits' 1 s reload has picked
it up, POST /_sim/price sets SBIN 10 % lower.

The trip's transaction writes the first close itself from the stored positionbook (db/flatten.early_closes) when
no order on the position was stored after the last sync began; otherwise the first close waits for the flatten's
orderbook and positionbook reads (--no-wait-sync measures that path).

t0 is the reply's `applied_at_ms` (the simulator applied the price and queued the tick); t1 is `received_at_ms` of
the account's first SELL SBIN placeorder in the simulator's order log: both on the simulator's clock. The
breakdown uses the rows the service wrote: the account_max_loss risk event (the halt + flatten command, one
transaction), the flatten's exit intent created_at and its 'sent' stamp. The price is then set back.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from datetime import timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HANDS_OFF_S, fmt_stats, main_guard, make_run, pct, result, service_process, sim_account, stats, temp_db,
    wait_until)
from bench_exit_latency import option_symbols  # noqa: E402

from sqlalchemy import func, select  # noqa: E402

from db.accounts import add_account, update_account  # noqa: E402
from db.models import BrokerOrder, Funds, OrderIntent, Position, RiskEvent  # noqa: E402
from simulator.testing import SimProcess  # noqa: E402

TARGET = ("SBIN", "NSE")


def utc(d) -> float:
    return d.replace(tzinfo=timezone.utc).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--tick-hz", type=float, default=20.0)
    ap.add_argument("--positions", type=int, default=50)
    ap.add_argument("--no-wait-sync", dest="wait_sync", action="store_false",
                    help="trip as soon as the position is stored (an order moments before its limit: the trip "
                         "cannot close it from the stored positionbook, the flatten's broker reads come first)")
    ap.add_argument("--trace", action="store_true", help="run the service traced (bench/_traced_service.py)")
    a = ap.parse_args()
    db = temp_db("acctlimit")
    trace_file = db.path.with_name("trace.jsonl")
    cmd = [sys.executable, str(Path(__file__).with_name("_traced_service.py"))] if a.trace else None
    env = {"BENCH_TRACE_SYMBOL": TARGET[0], "BENCH_TRACE_FILE": str(trace_file)} if a.trace else None
    lat, lat_post, tripped, created, sent, t0s = [], [], [], [], [], []
    with SimProcess(seed=5, tick_hz=a.tick_hz) as sim:
        bg, _ = sim_account(db, sim, prefix="bg", is_primary=True)
        probe = sim.create_account("probe")
        for sym in option_symbols(sim, probe, a.positions - 1):
            make_run(db, bg, [dict(symbol=sym, exchange="NFO", action="BUY", qty=65, entry=100.0)],
                     max_loss=1e12, name="background")

        def ltp() -> float:
            q = sim.api("quotes", {"apikey": probe, "symbol": TARGET[0], "exchange": TARGET[1]}).json()
            return q["data"]["ltp"]

        def ticks_sent() -> int:
            return sim.stats()["ticks_sent"]

        with service_process(db, cmd=cmd, extra_env=env):
            if not wait_until(lambda: ticks_sent() > 0, 30, 0.2):
                raise RuntimeError("the service never subscribed to the feed")
            time.sleep(2.0)
            n0, c0 = time.monotonic(), ticks_sent()
            time.sleep(2.0)
            ticks_s = (ticks_sent() - c0) / (time.monotonic() - n0)
            for i in range(a.trials):
                name = f"limit-{uuid.uuid4().hex[:6]}"
                key = sim.create_account(name, capital=1e8)
                r = sim.api("placeorder", {"apikey": key, "strategy": "outside", "symbol": TARGET[0],
                                           "exchange": TARGET[1], "action": "BUY", "quantity": 1,
                                           "pricetype": "MARKET", "product": "MIS"}).json()
                if not r.get("orderid"):
                    raise RuntimeError(f"trial {i}: placeorder failed: {r}")
                avg = float(sim.api("positionbook", {"apikey": key}).json()["data"][0]["average_price"])
                acct = add_account(db, name, sim.rest_url, sim.ws_url, key)
                update_account(db, acct, daily_max_loss=round(0.05 * avg, 2))

                def stored(acct=acct):
                    with db.read() as s:
                        return s.scalar(select(Position.quantity).where(Position.account_id == acct)) == 1
                if not wait_until(stored, 30, 0.1):
                    raise RuntimeError(f"trial {i}: account sync did not store the position")

                def synced_since_order(acct=acct):  # a position is traded minutes, not seconds, before its limit
                    with db.read() as s:
                        order = s.scalar(select(func.max(BrokerOrder.updated_at)).where(
                            BrokerOrder.account_id == acct))
                        funds = s.scalar(select(Funds.updated_at).where(Funds.account_id == acct))
                    return order is not None and funds is not None and funds > order
                if a.wait_sync and not wait_until(synced_since_order, 30, 0.2):
                    raise RuntimeError(f"trial {i}: no account sync after the order was stored")
                # the limits' 1 s reload picks the account up and subscribes SBIN; then a random moment of the
                # service's second (the position above is stored by a 1 s job: a fixed pause is a fixed phase)
                time.sleep(1.5 + random.Random(i).random())
                back = ltp()
                t_post = time.time()
                t0 = sim.price_change(*TARGET, round(avg * 0.9, 1))["applied_at_ms"] / 1000.0
                time.sleep(HANDS_OFF_S)  # see _common: the tick goes out before the bench reads

                def exit_done(acct=acct):
                    with db.read() as s:
                        return s.scalar(select(OrderIntent).where(
                            OrderIntent.account_id == acct, OrderIntent.purpose == "exit",
                            OrderIntent.status.notin_(("queued", "claimed", "sent"))).limit(1))
                row = wait_until(exit_done, 30, 0.05)
                if not row:
                    raise RuntimeError(f"trial {i}: no exit order recorded within 30 s")
                with db.read() as s:
                    event = s.scalar(select(RiskEvent).where(RiskEvent.account_id == acct,
                                                             RiskEvent.event_type == "account_max_loss"))
                got = [o for o in sim.orders() if o.get("account") == name and o.get("symbol") == TARGET[0]
                       and o.get("action") == "SELL" and o.get("received_at_ms", 0) >= t_post * 1000.0]
                if not got:
                    raise RuntimeError("the simulator's order log has no received_at_ms for the exit order")
                t1 = min(o["received_at_ms"] for o in got)
                lat.append(t1 - t0 * 1000.0)
                t0s.append(t0)
                lat_post.append(t1 - t_post * 1000.0)
                tripped.append((utc(event.ts_utc) - t0) * 1000.0)
                created.append((utc(row.created_at) - t0) * 1000.0)
                sent.append((utc(row.sent_at) - t0) * 1000.0)
                sim.set_price(*TARGET, back)
                time.sleep(0.05)
    st = stats(lat)
    print(f"ticks flowing into the service: {ticks_s:.0f} ticks/s "
          f"({a.positions} positions + watchlist, sim tick-hz {a.tick_hz:g})")
    print(f"tick (price applied at the sim) -> first exit placeorder at the sim: {fmt_stats(lat)} "
          f"p90={pct(lat, 90):.1f} ms")
    print(f"  the same from before the bench's control POST: {fmt_stats(lat_post)}")
    print("breakdown (ms after the tick):")
    print(f"  halt + risk event + flatten command written (trip)     : {fmt_stats(tripped)}")
    print(f"  flatten's exit intent row created                      : {fmt_stats(created)}")
    print(f"  exit intent claimed 'sent' (stamped before its commit) : {fmt_stats(sent)}")
    hop = [t1 - t for t1, t in zip(lat, sent, strict=True)]
    print(f"  'sent' stamp -> received by the sim (commit + POST)    : {fmt_stats(hop)}")
    if a.trace:
        from bench_limit import trace_report
        trace_report(trace_file, t0s, lat)
    print(f"target p99 <= 20 ms: {'met' if st['p99'] <= 20 else 'MISSED'}")
    result("account_limit", median_ms=st["median"], p90_ms=pct(lat, 90), p99_ms=st["p99"], max_ms=st["max"],
           trials=st["n"], ticks_per_s=ticks_s, tripped_p50=stats(tripped)["median"],
           created_p50=stats(created)["median"], created_p99=stats(created)["p99"],
           sent_p50=stats(sent)["median"], sent_p99=stats(sent)["p99"])
    return 0


if __name__ == "__main__":
    main_guard(main)
