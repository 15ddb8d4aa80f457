"""Tick -> first exit order at the broker, when a tick breaches a run's max loss (target: p99 <= 20 ms).

    .venv/bin/python bench/bench_exit_latency.py [--trials 100] [--tick-hz 20]

Set-up: the simulator (random walk at --tick-hz) and the service as its own process (`python -m services`,
default settings: the deployment shape; this process only plays the trader and the stopwatch). 49 strategy runs
hold one NIFTY option each (limits far away, so the risk manager evaluates them on every tick) and each trial adds
a fresh 50th run: BUY 1 SBIN (NSE, MIS) entered 1 rupee above the current price, max loss 5 % of it. 50 open
positions + 3 watchlist indices stream 53 symbols x 20 Hz = about 1,060 ticks/s into the service (measured below
from the simulator's counters).

Per trial (a fresh run each time): wait until the service's risk manager has evaluated the new run on a live
tick (its P&L, -1 rupee at entry, is persisted), waits 0.1-1.1 s (at random, seeded by the trial number), then
POST /_sim/price sets SBIN 10 % lower. The tick time t0 is
the reply's `applied_at_ms`: when the simulator applied the price and queued the tick to its subscribers. t1 is
`received_at_ms` of the first SELL SBIN placeorder of the account in the simulator's order log (the time the
simulator's handler created the order). Latency = t1 - t0, both taken by the simulator (same clock). Also
printed: the same from just before this process sent the control POST (adds the POST, ~1-3 ms: pessimistic).
The breakdown uses the exit intent's created_at / sent_at written by the service. The price is then set back.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HANDS_OFF_S, fmt_stats, main_guard, make_run, result, service_process, sim_account, stats, temp_db, wait_until)

from sqlalchemy import select  # noqa: E402

from db.models import OrderIntent, StrategyRun  # noqa: E402
from simulator.testing import SimProcess  # noqa: E402

TARGET = ("SBIN", "NSE")


def option_symbols(sim, key: str, n: int) -> list[str]:
    exp = sim.api("expiry", {"apikey": key, "symbol": "NIFTY", "exchange": "NFO",
                             "instrumenttype": "options"}).json()["data"][0].replace("-", "")
    chain = sim.api("optionchain", {"apikey": key, "underlying": "NIFTY", "exchange": "NSE_INDEX",
                                    "expiry_date": exp, "strike_count": n // 4 + 5}).json()["chain"]
    out = [row[leg]["symbol"] for row in chain for leg in ("ce", "pe")]
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} option symbols")
    return out[:n]


class ServiceBench:
    """The service side of the measurement, reusable in one simulator run (bench_limit.py runs it beside the
    limit): the background runs, the service process, and one breach trial at a time."""

    def __init__(self, sim, db, positions: int, option_syms: list[str] | None = None, accounts: int = 1,
                 legs_per_run: int = 1, service_cmd: list[str] | None = None, service_env: dict | None = None,
                 leg_stop: bool = False):
        self.sim, self.db = sim, db
        self.acct, self.name = sim_account(db, sim, prefix="exit", is_primary=True)
        self.key = sim.create_account("probe")
        others = [self.acct] + [sim_account(db, sim, prefix="exit")[0] for _ in range(accounts - 1)]
        syms = option_syms if option_syms is not None else option_symbols(sim, self.key, positions - 1)
        # background legs: ``positions - 1`` of them, round-robin over the accounts, ``legs_per_run`` per run
        legs = [syms[i % len(syms)] for i in range(positions - 1)]
        for n in range(0, len(legs), legs_per_run):
            make_run(db, others[(n // legs_per_run) % len(others)],
                     [dict(symbol=sym, exchange="NFO", action="BUY", qty=65, entry=100.0)
                      for sym in legs[n:n + legs_per_run]], max_loss=1e12, name="background")
        self.service_cmd, self.service_env = service_cmd, service_env
        # leg_stop: the target run's breach is its leg's own stop-loss (5 % of entry; the run has no max loss)
        self.leg_stop = leg_stop
        self.lat, self.lat_post, self.created, self.sent, self.t0s = [], [], [], [], []

    def ltp(self) -> float:
        return self.sim.api("quotes", {"apikey": self.key, "symbol": TARGET[0],
                                       "exchange": TARGET[1]}).json()["data"]["ltp"]

    def ticks_sent(self) -> int:
        return self.sim.stats()["ticks_sent"]

    def service(self):
        return service_process(self.db, cmd=self.service_cmd, extra_env=self.service_env)

    def wait_flowing(self) -> float:
        """Once the service runs: wait for its feed, then measure the simulator's send rate (ticks/s)."""
        if not wait_until(lambda: self.ticks_sent() > 0, 30, 0.2):
            raise RuntimeError("the service never subscribed to the feed")
        time.sleep(2.0)  # the risk manager loads the background runs and subscribes their symbols
        n0, c0 = time.monotonic(), self.ticks_sent()
        time.sleep(2.0)
        return (self.ticks_sent() - c0) / (time.monotonic() - n0)

    def trial(self, i: int) -> float:
        """One breach: a fresh run, evaluated live, then the price drop. Returns the latency (ms)."""
        sim, db = self.sim, self.db
        entry = round(self.ltp() + 1.0, 2)
        leg = dict(symbol=TARGET[0], exchange=TARGET[1], action="BUY", qty=1, entry=entry, product="MIS")
        if self.leg_stop:
            leg.update(sl_mode="points", sl_value=round(0.05 * entry, 2))
        run_id, _ = make_run(db, self.acct, [leg], max_loss=None if self.leg_stop else 0.05 * entry,
                             name="target")

        def evaluated(r=run_id):
            with db.read() as s:
                return s.scalar(select(StrategyRun.pnl).where(StrategyRun.id == r)) != 0.0
        if not wait_until(evaluated, 10, 0.05):
            raise RuntimeError(f"trial {i}: the risk manager did not evaluate run {run_id}")
        # a random moment of the service's second: the evaluated P&L above is written by one of its 1 s jobs, so a
        # fixed pause put every breach at the same phase of its job schedule (the quiet gap after a burst, when
        # the jobs all ran at once)
        time.sleep(0.1 + random.Random(i).random())
        t_post = time.time()
        t0 = sim.price_change(*TARGET, round(entry * 0.9, 1))["applied_at_ms"] / 1000.0
        time.sleep(HANDS_OFF_S)  # see _common: the tick goes out before the bench reads

        def exit_done(run_id=run_id):
            with db.read() as s:
                return s.scalar(select(OrderIntent).where(
                    OrderIntent.run_id == run_id, OrderIntent.purpose == "exit",
                    OrderIntent.status.notin_(("queued", "claimed", "sent"))).limit(1))
        row = wait_until(exit_done, 10, 0.05)  # the figure comes from the sim log: poll gently
        if not row:
            raise RuntimeError(f"trial {i}: no exit order recorded within 10 s")
        got = [o for o in sim.orders() if o.get("account") == self.name and o.get("symbol") == TARGET[0]
               and o.get("action") == "SELL" and o.get("received_at_ms", 0) >= t_post * 1000.0]
        if not got:
            raise RuntimeError("the simulator's order log has no received_at_ms for the exit order")
        t1 = min(o["received_at_ms"] for o in got)
        self.t0s.append(t0)
        self.lat.append(t1 - t0 * 1000.0)
        self.lat_post.append(t1 - t_post * 1000.0)
        utc = lambda d: d.replace(tzinfo=timezone.utc).timestamp()  # noqa: E731
        self.created.append((utc(row.created_at) - t0) * 1000.0)
        self.sent.append((utc(row.sent_at) - t0) * 1000.0)
        sim.set_price(*TARGET, entry)
        time.sleep(0.05)
        return self.lat[-1]

    def report(self) -> None:
        print(f"tick (price applied at the sim) -> first exit placeorder at the sim: {fmt_stats(self.lat)}")
        print(f"  the same from before the bench's control POST: {fmt_stats(self.lat_post)}")
        print("breakdown (ms after the tick):")
        print(f"  exit intent row created (risk)                        : {fmt_stats(self.created)}")
        print(f"  exit intent claimed 'sent' (stamped before its commit): {fmt_stats(self.sent)}")
        hop = [t1 - t for t1, t in zip(self.lat, self.sent, strict=True)]
        print(f"  'sent' stamp -> received by the sim (commit + POST)   : {fmt_stats(hop)}")


