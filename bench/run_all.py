"""Run every benchmark (each in its own process) and print a summary table.

    .venv/bin/python bench/run_all.py [--only exit_latency,fanout,...]
    .venv/bin/python bench/run_all.py --only curves:legs,curves:rate,curves:chains,curves:pages,curves:rss

The scaling curves (bench_curves.py, several minutes each) are not in the default list; name them as above.

Exits non-zero only when a benchmark failed to run (a missed target is reported, not an error).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine  # noqa: E402

BENCHES = ["exit_latency", "leg_stop", "limit", "account_limit", "greeks", "ingest", "fanout", "enqueue", "flatten",
           "webhook", "dashboard", "pages_browser", "memory"]


def row(r: dict) -> list[tuple[str, str, str, str]]:
    b = r["bench"]
    ok = lambda c: "met" if c else "MISSED"  # noqa: E731
    if b == "exit_latency":
        return [("tick -> first exit order at broker (50 pos, ~1k ticks/s; service process)",
                 f"median {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms "
                 f"(n={r['trials']}, "
                 f"{r['ticks_per_s']:.0f} ticks/s); from the bench's control POST: p99 {r['from_post_p99']:.1f} ms",
                 "p99 <= 20 ms", ok(r["p99_ms"] <= 20))]
    if b == "leg_stop":
        return [("tick breaching a strategy leg's own stop-loss -> that leg's exit order at broker (as exit_latency)",
                 f"median {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms "
                 f"(n={r['trials']}, {r['ticks_per_s']:.0f} ticks/s)", "p99 <= 20 ms", ok(r["p99_ms"] <= 20))]
    if b == "greeks":
        return [("greeks of a 41-strike chain, both sides (IV + delta/theta + the grid: ui/chain_grid.build_grid)",
                 f"median {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms (n={r['repeats']}); IV + greeks alone "
                 f"median {r['math_median_ms']:.2f} ms", "<= 5 ms", ok(r["p99_ms"] <= 5))]
    if b == "limit":
        q = lambda p: (f"median {r[p + '_median']:.1f}, p90 {r[p + '_p90']:.1f}, p99 {r[p + '_p99']:.1f}, "  # noqa: E731
                       f"max {r[p + '_max']:.1f} ms")
        return [("tick -> exit, service vs the limit (a reflex client: frame -> decide -> POST, no DB), one sim run, "
                 "alternating trials",
                 f"service {q('service')}; limit {q('limit')} (n={r['trials']} each); ratio median "
                 f"{r['ratio_median']:.2f}, p90 {r['ratio_p90']:.2f}, p99 {r['ratio_p99']:.2f}, "
                 f"max {r['ratio_max']:.2f}", "ratio p50 <= 1.5, p99 <= 2.0",
                 ok(r["ratio_median"] <= 1.5 and r["ratio_p99"] <= 2.0))]
    if b == "account_limit":
        return [("tick breaching an account's daily max loss -> first exit order at broker (as exit_latency)",
                 f"median {r['median_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                 f"max {r['max_ms']:.1f} ms (n={r['trials']}, {r['ticks_per_s']:.0f} ticks/s)",
                 "p99 <= 20 ms", ok(r["p99_ms"] <= 20))]
    if b == "ingest":
        return [("tick ingest, one core (on_message + positions + risk)",
                 f"{r['ticks_per_s']:,.0f} ticks/s ({r['us_per_tick']:.1f} us/tick); with flush thread "
                 f"{r['ticks_per_s_with_flush']:,.0f}", ">= 20,000/s", ok(min(r['ticks_per_s'],
                                                                          r['ticks_per_s_with_flush']) >= 20000))]
    if b == "fanout":
        return [("fan-out 4 legs x 10 accts / x 1 acct (local sim)",
                 f"{r['ten_ms']:.0f} ms / {r['one_ms']:.0f} ms = {r['ratio']:.2f}", "<= 1.5", ok(r["ratio"] <= 1.5)),
                (f"fan-out, sim latency fault {r['lat_ms']} ms",
                 f"{r['lat_ten_ms']:.0f} ms / {r['lat_one_ms']:.0f} ms = {r['lat_ratio']:.2f}", "<= 1.2",
                 ok(r["lat_ratio"] <= 1.2)),
                ("service CPU per placed order (claim + POST + outcome; dispatcher threads)",
                 f"{r['cpu_ms_per_order']:.2f} ms bare sim, {r['lat_cpu_ms_per_order']:.2f} ms with the "
                 f"{r['lat_ms']} ms broker ({r['orders']} orders each)", "<= 1 ms",
                 ok(r["cpu_ms_per_order"] <= 1.0))]
    if b == "enqueue":
        return [("UI enqueue -> placed at broker (default settings)",
                 f"median {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms (n={r['orders']})",
                 "p50 <= 150, p99 <= 500 ms", ok(r["median_ms"] <= 150 and r["p99_ms"] <= 500))]
    if b == "flatten":
        return [(f"flatten 10 accts x 4 positions / 1 acct, {r['latency_ms']} ms broker (service process)",
                 f"{r['ten_ms']:.0f} ms / {r['one_ms']:.0f} ms = {r['ratio']:.2f}", "<= 1.5", ok(r["ratio"] <= 1.5))]
    if b == "webhook":
        return [("webhook alert -> first entry order at broker (service + API processes, default settings)",
                 f"median {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms (n={r['alerts']}); HTTP answer "
                 f"p50 {r['answer_median_ms']:.1f} ms", "p99 <= 100 ms", ok(r["p99_ms"] <= 100))]
    if b == "dashboard":
        err = f"; PAGE ERROR: {r['error'][:80]}" if r.get("errors") else ""
        return [("Dashboard page script time (10 accts, full day)",
                 f"first {r['first_ms']:.0f} ms (scripts.serve preload; {r['first_unwarmed_ms']:.0f} ms unwarmed), "
                 f"warm {r['warm_ms']:.0f} ms, cache cleared {r['cold_cache_ms']:.0f} ms, worst {r['worst_ms']:.0f} ms"
                 f"{err}", "<= 1 s", ok(r["worst_ms"] <= 1000 and not r.get("errors")))]
    if b in ("curve_legs", "curve_rate", "curve_chains"):
        pts = "; ".join(f"{p['point']}: p50 {p['p50']:.1f} / p99 {p['p99']:.1f} ms ({p['ticks_per_s']:,.0f} ticks/s)"
                        for p in r["points"])
        return [(f"tick -> exit p99 curve: {b[6:]}", f"{pts}; growth x{r['growth']:.2f}", "p99 growth <= 1.5x",
                 ok(r["growth"] <= 1.5))]
    if b == "curve_pages":
        pts = "; ".join(f"{p['page']} {p['days']} d: worst {p['worst_ms']:.0f} ms" for p in r["points"])
        return [("page script time vs days of history (10 accounts)", pts, "<= 1 s at the largest point",
                 ok(r["worst_ms_last"] <= 1000))]
    if b == "pages_browser":
        pts = "; ".join(f"{p['page']} {p['median_ms']:.0f} / {p['max_ms']:.0f}" for p in r["points"])
        return [(f"sidebar click -> page settled in chromium, median / max ms after the first visit ({r['rounds']} "
                 "rounds, 10 accts, full day)", pts, "<= 1 s every page", ok(not r["over"]))]
    if b == "memory":
        return [(f"service RSS, {r.get('subs', 100)} subs, {r.get('ticks', 1_000_000):,} ticks",
                 f"{r['rss_start_mb']:.1f} -> {r['rss_100k_mb']:.1f} (100k) -> {r['rss_end_mb']:.1f} MiB",
                 "flat", ok(abs(r["growth_mb"]) < 5))]
    return [(b, json.dumps(r), "", "")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(BENCHES))
    a = ap.parse_args()
    results, failed = [], []
    for name in a.only.split(","):
        base, _, sub = name.partition(":")
        script = HERE / f"bench_{base}.py"
        print(f"==> {script.name} {sub}".rstrip(), flush=True)
        load0 = os.getloadavg()[0]
        t = time.monotonic()
        p = subprocess.run([sys.executable, str(script), *([sub] if sub else [])], capture_output=True, text=True,
                           cwd=str(HERE.parent))
        dt = time.monotonic() - t
        out = [ln for ln in p.stdout.splitlines()]
        for ln in out:
            if not ln.startswith("RESULT "):
                print("    " + ln)
        res = [json.loads(ln[7:]) for ln in out if ln.startswith("RESULT ")]
        if p.returncode != 0 or not res:
            failed.append(name)
            print(f"    FAILED to run (exit {p.returncode}):\n" + p.stderr[-2000:])
            continue
        res[-1].update(seconds=dt, load=(load0, os.getloadavg()[0]))
        results.append(res[-1])
        print(f"    ({dt:.0f} s, load average {load0:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
    m = machine()
    print(f"\nMachine: nproc={m['nproc']}, CPU {m['cpu']}, RAM {m['ram']}, Python {m['python']}, {m['platform']}")
    print("\n| Benchmark | Result | Target | |\n|---|---|---|---|")
    for r in results:
        for what, got, target, verdict in row(r):
            print(f"| {what} | {got} | {target} | {verdict} |")
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
