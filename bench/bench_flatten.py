"""Flatten wall time: 10 accounts x 4 positions vs 1 account x 4 positions, with a 50 ms broker (target: 10/1
ratio <= 1.5).

    .venv/bin/python bench/bench_flatten.py [--latency-ms 50] [--trials 3]

Set-up: the simulator (frozen prices, its `latency` fault on every endpoint of the bench's accounts) and the
service as its own process (default settings). Per trial, each account is given 4 open positions (2 long, 2 short,
placed at the broker directly, as orders placed outside the app would be) and one resting LIMIT order; then a
control command flattens one account, or all ten (``flatten_all`` covers every account in the database, so each
scenario runs on a database of its own). Wall time = from the command row's commit to the service marking it
done (its result says cancelled n/N, closed n/N). The flatten waits for the poller (1 s cycle) to record each
exit's fill before it re-reads the positionbook, so both figures include about two poll cycles.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import main_guard, quiet, result, service_process, temp_db, wait_until  # noqa: E402

from db.accounts import add_account  # noqa: E402
from db.commands import enqueue_control  # noqa: E402
from db.models import ControlCommand  # noqa: E402
from db.vocab import CommandStatus  # noqa: E402
from simulator.testing import SimProcess  # noqa: E402

POSITIONS = [("SBIN", "BUY"), ("INFY", "BUY"), ("TCS", "SELL"), ("RELIANCE", "SELL")]


def seed_positions(sim, key: str) -> None:
    for symbol, action in POSITIONS:
        r = sim.api("placeorder", {"apikey": key, "strategy": "bench", "symbol": symbol, "exchange": "NSE",
                                   "action": action, "quantity": 1, "pricetype": "MARKET", "product": "MIS"}).json()
        if not r.get("orderid"):
            raise RuntimeError(f"placeorder failed: {r}")
    sim.api("placeorder", {"apikey": key, "strategy": "bench", "symbol": "SBIN", "exchange": "NSE", "action": "BUY",
                           "quantity": 1, "pricetype": "LIMIT", "price": 1.0, "product": "MIS"})


def scenario(sim, n_accounts: int, latency_ms: int, trials: int) -> list[float]:
    db = temp_db(f"flatten{n_accounts}")
    keys = {}
    for n in range(n_accounts):
        name = f"flat{n_accounts}-{n}-{time.monotonic_ns() % 10**9}"
        keys[name] = sim.create_account(name, capital=1e9)
        acct = add_account(db, name, sim.rest_url, sim.ws_url, keys[name], is_primary=n == 0)
        if latency_ms:
            sim.fault("latency", account=name, ms=latency_ms)
        keys[name] = (acct, keys[name])
    times = []
    with service_process(db):
        for _ in range(trials):
            for _, key in keys.values():
                seed_positions(sim, key)
            for acct, _ in keys.values():  # re-armed: the previous trial's flatten halted them
                enqueue_control(db, "rearm_account", {"account_id": acct})
            time.sleep(1.5)
            kind, payload = ("flatten_all", {}) if n_accounts > 1 else \
                ("flatten_account", {"account_id": next(iter(keys.values()))[0]})
            t0 = time.monotonic()
            cid = enqueue_control(db, kind, payload)

            if not wait_until(lambda c=cid: _finished(db, c), 120, 0.02):
                raise RuntimeError("the flatten did not finish within 120 s")
            times.append((time.monotonic() - t0) * 1000.0)
            with db.read() as s:
                cmd = s.get(ControlCommand, cid)
            if cmd.status != CommandStatus.DONE or "NOT DONE" in cmd.result:
                raise RuntimeError(f"flatten incomplete: {cmd.result}")
    return times


def _finished(db, command_id: int) -> bool:
    with db.read() as s:
        return s.get(ControlCommand, command_id).status != CommandStatus.QUEUED


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--latency-ms", type=int, default=50)
    a = ap.parse_args()
    quiet()
    with SimProcess(seed=7, args=["--frozen", "--order-rate", "1000", "--api-rate", "1000"]) as sim:
        one = scenario(sim, 1, a.latency_ms, a.trials)
        ten = scenario(sim, 10, a.latency_ms, a.trials)
    m1, m10 = statistics.median(one), statistics.median(ten)
    print(f"[latency {a.latency_ms} ms] flatten 1 account x 4 positions : median {m1:.0f} ms "
          f"(trials {', '.join(f'{x:.0f}' for x in one)})")
    print(f"[latency {a.latency_ms} ms] flatten 10 accounts x 4 positions: median {m10:.0f} ms "
          f"(trials {', '.join(f'{x:.0f}' for x in ten)})")
    print(f"ratio 10/1 = {m10 / m1:.2f}  (target <= 1.5: {'met' if m10 / m1 <= 1.5 else 'MISSED'})")
    result("flatten", one_ms=m1, ten_ms=m10, ratio=m10 / m1, latency_ms=a.latency_ms)
    return 0


if __name__ == "__main__":
    main_guard(main)
