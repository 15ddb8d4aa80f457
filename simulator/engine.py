"""The simulator core: market + broker + guards + tick loop, shared by REST, WS and control."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .broker import Broker
from .guards import Faults, RateLimiter, Stats
from .market import Market

log = logging.getLogger("simulator")


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 5000
    ws_port: int = 8765
    seed: int = 1
    tick_hz: float = 4.0
    order_rate: int = 10
    api_rate: int = 50
    mis_gate: bool = False
    ws_auth_timeout: float = 15.0
    ws_queue: int = 2000
    accounts_file: str | None = None


class Sim:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.market = Market(cfg.seed)
        self.broker = Broker(self.market, mis_gate=cfg.mis_gate)
        self.limiter = RateLimiter(cfg.order_rate, cfg.api_rate)
        self.faults = Faults()
        self.stats = Stats()
        self.hub = None  # set by ws.Hub
        self.paths: dict[tuple[str, str], asyncio.Task] = {}
        self._ticker: asyncio.Task | None = None

    # ----- price changes -------------------------------------------------
    def prices_changed(self, keys) -> None:
        """After any price change: check resting orders and push ticks to subscribers."""
        keys = list(keys)
        pend = self.broker.pending
        self.broker.on_prices([k for k in keys if k in pend])
        if self.hub is not None:
            subs = self.hub.subscribed
            self.hub.publish([k for k in keys if k in subs])

    def set_price(self, key: tuple[str, str], ltp: float) -> None:
        self.prices_changed(self.market.set_price(key, ltp))

    def release(self, key: tuple[str, str]) -> None:
        old = self.paths.pop(key, None)  # a path still running would hold it again on its next step
        if old:
            old.cancel()
        self.prices_changed(self.market.release(key))

    def freeze(self, frozen: bool) -> None:
        """Stop (or restart) the random walk. On freezing, every subscribed instrument ticks once more: a derivative
        re-prices when its underlying moves but ticks only in its own slice of the period, so without this a
        subscriber could hold, for as long as the freeze lasts, a price the market no longer quotes or fills at."""
        was = self.market.frozen
        self.market.frozen = frozen
        if frozen and not was and self.hub is not None and self.hub.subscribed:
            self.hub.publish(list(self.hub.subscribed))

    async def run_path(self, key: tuple[str, str], prices: list[float], interval_ms: float) -> None:
        try:
            for i, px in enumerate(prices):
                if i:
                    await asyncio.sleep(interval_ms / 1000.0)
                self.set_price(key, float(px))
        finally:
            if self.paths.get(key) is asyncio.current_task():
                del self.paths[key]

    def start_path(self, key, prices, interval_ms) -> None:
        old = self.paths.pop(key, None)
        if old:
            old.cancel()
        self.paths[key] = asyncio.get_running_loop().create_task(self.run_path(key, prices, interval_ms))

    # ----- tick loop -----------------------------------------------------
    # Each instrument moves and ticks once per period (1 / tick_hz), but not all at the same instant: the period
    # is cut into slices and every instrument has its own slice (a stable hash of its key). A real feed streams
    # ticks continuously; one burst of every subscribed symbol per period would make the last tick of the
    # burst wait for all the others (in this process and in every client).
    MAX_SLICE_S = 0.0025

    def period(self) -> float:
        return 1.0 / max(0.01, self.cfg.tick_hz)

    def slices(self) -> int:
        return max(1, min(20, round(self.period() / self.MAX_SLICE_S)))

    async def tick_loop(self) -> None:
        n = self.slices()
        sub = self.period() / n
        loop = asyncio.get_running_loop()
        nxt, i = loop.time(), 0
        while True:
            nxt += sub
            try:
                self.step(i, n)
            except Exception:  # keep ticking whatever happens
                log.exception("tick step failed")
            i = (i + 1) % n
            delay = nxt - loop.time()
            if delay < -1.0:
                nxt = loop.time()
                delay = 0
            await asyncio.sleep(max(0.0, delay))

    def step(self, part: int = 0, parts: int = 1) -> None:
        """Move the spots of slice ``part`` of ``parts`` and push the subscribed instruments of that slice."""
        if self.market.frozen:
            if self.broker.rests_due():  # a partly filled order's remainder is due on time, not on a price move
                self.broker.check_all()
            return
        self.market.step(part, parts)
        if self.broker.pending:
            self.broker.check_all()
        if self.hub is not None and self.hub.subscribed:
            slot = self.market.slot
            self.hub.publish([k for k in self.hub.subscribed if slot(k, parts) == part])

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self.tick_loop())

    async def stop(self) -> None:
        for t in [self._ticker, *self.paths.values()]:
            if t:
                t.cancel()

    def reset(self) -> None:
        for t in self.paths.values():
            t.cancel()
        self.paths.clear()
        self.prices_changed(self.market.release_all())
        self.broker.reset()
        self.limiter.reset()
