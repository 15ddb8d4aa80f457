"""Webhook alert received -> first entry order at the broker (target: p99 <= 100 ms).

    .venv/bin/python bench/bench_webhook.py [--alerts 60]

The service (`python -m services`) and the local API (`python -m api`) run as their own processes with DEFAULT
settings (dispatch poll 50 ms; nothing wakes the service). A strategy rule executes a 2-leg NIFTY strategy (BUY
wing, then SELL) on one simulator account; each alert has its own alert_id, so each is a new execution.
t0 = time.time() just before the alert is POSTed to /webhook/<token>; t1 = `received_at_ms` of that execution's
first entry order in the simulator's order log. Also printed: the webhook's own answer time (alert -> HTTP 200,
the run and its intents committed). Alerts are sent one at a time, 200-400 ms apart.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fmt_stats, main_guard, result, service_process, stats, temp_db, wait_until  # noqa: E402

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from db.accounts import add_account  # noqa: E402
from db.models import Instrument, LatestPrice  # noqa: E402
from db.strategies import LegSpec, parse_expiry, save_strategy  # noqa: E402
from db.webhooks import RuleKind, create_rule  # noqa: E402
from simulator.testing import SimProcess, free_port  # noqa: E402


def api_process(db, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP__")}
    env["PYTHONPATH"] = str(ROOT)
    # the rule's 'api' tier (100 alerts a minute by default) would refuse a long run; latency is measured here,
    # not the limiter (tests/api covers it)
    env["APP__API__RATE_API"] = "1000/minute"
    log = open(db.path.with_name("api.out"), "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "api", "--db", str(db.path), "--port", str(port)],
                                cwd=str(ROOT), env=env, stdout=log, stderr=log)
    finally:
        log.close()


def nifty_expiry(db) -> str:
    with db.read() as s:
        expiries = set(s.scalars(select(Instrument.expiry).where(
            Instrument.name == "NIFTY", Instrument.exchange == "NFO", Instrument.instrumenttype == "CE")))
    return min(expiries, key=parse_expiry)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=60)
    a = ap.parse_args()
    db = temp_db("webhook")
    lat, answer = [], []
    with SimProcess(seed=9) as sim:
        name = f"wh-{uuid.uuid4().hex[:6]}"
        acct = add_account(db, name, sim.rest_url, sim.ws_url, sim.create_account(name, capital=1e10),
                           is_primary=True)
        with service_process(db):
            def priced():
                with db.read() as s:
                    return s.scalar(select(func.count()).select_from(LatestPrice).where(
                        LatestPrice.symbol == "NIFTY", LatestPrice.ltp > 0))
            if not wait_until(priced, 60, 0.1):
                raise RuntimeError("no NIFTY price from the service")
            sid = save_strategy(db, "bench wing", "NIFTY", "NSE_INDEX", nifty_expiry(db),
                                [LegSpec("CE", "BUY", strike_mode="OTM", offset=3), LegSpec("CE", "SELL")])
            _, token = create_rule(db, "bench rule", RuleKind.STRATEGY, [acct], strategy_id=sid)
            port = free_port()
            api = api_process(db, port)
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            try:
                def up():
                    try:
                        return http.get("/openapi.json").status_code == 200
                    except httpx.HTTPError:
                        return False
                if not wait_until(up, 30, 0.1):
                    raise RuntimeError("the API did not start (see api.out beside the temp DB)")
                rng = random.Random(3)

                def mine() -> list[dict]:
                    return [o for o in sim.orders() if o.get("account") == name]
                for i in range(a.alerts + 3):
                    seen = len(mine())
                    t0 = time.time()
                    r = http.post(f"/webhook/{token}", json={"strategy": "bench wing", "action": "enter",
                                                             "alert_id": f"bench-{i}"})
                    t_answer = time.time()
                    if r.status_code != 200:
                        raise RuntimeError(f"alert {i}: {r.status_code} {r.text}")
                    got = wait_until(lambda n=seen: mine()[n:], 10, 0.005)
                    if not got:
                        raise RuntimeError(f"alert {i}: no order reached the simulator")
                    if i >= 3:  # the first three warm the API's and the service's connections
                        lat.append(min(o["received_at_ms"] for o in got) - t0 * 1000.0)
                        answer.append((t_answer - t0) * 1000.0)
                    wait_until(lambda n=seen: len(mine()) >= n + 2, 5)  # both legs in before the next alert
                    time.sleep(rng.uniform(0.2, 0.4))
            finally:
                http.close()
                api.send_signal(signal.SIGTERM)
                api.wait(20)
    st = stats(lat)
    print(f"webhook alert POSTed -> first entry placeorder received by the sim: {fmt_stats(lat)}")
    print(f"webhook alert POSTed -> HTTP answer (run + intents committed): {fmt_stats(answer)}")
    print(f"target p99 <= 100 ms: {'met' if st['p99'] <= 100 else 'MISSED'}")
    result("webhook", median_ms=st["median"], p99_ms=st["p99"], max_ms=st["max"], alerts=st["n"],
           answer_median_ms=stats(answer)["median"], answer_p99_ms=stats(answer)["p99"])
    return 0


if __name__ == "__main__":
    main_guard(main)
