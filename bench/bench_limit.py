"""The limit: how fast a minimal Python client turns a breaching tick into an exit order, beside the service.

    .venv/bin/python bench/bench_limit.py [--trials 60] [--tick-hz 20] [--positions 50] [--trace]
    .venv/bin/python bench/bench_limit.py --limit-only          # the reflex client alone (no service)

The reflex client (``--reflex-child``, its own process, one thread on the socket): websocket-client connection to
the simulator's feed, the same symbols the service subscribes (the 49 background options, SBIN and the three
watchlist indices, mode 2), and per frame: ``json.loads``, the position(s) held in that symbol, P&L = (ltp -
entry) x qty, and on a breach one placeorder POST (SELL, MARKET) over a kept-alive ``http.client`` connection.
No database, no intent row, no second thread on the tick path: everything the service does beyond this is the
price of its safety properties (intent row before the POST, the claim, the outcome, the write gate).

One simulator process (same seed, --tick-hz, accounts) serves both. The service (``python -m services``, default
settings) holds the 50 positions of bench_exit_latency.py and is measured exactly as there; the reflex client
holds the same 49 background positions and, in its trials, the same SBIN position (BUY 1, entered 1 rupee above
the price, max loss 5 %). Trials alternate service / limit, so both see the same machine load over the run (this
VM is shared), and both clients stay connected throughout: each side's trials run with the other's feed load
present. t0 = the simulator's ``applied_at_ms`` of the breaching price; t1 = ``received_at_ms`` of the SELL SBIN
placeorder of that side's account in the simulator's order log. Same clock, same procedure.

``--trace`` runs the service through bench/_traced_service.py (perf_counter stamps on the tick -> exit path; the
product code is unchanged) and prints where its first milliseconds go, including the kernel's receive time of the
breaching frame (SO_TIMESTAMPNS): simulator + loopback before it, wake-up + GIL after it.

Also printed, to tell the simulator's delivery from either client's work: when the reflex client's ``recv`` returned
its own trials' breaching frames, and when it returned the SAME frame in the service's trials (both clients are
subscribed to the target throughout, so a service trial's tick reaches the reflex client too).
"""
from __future__ import annotations

import argparse
import http.client
import json
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import main_guard, pct, result, temp_db  # noqa: E402

TARGET = ("SBIN", "NSE")
WATCHLIST = [("NIFTY", "NSE_INDEX"), ("BANKNIFTY", "NSE_INDEX"), ("SENSEX", "BSE_INDEX")]


