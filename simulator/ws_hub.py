"""State of the WebSocket feed: the connected clients, their subscriptions, and the fan-out of market ticks and
order updates to them. The aiohttp endpoint is in ``ws``, the client messages in ``ws_proto``."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from .engine import Sim

log = logging.getLogger("simulator.ws")
BROKER = "simulator"
LABELS = {1: "LTP", 2: "Quote", 3: "Depth"}
BY_NAME = {"ltp": 1, "quote": 2, "depth": 3}


def parse_mode(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, int) and v in LABELS:
        return v
    if isinstance(v, str):
        return BY_NAME.get(v.lower())
    return None


def error(code: str, message: str) -> dict:
    return {"status": "error", "code": code, "message": message}


class Client:
    __slots__ = ("account", "hub", "orders", "queue", "subs", "writer", "ws")

    def __init__(self, ws: web.WebSocketResponse, hub: Hub):
        self.ws, self.hub = ws, hub
        self.account = None
        self.subs: dict[tuple[str, str], set[int]] = {}
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=hub.sim.cfg.ws_queue)
        self.orders = False
        self.writer = asyncio.get_running_loop().create_task(self.write_loop())

    def send(self, text: str) -> None:
        """Non-blocking enqueue; a slow client loses its oldest queued messages, never blocks others."""
        q = self.queue
        if q.full():
            try:
                q.get_nowait()
                self.hub.dropped += 1
            except asyncio.QueueEmpty:
                pass
        q.put_nowait(text)

    def send_json(self, obj: dict) -> None:
        self.send(json.dumps(obj))

    async def write_loop(self) -> None:
        ws, q = self.ws, self.queue
        try:
            while True:
                msg = await q.get()
                if ws.closed:
                    return
                await ws.send_str(msg)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return
        except Exception:  # pragma: no cover - defensive
            log.exception("ws writer failed")


class Hub:
    def __init__(self, sim: Sim):
        self.sim = sim
        sim.hub = self
        self.clients: set[Client] = set()
        self.subscribed: dict[tuple[str, str], dict[Client, set[int]]] = {}
        self.dropped = 0
        sim.broker.listeners.append(self.order_event)

    # ----- publishing ----------------------------------------------------
    def _muted(self):
        mutes = [f for f in self.sim.faults.active if f["kind"] == "mute_ws"]
        if not mutes:
            return False, set()
        self.sim.faults._live()
        mutes = [f for f in self.sim.faults.active if f["kind"] == "mute_ws"]
        scoped = {f.get("account") or self._name_of(f.get("apikey")) for f in mutes
                  if f.get("account") or f.get("apikey")}
        return any(not (f.get("account") or f.get("apikey")) for f in mutes), scoped

    def _name_of(self, key):
        acct = self.sim.broker.by_key.get(key)
        return acct.name if acct else None

    def publish(self, keys) -> None:
        mute_all, muted = self._muted()
        if mute_all:
            return
        market, stats = self.sim.market, self.sim.stats
        for key in keys:
            subs = self.subscribed.get(key)
            if not subs:
                continue
            zero = market.take_zero(key)
            cache: dict[int, str] = {}
            stats.ticks_generated += 1
            for client, modes in subs.items():
                if muted and client.account and client.account.name in muted:
                    continue
                for mode in modes:
                    text = cache.get(mode)
                    if text is None:
                        text = cache[mode] = self.envelope(key, mode, zero)
                    client.send(text)
                    stats.ticks_sent += 1

    def envelope(self, key, mode: int, zero: bool = False) -> str:
        data = self.sim.market.tick_data(key, mode, zero)
        return json.dumps({"type": "market_data", "symbol": key[1], "exchange": key[0], "mode": mode,
                           "broker": BROKER, "data": data})

    def order_event(self, o) -> None:
        if not self.clients:
            return
        msg = None
        for c in self.clients:
            if c.orders and c.account and c.account.name == o.account:
                if msg is None:
                    msg = json.dumps(self.order_payload(o))
                c.send(msg)

    @staticmethod
    def order_payload(o) -> dict:
        return {"type": "order_update", "user_id": o.account, "mode": "analyze", "broker": BROKER,
                "orderid": o.orderid, "symbol": o.symbol, "exchange": o.exchange, "action": o.action,
                "quantity": o.quantity, "price": o.price, "trigger_price": o.trigger_price,
                "pricetype": o.pricetype, "product": o.product, "order_status": o.status,
                "filled_quantity": o.filled_quantity, "pending_quantity": o.pending_quantity,
                "average_price": o.average_price, "rejection_reason": o.rejection_reason}

    # ----- subscriptions -------------------------------------------------
    def add_sub(self, c: Client, key, mode: int) -> bool:
        modes = c.subs.setdefault(key, set())
        new = mode not in modes
        modes.add(mode)
        self.subscribed.setdefault(key, {})[c] = modes
        return new

    def remove_sub(self, c: Client, key, mode: int | None) -> bool:
        modes = c.subs.get(key)
        if not modes or (mode is not None and mode not in modes):
            return False
        if mode is None:
            modes.clear()
        else:
            modes.discard(mode)
        if not modes:
            del c.subs[key]
            subs = self.subscribed.get(key, {})
            subs.pop(c, None)
            if not subs:
                self.subscribed.pop(key, None)
        return True

    def drop_client(self, c: Client) -> None:
        for key in list(c.subs):
            self.remove_sub(c, key, None)
        self.clients.discard(c)
        c.writer.cancel()

    async def drop_all(self) -> int:
        clients = list(self.clients)
        await asyncio.gather(*(c.ws.close(code=1001, message=b"server dropped connection")
                               for c in clients), return_exceptions=True)
        return len(clients)
