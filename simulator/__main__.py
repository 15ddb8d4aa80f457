"""CLI: python -m simulator --host 127.0.0.1 --port 5000 --ws-port 8765 --seed N"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import logging
import signal

from aiohttp import web

from . import timeutil
from .control import loopback_only, setup_control
from .engine import Config, Sim
from .guards import mask
from .rest import notfound_mw, setup_rest
from .ws import setup_ws

log = logging.getLogger("simulator")


def parse_args(argv=None) -> Config:
    p = argparse.ArgumentParser(prog="python -m simulator", description="OpenAlgo-protocol paper market")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--ws-port", type=int, default=8765)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tick-hz", type=float, default=4.0, help="random-walk updates per second")
    p.add_argument("--order-rate", type=int, default=10, help="order endpoints: requests/s per key")
    p.add_argument("--api-rate", type=int, default=50, help="other endpoints: requests/s per key")
    p.add_argument("--mis-gate", action="store_true", help="enforce the MIS square-off time gate (15:15-09:00 IST)")
    p.add_argument("--clock-offset-s", type=float, default=0.0,
                   help="market clock = real clock + this many seconds (also /_sim/clock)")
    p.add_argument("--ws-auth-timeout", type=float, default=15.0)
    p.add_argument("--ws-queue", type=int, default=2000, help="per-client outbound queue bound")
    p.add_argument("--accounts-file", default=None, help='JSON [{"name","apikey","capital"}]')
    p.add_argument("--frozen", action="store_true", help="start with the random walk frozen")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = Config(host=a.host, port=a.port, ws_port=a.ws_port, seed=a.seed, tick_hz=a.tick_hz,
                 order_rate=a.order_rate, api_rate=a.api_rate, mis_gate=a.mis_gate,
                 ws_auth_timeout=a.ws_auth_timeout, ws_queue=a.ws_queue, accounts_file=a.accounts_file)
    cfg.frozen = a.frozen
    timeutil.set_offset(dt.timedelta(seconds=a.clock_offset_s))  # before Sim(): the session and master use it
    return cfg


def load_accounts(sim: Sim, path: str) -> None:
    with open(path, encoding="utf-8") as fh:
        for row in json.load(fh):
            acct = sim.broker.add_account(row["name"], row.get("capital"), row.get("apikey"))
            log.info("account %s loaded (key %s)", acct.name, mask(acct.apikey))


def build_apps(sim: Sim) -> tuple[web.Application, web.Application]:
    rest = web.Application(middlewares=[loopback_only, notfound_mw], client_max_size=8 * 1024 * 1024)
    setup_rest(rest, sim)
    setup_control(rest, sim)
    wsapp = web.Application()
    setup_ws(wsapp, sim)
    return rest, wsapp


async def serve(cfg: Config) -> None:
    sim = Sim(cfg)
    sim.market.frozen = getattr(cfg, "frozen", False)
    if cfg.accounts_file:
        load_accounts(sim, cfg.accounts_file)
    rest, wsapp = build_apps(sim)
    runners = []
    for app, port in ((rest, cfg.port), (wsapp, cfg.ws_port)):
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, cfg.host, port, backlog=1024).start()
        runners.append(runner)
    sim.start()
    # Latency: the symbol master, option chains and history built at start-up are long-lived; out of the
    # collector's reach, a full collection does not walk them (that walk holds the event loop 7-11 ms).
    gc.collect()
    gc.freeze()
    log.info("simulator ready: rest http://%s:%d ws ws://%s:%d seed=%d instruments=%d",
             cfg.host, cfg.port, cfg.host, cfg.ws_port, cfg.seed, len(sim.market.master.items))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # pragma: no cover
            pass
    await stop.wait()
    await sim.stop()
    if sim.hub:
        await sim.hub.drop_all()
    for r in runners:
        await r.cleanup()


def main(argv=None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