def main(leg_stop: bool = False) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--tick-hz", type=float, default=20.0)
    ap.add_argument("--positions", type=int, default=50)
    a = ap.parse_args()
    db = temp_db("legstop" if leg_stop else "exit")
    with SimProcess(seed=3, tick_hz=a.tick_hz) as sim:
        b = ServiceBench(sim, db, a.positions, leg_stop=leg_stop)
        with b.service():
            ticks_s = b.wait_flowing()
            for i in range(a.trials):
                b.trial(i)
    lat, lat_post, created, sent = b.lat, b.lat_post, b.created, b.sent
    st = stats(lat)
    print(f"ticks flowing into the service: {ticks_s:.0f} ticks/s "
          f"({a.positions} positions + watchlist, sim tick-hz {a.tick_hz:g})")
    print("breach: the target leg's own stop-loss (the run has no max loss)" if leg_stop
          else "breach: the target run's max loss")
    b.report()
    print(f"target p99 <= 20 ms: {'met' if st['p99'] <= 20 else 'MISSED'}")
    result("leg_stop" if leg_stop else "exit_latency", median_ms=st["median"], p99_ms=st["p99"], max_ms=st["max"],
           trials=st["n"], from_post_p50=stats(lat_post)["median"], from_post_p99=stats(lat_post)["p99"],
           ticks_per_s=ticks_s, created_p50=stats(created)["median"], created_p99=stats(created)["p99"],
           sent_p50=stats(sent)["median"], sent_p99=stats(sent)["p99"])
    return 0


if __name__ == "__main__":
    main_guard(main)
