"""Benchmark the simulator: WS tick fan-out (ticks/s delivered, latency) and REST requests/s.

    .venv/bin/python bench/bench_simulator.py [--clients 1,10,50] [--symbols 100] [--tick-hz 20]
                                              [--seconds 5] [--rest-seconds 3]

Latency is measured as receive time minus the tick's `data.timestamp` (server epoch ms, same host).
Exits non-zero only if the benchmark fails to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from simulator.testing import SimProcess


def pick_symbols(sim: SimProcess, key: str, n: int) -> list[dict]:
    out = [{"symbol": s, "exchange": "NSE"} for s in ("RELIANCE", "SBIN", "INFY", "HDFCBANK", "TCS")]
    exp = sim.api("expiry", {"apikey": key, "symbol": "NIFTY", "exchange": "NFO",
                             "instrumenttype": "options"}).json()["data"][0].replace("-", "")
    chain = sim.api("optionchain", {"apikey": key, "underlying": "NIFTY", "exchange": "NSE_INDEX",
                                    "expiry_date": exp}).json()["chain"]
    for row in chain:
        for leg in ("ce", "pe"):
            out.append({"symbol": row[leg]["symbol"], "exchange": "NFO"})
    return out[:n]


async def ws_client(url: str, key: str, symbols: list[dict], mode: int, seconds: float, lat: list, stop_at):
    count = 0
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url, max_msg_size=0) as ws:
            await ws.send_json({"action": "authenticate", "api_key": key})
            await ws.receive()
            await ws.send_json({"action": "subscribe", "symbols": symbols, "mode": mode})
            while time.time() < stop_at:
                try:
                    msg = await asyncio.wait_for(ws.receive(), timeout=max(0.05, stop_at - time.time()))
                except TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                if '"market_data"' in msg.data:
                    count += 1
                    if count % 20 == 0:
                        d = json.loads(msg.data)
                        lat.append(time.time() * 1000 - d["data"]["timestamp"])
    return count


async def ws_round(sim: SimProcess, keys: list[str], symbols, mode: int, seconds: float) -> dict:
    lat: list[float] = []
    warm = time.time() + 0.5
    stop_at = warm + seconds
    counts = await asyncio.gather(*(ws_client(sim.ws_url, k, symbols, mode, seconds, lat, stop_at)
                                    for k in keys))
    total = sum(counts)
    lat.sort()
    def p(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    return {"ticks": total, "ticks_per_s": total / (seconds + 0.5),
            "lat_med_ms": statistics.median(lat) if lat else float("nan"), "lat_p99_ms": p(0.99)}


async def rest_round(sim: SimProcess, key: str, seconds: float, conc: int = 16) -> dict:
    n = 0
    errors = 0
    stop_at = time.time() + seconds
    body = {"apikey": key, "symbol": "SBIN", "exchange": "NSE"}

    async def worker(session):
        nonlocal n, errors
        while time.time() < stop_at:
            async with session.post(f"{sim.rest_url}/api/v1/quotes", json=body) as r:
                await r.read()
                n += 1
                errors += r.status != 200

    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=conn) as s:
        await asyncio.gather(*(worker(s) for _ in range(conc)))
    return {"requests": n, "req_per_s": n / seconds, "errors": errors}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="1,10,50")
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--tick-hz", type=float, default=20.0)
    ap.add_argument("--mode", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rest-seconds", type=float, default=3.0)
    a = ap.parse_args()
    args = ["--tick-hz", str(a.tick_hz), "--api-rate", "1000000", "--order-rate", "1000000",
            "--ws-queue", "20000"]
    with SimProcess(seed=42, args=args) as sim:
        key0 = sim.create_account("bench0")
        symbols = pick_symbols(sim, key0, a.symbols)
        print(f"symbols={len(symbols)} tick_hz={a.tick_hz} mode={a.mode} "
              f"(offered per client: {len(symbols) * a.tick_hz:.0f} ticks/s)")
        nkeys = 0
        for n in [int(x) for x in a.clients.split(",")]:
            keys = [sim.create_account(f"b{nkeys + i}") for i in range(n)]
            nkeys += n
            r = asyncio.run(ws_round(sim, keys, symbols, a.mode, a.seconds))
            print(f"WS  clients={n:3d}  delivered={r['ticks_per_s']:10.0f} ticks/s  "
                  f"latency median={r['lat_med_ms']:.1f} ms p99={r['lat_p99_ms']:.1f} ms")
        r = asyncio.run(rest_round(sim, key0, a.rest_seconds))
        print(f"REST /quotes concurrency=16  {r['req_per_s']:.0f} req/s  (errors={r['errors']})")
        st = sim.stats()
        print(f"server: ticks_sent={st['ticks_sent']} dropped(slow-client queue)={st['ws_dropped']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # pragma: no cover
        print(f"benchmark failed: {e!r}", file=sys.stderr)
        sys.exit(1)
