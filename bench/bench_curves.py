"""Scaling curves: how the service's costs grow with the work (issue 17). One subcommand per curve; each prints a
table and a last ``RESULT`` line.

    .venv/bin/python bench/bench_curves.py legs   [--trials 25] [--points 10,100,500,1000]
    .venv/bin/python bench/bench_curves.py rate   [--trials 25] [--points 1000,5000,20000]
    .venv/bin/python bench/bench_curves.py chains [--trials 25]
    .venv/bin/python bench/bench_curves.py pages  [--points 1,30,250] [--runs 3] [--past-snapshot-s 60]
    .venv/bin/python bench/bench_curves.py rss    [--ticks 300000] [--subs 1000]
    .venv/bin/python bench/bench_curves.py history [--trials 25] [--points 0,2000,20000]

legs: tick -> first exit order (bench_exit_latency.py's procedure and figures: t0 = the simulator's applied_at_ms,
  t1 = its received_at_ms) with N open legs across 10 accounts: N - 1 background legs in 2-leg runs, round-robin
  over the accounts, on min(N - 1, 100) distinct NIFTY options (ten accounts running the same strategies hold
  the same contracts), plus the SBIN target leg. The simulator's --tick-hz is set per point so that about 1,000
  ticks/s flow at every point: the curve isolates the number of legs from the feed rate.
rate: the same with 50 positions, the simulator's --tick-hz set for 1,000 / 5,000 / 20,000 ticks/s over the 53
  subscribed symbols; the rate the simulator really sent is measured and printed beside each point, and so are
  the ticks the service's feed counted and coalesced (from its market_data heartbeat).
chains: 50 positions at ~1,000 ticks/s; the first half of the trials without, the second half with three
  option-chain sessions open (NIFTY, BANKNIFTY, SENSEX, nearest expiry, +-20 strikes: the service's default
  chain_strikes; depth mode), in the same simulator and service run.
pages: AppTest.run() of pages/dashboard.py and pages/orders.py (Positions & Orders) on 10 accounts with 1, 30 and
  250 trading days of history: today as bench_dashboard.py seeds it (a full day of 1-s P&L snapshots, 2,000
  intents) plus, per past day, 200 intents with their events, broker orders and trades, 20 runs with a leg each,
  day summaries and P&L snapshots every --past-snapshot-s seconds (default 60, not the service's 1 s: 250 full days
  would be 56 M rows, hours to seed here; the queries are bounded by time and LIMIT, and the 1-s figure can be run
  with --past-snapshot-s 1 at 30 days). Each point in a fresh process after scripts.serve.preload(): first run,
  warm runs, and a run after clearing st.cache_data and st.cache_resource.
history: tick -> exit as in legs (50 positions, one account, ~1,000 ticks/s) with the target account holding N settled
  (filled) order intents from before today: 2,000 is a month of a busy account (~100 orders a day), 20,000 about
  250 trading days of one. Every exit is claimed in its own transaction, and every order by the dispatcher: the
  question is whether either reads the account's past.
rss: bench_memory.py with 1,000 subscriptions (NIFTY options of four expiries + BANKNIFTY): service RSS while N
  ticks go through the feed's on_message, sampled every 10 % of N.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, main_guard, pct, result, temp_db, wait_until  # noqa: E402

from sqlalchemy import insert, select  # noqa: E402

from bench_exit_latency import ServiceBench  # noqa: E402
from db.models import ServiceHeartbeat  # noqa: E402
from simulator.testing import SimProcess  # noqa: E402

WATCH = 3  # the watchlist indices the service always subscribes
CHAINS = (("NIFTY", "NSE_INDEX", "NFO"), ("BANKNIFTY", "NSE_INDEX", "NFO"), ("SENSEX", "BSE_INDEX", "BFO"))


def q4(xs: list[float]) -> dict:
    return dict(n=len(xs), p50=pct(xs, 50), p90=pct(xs, 90), p99=pct(xs, 99), max=max(xs))


def nifty_options(sim, key: str, n: int) -> list[str]:
    """Up to ``n`` NIFTY option symbols, nearest expiry first (the simulator lists 121 strikes per expiry)."""
    out = []
    for u, ex, oex in (("NIFTY", "NSE_INDEX", "NFO"), ("BANKNIFTY", "NSE_INDEX", "NFO")):
        for exp in sim.api("expiry", {"apikey": key, "symbol": u, "exchange": oex,
                                      "instrumenttype": "options"}).json()["data"]:
            chain = sim.api("optionchain", {"apikey": key, "underlying": u, "exchange": ex,
                                            "expiry_date": exp.replace("-", ""), "strike_count": 100}).json()["chain"]
            out += [row[leg]["symbol"] for row in chain for leg in ("ce", "pe")]
            if len(out) >= n:
                return out[:n]
    return out


def feed_counters(db) -> dict:
    with db.read() as s:
        row = s.get(ServiceHeartbeat, "market_data")
    return json.loads(row.details_json) if row else {}


def latency_point(tick_hz: float, legs: int, trials: int, accounts: int, distinct: int, label: str,
                  chains_after: int | None = None, history: int = 0) -> dict:
    db = temp_db("curve")
    with SimProcess(seed=3, tick_hz=tick_hz) as sim:
        probe = sim.create_account("curveprobe")
        syms = nifty_options(sim, probe, distinct) if distinct else []
        b = ServiceBench(sim, db, legs, option_syms=syms, accounts=accounts, legs_per_run=2 if legs > 2 else 1)
        if history:
            settled_intents(db, b.acct, history)
        out = dict(point=label, legs=legs, tick_hz=tick_hz, history=history)
        with b.service():
            out["ticks_per_s"] = b.wait_flowing()
            f0, t0 = feed_counters(db), time.monotonic()
            for i in range(trials):
                if chains_after is not None and i == chains_after:
                    out["before"] = q4(b.lat)
                    out["chain_symbols"] = open_chains(sim, db, probe)
                    n0, c0 = time.monotonic(), b.ticks_sent()
                    time.sleep(2.0)
                    out["ticks_per_s_chains"] = (b.ticks_sent() - c0) / (time.monotonic() - n0)
                    del b.lat[:]
                b.trial(i)
            time.sleep(max(0.0, 2.2 - (time.monotonic() - t0)))  # at least one more feed heartbeat
            f1 = feed_counters(db)
        dt = time.monotonic() - t0
        out["service_ticks_per_s"] = (f1.get("ticks", 0) - f0.get("ticks", 0)) / dt if f1 and f0 else float("nan")
        out["coalesced_per_s"] = (f1.get("coalesced", 0) - f0.get("coalesced", 0)) / dt if f1 and f0 else float("nan")
        out.update(q4(b.lat))
    return out


def settled_intents(db, account_id: int, n: int) -> None:
    """``n`` filled orders of the account from before today, oldest first (ids below every order of the trials)."""
    from db.models import OrderIntent
    from db.order_fsm import Status
    start = datetime.utcnow() - timedelta(days=n // 80 + 2)
    with db.write() as s:
        for k in range(0, n, 5000):
            s.execute(insert(OrderIntent), [
                dict(client_order_id=uuid.uuid4().hex, account_id=account_id, purpose="manual", source="ui",
                     symbol="SBIN", exchange="NSE", action="BUY" if i % 2 else "SELL", requested_qty=1,
                     pricetype="MARKET", product="MIS", status=Status.FILLED.value, broker_order_id=f"H{i}",
                     broker_filled_qty=1, broker_avg_price=800.0, created_at=start + timedelta(minutes=3 * i),
                     updated_at=start + timedelta(minutes=3 * i)) for i in range(k, min(n, k + 5000))])


def cmd_history(a) -> int:
    rows = []
    for n in [int(x) for x in a.points.split(",")]:
        hz = round(1000.0 / (49 + 1 + WATCH), 2)
        rows.append(latency_point(hz, 50, a.trials, 1, 49, f"{n:,} settled orders", history=n))
        print(json.dumps(rows[-1]), flush=True)
    print_curve("tick -> exit against the account's order history (50 positions, ~1,000 ticks/s)", rows,
                "settled orders")
    result("curve_history", points=rows, growth=rows[-1]["p99"] / rows[0]["p99"])
    return 0


def open_chains(sim, db, key: str) -> int:
    """Three chain sessions as the Option Chain page opens them; returns the symbols the service subscribed."""
    from db.chain import get_session, open_session
    ids = []
    for u, ex, oex in CHAINS:
        exp = sim.api("expiry", {"apikey": key, "symbol": u, "exchange": oex,
                                 "instrumenttype": "options"}).json()["data"][0]
        ids.append(open_session(db, u, ex, exp))
    if not wait_until(lambda: all(get_session(db, i)["status"] == "active" for i in ids), 30, 0.2):
        raise RuntimeError(f"chain sessions not active: {[get_session(db, i)['status'] for i in ids]}")
    time.sleep(1.0)
    return sum(len(get_session(db, i)["symbols"]) for i in ids)


def print_curve(title: str, rows: list[dict], first_col: str, extra=()) -> None:
    print(f"\n{title}")
    head = [first_col, "ticks/s sent (sim)", *[h for h, _ in extra], "n", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["point"], f"{r['ticks_per_s']:,.0f}", *[f(r) for _, f in extra], str(r["n"]),
                 f"{r['p50']:.1f}", f"{r['p90']:.1f}", f"{r['p99']:.1f}", f"{r['max']:.1f}"]
        print("| " + " | ".join(cells) + " |")
    growth = rows[-1]["p99"] / rows[0]["p99"]
    print(f"p99 growth, smallest -> largest point: x{growth:.2f} (target <= 1.5: "
          f"{'met' if growth <= 1.5 else 'MISSED'})")


def cmd_legs(a) -> int:
    rows = []
    for n in [int(x) for x in a.points.split(",")]:
        distinct = min(n - 1, 100)
        hz = round(a.rate / (distinct + 1 + WATCH), 2)
        rows.append(latency_point(hz, n, a.trials, 10, distinct, f"{n:,} legs ({distinct} contracts, {hz:g} Hz)"))
        print(json.dumps(rows[-1]), flush=True)
    print_curve("tick -> exit against open legs (10 accounts, ~1,000 ticks/s)", rows, "open legs")
    result("curve_legs", points=rows, growth=rows[-1]["p99"] / rows[0]["p99"])
    return 0


def cmd_rate(a) -> int:
    rows = []
    for rate in [int(x) for x in a.points.split(",")]:
        hz = round(rate / (49 + 1 + WATCH), 2)
        rows.append(latency_point(hz, 50, a.trials, 1, 49, f"{rate:,}/s asked ({hz:g} Hz)"))
        print(json.dumps(rows[-1]), flush=True)
    print_curve("tick -> exit against feed rate (50 positions)", rows, "feed rate", extra=(
        ("ticks/s counted by the service", lambda r: f"{r['service_ticks_per_s']:,.0f}"),
        ("coalesced/s", lambda r: f"{r['coalesced_per_s']:,.0f}")))
    result("curve_rate", points=rows, growth=rows[-1]["p99"] / rows[0]["p99"])
    return 0


def cmd_chains(a) -> int:
    half = a.trials
    r = latency_point(20.0, 50, 2 * half, 1, 49, "", chains_after=half)
    before = dict(r["before"], point="50 positions", ticks_per_s=r["ticks_per_s"])
    after = dict(q4_of(r), point=f"+ 3 chains ({r['chain_symbols']} symbols, depth)",
                 ticks_per_s=r["ticks_per_s_chains"])
    print_curve("tick -> exit with three option-chain sessions beside 50 positions (one run)", [before, after],
                "load")
    result("curve_chains", points=[before, after], growth=after["p99"] / before["p99"])
    return 0


def q4_of(r: dict) -> dict:
    return {k: r[k] for k in ("n", "p50", "p90", "p99", "max")}


# ---- pages ---------------------------------------------------------------------------------------------------
def seed_history(db, fake_now: datetime, days: int, snap_s: int, accts: list[int]) -> dict:
    """Past trading days (weekdays before today), oldest rows first as the service would have written them (so
    today's rows, seeded after, have the highest ids: the pages read newest-first by id)."""
    from db.models import (BrokerOrder, BrokerTrade, DaySummary, Execution, OrderEvent, OrderIntent, PnlSnapshot,
                           RiskEvent, Strategy, StrategyRun)
    rng = random.Random(11)
    with db.write() as s:
        st = Strategy(name="past-straddle", underlying="NIFTY", exchange="NSE_INDEX", product="NRML")
        s.add(st)
        s.flush()
        strat = st.id
    dates, day = [], fake_now.date()
    while len(dates) < days - 1:
        day -= timedelta(days=1)
        if day.weekday() < 5:
            dates.append(day)
    counts = dict(history_intents=0, history_snapshots=0)
    for day in reversed(dates):
        open_utc = datetime(day.year, day.month, day.day, 3, 45)  # 09:15 IST
        with db.write() as s:
            runs = []
            for k in range(20):
                r = StrategyRun(strategy_id=strat, account_id=accts[k % 10], group_id=f"g{day}", max_loss=5000.0,
                                status="exited", pnl=rng.uniform(-3000, 3000),
                                started_at=open_utc + timedelta(minutes=k))
                s.add(r)
                s.flush()
                runs.append(r)
                s.add(Execution(run_id=r.id, account_id=r.account_id, leg_no=1, symbol="NIFTY25DEC24000CE",
                                exchange="NFO", action="SELL", quantity=65, product="NRML", status="exited",
                                entry_price=120.0, exit_price=110.0))
            s.flush()
            base = s.scalar(select(OrderIntent.id).order_by(OrderIntent.id.desc()).limit(1)) or 0
            intents = [dict(id=base + 1 + i, client_order_id=uuid.uuid4().hex, account_id=accts[i % 10],
                            run_id=runs[i % 20].id, symbol="NIFTY25DEC24000CE", exchange="NFO",
                            action="SELL" if i % 2 else "BUY", requested_qty=65, status="filled",
                            purpose="entry" if i % 2 else "exit", broker_order_id=f"H{day}{i}",
                            created_at=open_utc + timedelta(seconds=110 * i),
                            updated_at=open_utc + timedelta(seconds=110 * i)) for i in range(200)]
            s.execute(insert(OrderIntent.__table__), intents)
            s.execute(insert(OrderEvent.__table__), [
                dict(intent_id=it["id"], from_status=f, to_status=t, source="dispatcher", ts_utc=it["created_at"])
                for it in intents for f, t in (("queued", "claimed"), ("claimed", "sent"), ("sent", "placed"),
                                               ("placed", "filled"))])
            s.execute(insert(BrokerOrder.__table__), [
                dict(account_id=it["account_id"], broker_order_id=it["broker_order_id"], intent_id=it["id"],
                     symbol=it["symbol"], exchange="NFO", action=it["action"], quantity=65, order_status="complete",
                     filled_qty=65, avg_price=110.0, updated_at=it["created_at"]) for it in intents])
            s.execute(insert(BrokerTrade.__table__), [
                dict(account_id=it["account_id"], trade_key=f"T{it['broker_order_id']}",
                     broker_order_id=it["broker_order_id"], symbol=it["symbol"], exchange="NFO",
                     action=it["action"], quantity=65, average_price=110.0) for it in intents])
            s.execute(insert(RiskEvent.__table__), [
                dict(run_id=r.id, account_id=r.account_id, event_type="max_loss", threshold=-5000.0, value=-5100.0,
                     ts_utc=open_utc + timedelta(hours=2)) for r in runs[:5]])
            s.execute(insert(DaySummary.__table__), [
                dict(day=day.isoformat(), account_id=a, strategy=st, total=rng.uniform(-5e3, 5e3), trades=20,
                     closed=True) for a in accts for st in ("", "straddle")])
            snaps, steps = [], 22_500 // snap_s
            for a in accts:
                total = 0.0
                for t in range(steps):
                    total += rng.gauss(0, 25)
                    snaps.append(dict(ts_utc=open_utc + timedelta(seconds=t * snap_s), account_id=a, run_id=None,
                                      realized=0.0, unrealized=total, total=total))
            s.execute(insert(PnlSnapshot.__table__), snaps)
        counts["history_intents"] += 200
        counts["history_snapshots"] += len(snaps)
    return counts


def cmd_pages(a) -> int:
    import bench_dashboard
    rows = []
    for days in [int(x) for x in a.points.split(",")]:
        db = temp_db(f"pages{days}")
        ist_today = (datetime.utcnow() + timedelta(hours=5, minutes=30)).date()
        fake_now = datetime(ist_today.year, ist_today.month, ist_today.day, 10, 0, 0)  # 15:30 IST
        t = time.perf_counter()
        accts = bench_dashboard.make_accounts(db)
        hist = seed_history(db, fake_now, days, a.past_snapshot_s, accts)
        bench_dashboard.seed(db, fake_now, accts)
        seeded = time.perf_counter() - t
        size = db.path.stat().st_size / 2**20
        for page in ("dashboard.py", "orders.py"):
            cmd = [sys.executable, str(Path(bench_dashboard.__file__)), "--measure", str(db.path), "--runs",
                   str(a.runs), "--fake-now", fake_now.isoformat(), "--preloaded", "--page", page]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), timeout=600)
            line = [x for x in proc.stdout.splitlines() if x.startswith("MEASURED ")]
            if proc.returncode or not line:
                raise RuntimeError(f"{page} at {days} days failed: {proc.stderr[-2000:]}")
            m = json.loads(line[0][len("MEASURED "):])
            worst = max(m["times"] + [m["cold_cache"]])
            rows.append(dict(days=days, page=page, first_ms=m["times"][0] * 1000,
                             warm_ms=sorted(m["times"][1:])[len(m["times"][1:]) // 2] * 1000 if m["times"][1:]
                             else float("nan"), cold_cache_ms=m["cold_cache"] * 1000, worst_ms=worst * 1000,
                             errors=m["errors"][:1], db_mb=size, seed_s=seeded, **hist))
            print(json.dumps(rows[-1]), flush=True)
    print("\npage script time against days of history (10 accounts; served app: after scripts.serve.preload)")
    print("| days | page | DB size | first run | warm (median) | after cache clear | worst | errors |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['days']} | {r['page']} | {r['db_mb']:.0f} MiB | {r['first_ms']:.0f} ms | {r['warm_ms']:.0f} ms | "
              f"{r['cold_cache_ms']:.0f} ms | {r['worst_ms']:.0f} ms | {r['errors'] or ''} |")
    last = max(r["days"] for r in rows)
    worst = max(r["worst_ms"] for r in rows if r["days"] == last)
    print(f"target <= 1 s at {last} days: {'met' if worst <= 1000 else 'MISSED'} (worst {worst:.0f} ms)")
    result("curve_pages", points=rows, worst_ms_last=worst)
    return 0


def cmd_rss(a) -> int:
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("bench_memory.py")), "--ticks", str(a.ticks),
                           "--subs", str(a.subs)], capture_output=True, text=True, cwd=str(ROOT), timeout=900)
    print(proc.stdout)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("legs")
    p.add_argument("--trials", type=int, default=25)
    p.add_argument("--points", default="10,100,500,1000")
    p.add_argument("--rate", type=float, default=1000.0, help="ticks/s to keep at every point")
    p = sub.add_parser("rate")
    p.add_argument("--trials", type=int, default=25)
    p.add_argument("--points", default="1000,5000,20000")
    p = sub.add_parser("chains")
    p.add_argument("--trials", type=int, default=25, help="per half")
    p = sub.add_parser("pages")
    p.add_argument("--points", default="1,30,250")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--past-snapshot-s", type=int, default=60)
    p = sub.add_parser("history")
    p.add_argument("--trials", type=int, default=25)
    p.add_argument("--points", default="0,2000,20000")
    p = sub.add_parser("rss")
    p.add_argument("--ticks", type=int, default=300_000)
    p.add_argument("--subs", type=int, default=1000)
    a = ap.parse_args()
    return {"legs": cmd_legs, "rate": cmd_rate, "chains": cmd_chains, "pages": cmd_pages, "rss": cmd_rss,
            "history": cmd_history}[a.cmd](a)


if __name__ == "__main__":
    main_guard(main)