# ---- the reflex client (child process) -------------------------------------------------------------------------
def reflex_child(ws_url: str, rest_url: str, apikey: str, symbols: list[list[str]]) -> int:
    """stdin commands: ``hold ID SYMBOL EXCHANGE ENTRY QTY MAX_LOSS`` / ``drop ID`` / ``quit``.
    stdout: ``ready``, ``seen ID`` (first evaluation of a held position on a tick), ``sent ID HTTP-STATUS MS WMS``
    (MS: time.time() in ms when ws.recv returned the breaching frame, WMS: when the request was written)."""
    import websocket

    def connect():
        ws = websocket.create_connection(ws_url, timeout=5, skip_utf8_validation=True)
        ws.send(json.dumps({"action": "authenticate", "api_key": apikey}))
        while json.loads(ws.recv()).get("type") != "auth":
            pass
        ws.send(json.dumps({"action": "subscribe", "mode": 2, "depth": 5,
                            "symbols": [{"symbol": s, "exchange": e} for s, e in symbols]}))
        ws.settimeout(0.25)
        return ws

    ws = connect()
    done = threading.Event()
    u = urlsplit(rest_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    conn.connect()
    headers = {"Content-Type": "application/json"}
    by_key: dict[tuple[str, str], dict[str, list]] = {}  # key -> {id: [entry, qty, max_loss, seen]}
    lock = threading.Lock()
    out_lock = threading.Lock()
    target_frames: list[float] = []  # time.time() of every frame of the target symbol

    def say(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def feed() -> None:
        nonlocal ws
        loads = json.loads
        while not done.is_set():
            try:
                raw = ws.recv()
                seen_at = time.time()
                msg = loads(raw)
            except websocket.WebSocketTimeoutException:
                continue
            except Exception as exc:  # noqa: BLE001 - a closed or broken session: reconnect, as a client must
                if done.is_set():
                    return
                print(f"reflex: feed session ended ({type(exc).__name__}: {exc}); reconnecting", file=sys.stderr)
                try:
                    ws.close()
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(0.2)
                ws = connect()
                continue
            if msg.get("type") != "market_data":
                continue
            if msg["symbol"] == TARGET[0] and len(target_frames) < 100_000:
                target_frames.append(seen_at)  # the service's trials' ticks reach this client too
            held = by_key.get((msg["symbol"], msg["exchange"]))
            if not held:
                continue
            ltp = msg["data"]["ltp"]
            fire = []
            with lock:
                for pid, p in list(held.items()):
                    if (ltp - p[0]) * p[1] <= -p[2]:
                        del held[pid]
                        fire.append(pid)
                    elif not p[3]:
                        p[3] = True
                        say(f"seen {pid}")
            for pid in fire:
                body = json.dumps({"apikey": apikey, "strategy": "reflex", "symbol": msg["symbol"],
                                   "exchange": msg["exchange"], "action": "SELL", "quantity": 1,
                                   "pricetype": "MARKET", "product": "MIS"})
                conn.request("POST", "/api/v1/placeorder", body, headers)
                written_at = time.time()
                resp = conn.getresponse()
                resp.read()
                say(f"sent {pid} {resp.status} {seen_at * 1000.0:.3f} {written_at * 1000.0:.3f}")

    threading.Thread(target=feed, name="reflex-feed", daemon=True).start()
    say("ready")
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            done.set()
            say("frames " + json.dumps(target_frames))
            break
        with lock:
            if parts[0] == "hold":
                pid, sym, ex, entry, qty, max_loss = parts[1:7]
                by_key.setdefault((sym, ex), {})[pid] = [float(entry), int(qty), float(max_loss), False]
            elif parts[0] == "drop":
                for held in by_key.values():
                    held.pop(parts[1], None)
    ws.close()
    return 0


class Reflex:
    """The parent's handle on the reflex child process."""

    def __init__(self, sim, name: str, key: str, symbols: list[tuple[str, str]]):
        self.sim, self.name = sim, name
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--reflex-child", sim.ws_url, sim.rest_url, key, json.dumps(symbols)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("ready", 30)
        self.lat: list[float] = []
        self.lat_post: list[float] = []
        self.lat_frame: list[float] = []  # sim tick -> the breaching frame returned by ws.recv
        self.lat_wire: list[float] = []  # the request written -> the simulator's received_at
        self.target_frames: list[float] = []

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"the reflex client did not say '{prefix}' within {timeout:g} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line

    def trial(self, i: int, ltp: float) -> float:
        pid = f"t{i}"
        entry = round(ltp + 1.0, 2)
        self.send(f"hold {pid} {TARGET[0]} {TARGET[1]} {entry} 1 {0.05 * entry}")
        self.expect(f"seen {pid}", 10)
        # the same random moment as the service's trials (bench_exit_latency.ServiceBench.trial): a fixed pause
        # after the 'seen' tick put every breach at one phase of the simulator's tick slices
        time.sleep(0.1 + random.Random(10_000 + i).random())
        t_post = time.time()
        t0 = self.sim.price_change(*TARGET, round(entry * 0.9, 1))["applied_at_ms"]
        seen_at, written_at = map(float, self.expect(f"sent {pid}", 10).split()[3:5])
        got = [o for o in self.sim.orders() if o.get("account") == self.name and o.get("symbol") == TARGET[0]
               and o.get("action") == "SELL" and o.get("received_at_ms", 0) >= t_post * 1000.0]
        if not got:
            raise RuntimeError("the simulator's order log has no received_at_ms for the reflex order")
        t1 = min(o["received_at_ms"] for o in got)
        self.lat.append(t1 - t0)
        self.lat_frame.append(seen_at - t0)
        self.lat_wire.append(t1 - written_at)
        self.lat_post.append(t1 - t_post * 1000.0)
        self.sim.set_price(*TARGET, entry)
        time.sleep(0.05)
        return self.lat[-1]

    def close(self) -> None:
        try:
            self.send("quit")
            self.target_frames = json.loads(self.expect("frames ", 10)[len("frames "):])
            self.proc.wait(5)
        except Exception:  # noqa: BLE001
            self.proc.kill()


# ---- the parent ------------------------------------------------------------------------------------------------
def four(xs: list[float]) -> dict:
    return dict(n=len(xs), median=pct(xs, 50), p90=pct(xs, 90), p99=pct(xs, 99), max=max(xs))


def line(label: str, xs: list[float]) -> str:
    q = four(xs)
    return (f"{label}: n={q['n']} median {q['median']:.2f} ms, p90 {q['p90']:.2f} ms, p99 {q['p99']:.2f} ms, "
            f"max {q['max']:.2f} ms")


TRACE_ORDER = ["recv", "parsed", "risk_tick", "evaluate", "acct_tick", "decided", "lock", "gate", "write_fn",
               "begun", "halt_rows", "exit_rows", "claimed", "commit", "committed", "post", "http", "written", "pool",
               "answered"]


def trace_report(path: Path, t0s: list[float], lat: list[float]) -> dict:
    """Match each service trial (its t0) with the trace line of the breach that followed it; print the medians
    and p90s of each step (ms since the previous stamp), from the simulator's tick to the simulator's receipt."""
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    matched = []
    for t0, ms in zip(t0s, lat, strict=True):
        cand = [r for r in rows if t0 - 0.001 <= r["wall"] <= t0 + ms / 1000.0]
        if cand:
            r = min(cand, key=lambda r: r["wall"])
            matched.append((t0, ms, r))
    if not matched:
        print("trace: no trace lines matched the trials")
        return {}
    first_step = "sim tick -> frame in the service (sim send, socket, recv, GIL)"
    steps: dict[str, list[float]] = {first_step: []}
    for t0, _ms, r in matched:
        s = r["stamps"]
        steps[first_step].append(r["wall"] * 1000 - t0 * 1000)
        names = [n for n in TRACE_ORDER if n in s]
        for x, y in zip(names, names[1:], strict=False):
            steps.setdefault(f"{x} -> {y}", []).append(s[y] - s[x])
    tail = "post -> sim received_at (HTTP request, sim parse + validation)"
    steps[tail] = [t0 * 1000 + ms - (r["wall"] * 1000 + r["stamps"]["post"]) for t0, ms, r in matched
                   if "post" in r["stamps"]]
    wire = "written -> sim received_at (loopback, sim read + parse + validation)"
    steps[wire] = [t0 * 1000 + ms - (r["wall"] * 1000 + r["stamps"]["written"]) for t0, ms, r in matched
                   if "written" in r["stamps"]]
    rank = {f"{x} -> {y}": TRACE_ORDER.index(y) for x in TRACE_ORDER for y in TRACE_ORDER}
    print(f"where the service's time goes ({len(matched)} of {len(lat)} trials traced; ms per step, "
          "median / p90 / max):")
    out = {}
    for k in sorted(steps, key=lambda k: -1 if k == first_step else 99 if k == tail else 100 if k == wire else rank[k]):
        q = four(steps[k])
        out[k] = q
        print(f"  {k:<66} {q['median']:7.3f} / {q['p90']:7.3f} / {q['max']:7.3f}  (n={q['n']})")
    waited = [(t0, r) for t0, _, r in matched if r.get("sys")]
    if waited:
        # the feed thread's first kernel read after its previous frame: entered before the tick = it was idle,
        # waiting for this frame; its return is when the kernel handed the bytes over (then the GIL, then parsing)
        idle = [(t0, r) for t0, r in waited if r["wall"] * 1000 + r["sys"][0] <= t0 * 1000]
        print(f"  feed thread already waiting in recv when the tick was applied: {len(idle)} of {len(waited)}")
        if idle:
            print(line("    those: sim tick -> kernel recv returned",
                       [r["wall"] * 1000 + r["sys"][1] - t0 * 1000 for t0, r in idle]))
            print(line("    those: kernel recv returned -> frame handled (GIL, websocket-client)",
                       [-r["sys"][1] for _, r in idle]))
            stamped = [(t0, r) for t0, r in idle if len(r["sys"]) > 2]
            if stamped:
                print(line("    those: sim tick -> the kernel received the bytes (sim send, loopback)",
                           [r["wall"] * 1000 + r["sys"][2] - t0 * 1000 for t0, r in stamped]))
                print(line("    those: the kernel received the bytes -> recv returned (wake-up, GIL)",
                           [r["sys"][1] - r["sys"][2] for _, r in stamped]))
    backlog = sum(1 for _, _, r in matched if r.get("backlog"))
    print(f"  breaching frames read as part of a backlog: {backlog} of {len(matched)}")
    first = [(r["wall"] * 1000 - t0 * 1000) + r["stamps"].get("committed", 0) for t0, _, r in matched]
    print(line("  tick -> exit committed (the first part)", first))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=60, help="trials per side")
    ap.add_argument("--tick-hz", type=float, default=20.0)
    ap.add_argument("--positions", type=int, default=50)
    ap.add_argument("--trace", action="store_true", help="run the service traced (bench/_traced_service.py)")
    ap.add_argument("--limit-only", action="store_true", help="the reflex client alone, no service")
    ap.add_argument("--reflex-child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.reflex_child:
        ws_url, rest_url, key, syms = a.reflex_child
        return reflex_child(ws_url, rest_url, key, json.loads(syms))

    from bench_exit_latency import ServiceBench  # noqa: E402 - the service side, measured as there
    from simulator.testing import SimProcess

    db = temp_db("limit")
    trace_file = db.path.with_name("trace.jsonl")
    cmd = [sys.executable, str(Path(__file__).with_name("_traced_service.py"))] if a.trace else None
    env = {"BENCH_TRACE_SYMBOL": TARGET[0], "BENCH_TRACE_FILE": str(trace_file)} if a.trace else None
    with SimProcess(seed=3, tick_hz=a.tick_hz) as sim:
        b = ServiceBench(sim, db, a.positions, service_cmd=cmd, service_env=env)
        opts = b_syms(b)
        rname = "reflex"
        rkey = sim.create_account(rname)
        reflex = Reflex(sim, rname, rkey, [*([o, "NFO"] for o in opts), list(TARGET), *map(list, WATCHLIST)])
        try:
            for n, sym in enumerate(opts):
                reflex.send(f"hold bg{n} {sym} NFO 100.0 65 1e12")
            if a.limit_only:
                time.sleep(2.0)
                for i in range(a.trials):
                    reflex.trial(i, b.ltp())
                ticks_s = 0.0
            else:
                with b.service():
                    ticks_s = b.wait_flowing()
                    for i in range(a.trials):
                        b.trial(i)
                        reflex.trial(i, b.ltp())
        finally:
            reflex.close()
    print(f"simulator sending {ticks_s:.0f} ticks/s in all, about {ticks_s / 2:.0f} to each of the service and "
          f"the reflex client ({a.positions} positions + watchlist each, tick-hz {a.tick_hz:g})")
    res = dict(trials=a.trials, ticks_per_s=ticks_s, traced=a.trace)
    lim = four(reflex.lat)
    print(line("limit   (reflex client: frame -> decide -> POST)", reflex.lat))
    print(line("  limit from before the bench's control POST", reflex.lat_post))
    print(line("  limit: sim tick -> frame returned by its recv", reflex.lat_frame))
    print(line("  limit: request written -> sim received_at", reflex.lat_wire))
    res.update({f"limit_{k}": v for k, v in lim.items() if k != "n"})
    if not a.limit_only:
        svc = four(b.lat)
        print(line("service (python -m services, default settings)  ", b.lat))
        print(line("  service from before the bench's control POST", b.lat_post))
        ratio = {k: svc[k] / lim[k] for k in ("median", "p90", "p99", "max")}
        print("ratio service / limit: " + ", ".join(f"{k} {v:.2f}" for k, v in ratio.items()))
        ok_med, ok_p99 = ratio["median"] <= 1.5, ratio["p99"] <= 2.0
        print(f"targets: median ratio <= 1.5 {'met' if ok_med else 'MISSED'}; "
              f"p99 ratio <= 2.0 {'met' if ok_p99 else 'MISSED'}")
        b.report()
        res.update({f"service_{k}": v for k, v in svc.items() if k != "n"})
        res.update({f"ratio_{k}": v for k, v in ratio.items()})
        same = [next((f * 1000.0 - t0 * 1000.0 for f in reflex.target_frames if f >= t0), None) for t0 in b.t0s]
        same = [x for x in same if x is not None]
        if same:  # the fan-out order of one tick: both clients are subscribed to the target throughout
            print(line("  the service's trial ticks, sim tick -> the reflex client's recv of the same frame", same))
        if a.trace:
            tr = trace_report(trace_file, b.t0s, b.lat)
            res["trace_medians"] = {k: round(v["median"], 3) for k, v in tr.items()}
    result("limit", **res)
    return 0


def b_syms(b) -> list[str]:
    """The 49 option symbols the service bench holds (read back from its background runs)."""
    from sqlalchemy import select

    from db.models import Execution
    with b.db.read() as s:
        return list(dict.fromkeys(s.scalars(select(Execution.symbol).order_by(Execution.id))))


if __name__ == "__main__":
    main_guard(main)
