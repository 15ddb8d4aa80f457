"""Control endpoints under /_sim/ (not OpenAlgo): accounts, prices, faults, partial fills, inspection."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time

from aiohttp import web

from . import timeutil
from .engine import Sim
from .guards import mask

log = logging.getLogger("simulator.control")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def ok(**kw) -> web.Response:
    return web.json_response({"status": "success", **kw})


def bad(msg: str, code: int = 400) -> web.Response:
    return web.json_response({"status": "error", "message": msg}, status=code)


@web.middleware
async def loopback_only(request: web.Request, handler):
    if request.path.startswith("/_sim/") and request.remote not in LOOPBACK:
        return bad("control endpoints are loopback only", 403)
    return await handler(request)


async def body_of(request: web.Request) -> dict:
    try:
        data = json.loads(await request.read() or b"{}")
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"status": "error", "message": "invalid JSON"}),
                                 content_type="application/json") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text=json.dumps({"status": "error", "message": "JSON object expected"}),
                                 content_type="application/json")
    return data


class Control:
    def __init__(self, sim: Sim):
        self.sim = sim

    async def health(self, request):
        return ok(message="ready", seed=self.sim.cfg.seed)

    async def list_accounts(self, request):
        return ok(accounts=list(self.sim.broker.by_name))

    async def create_account(self, request):
        d = await body_of(request)
        name = d.get("name")
        if not isinstance(name, str) or not name:
            return bad("name is required")
        try:
            acct = self.sim.broker.add_account(name, d.get("capital"), d.get("apikey"))
        except ValueError as e:
            return bad(str(e), 409)
        log.info("account %s created (key %s)", name, mask(acct.apikey))
        return ok(name=acct.name, apikey=acct.apikey, capital=acct.capital)

    def _key(self, d: dict):
        ex, sym = d.get("exchange"), d.get("symbol")
        if self.sim.market.get(ex, sym) is None:
            raise web.HTTPNotFound(text=json.dumps({"status": "error", "message": f"Symbol {sym} not found on {ex}"}),
                                   content_type="application/json")
        return (ex, sym)

    async def price(self, request):
        """Force a price: ``{"symbol", "exchange", "ltp"}``. An option or future keeps that price (it is not
        re-priced from its underlying) until released with ``{"symbol", "exchange", "release": true}`` or forced
        again; a spot moves on with the random walk from there."""
        d = await body_of(request)
        key = self._key(d)
        if d.get("release") is True:
            if "ltp" in d:
                return bad("give ltp or release, not both")
            self.sim.release(key)
            return ok(symbol=key[1], exchange=key[0], ltp=self.sim.market.state(key).ltp, held=False)
        ltp = d.get("ltp")
        if isinstance(ltp, bool) or not isinstance(ltp, (int, float)) or not math.isfinite(ltp) or ltp <= 0:
            return bad("ltp (a positive number) is required, or release: true")
        applied_at_ms = time.time() * 1000.0  # the tick is queued to subscribers right after (same clock as
        self.sim.set_price(key, float(ltp))    # the order log's received_at_ms)
        return ok(symbol=key[1], exchange=key[0], ltp=self.sim.market.state(key).ltp, applied_at_ms=applied_at_ms,
                  held=key in self.sim.market.held)

    async def path(self, request):
        d = await body_of(request)
        key = self._key(d)
        prices = d.get("prices")
        if not isinstance(prices, list) or not prices:
            return bad("prices (non-empty list) is required")
        self.sim.start_path(key, [float(p) for p in prices], float(d.get("interval_ms", 250)))
        return ok(symbol=key[1], exchange=key[0], steps=len(prices))

    async def freeze(self, request):
        d = await body_of(request)
        self.sim.freeze(bool(d.get("frozen", True)))
        return ok(frozen=self.sim.market.frozen)

    async def fault(self, request):
        d = await body_of(request)
        kind = d.get("kind")
        if kind == "drop_ws":
            n = await self.sim.hub.drop_all()
            return ok(kind=kind, dropped=n)
        try:
            f = self.sim.faults.add(d)
        except ValueError as e:
            return bad(str(e))
        if kind == "zero_price":
            key = self._key(d)
            self.sim.market.zero_counts[key] = int(d.get("count", 1))
        return ok(kind=kind, fault={k: v for k, v in f.items() if k not in ("until", "apikey")})

    async def partial(self, request):
        """Partial fills for one symbol: ``fill_qty`` N or ``fill_ratio`` r now, the rest after ``rest_after_s``
        seconds or never (null); ``count`` orders (null = every order until cleared by /_sim/fault/clear)."""
        d = await body_of(request)
        key = self._key(d)
        try:
            rule = self.sim.broker.set_partial(key, d)
        except ValueError as e:
            return bad(str(e))
        return ok(symbol=key[1], exchange=key[0], partial=rule)

    async def clear(self, request):
        self.sim.faults.clear()
        self.sim.market.zero_counts.clear()
        self.sim.broker.partials.clear()
        return ok(message="faults cleared")

    async def list_faults(self, request):
        return ok(faults=self.sim.faults.describe())

    async def orders(self, request):
        return ok(orders=self.sim.broker.log_rows())

    async def stats(self, request):
        hub = self.sim.hub
        return ok(**self.sim.stats.snapshot(), ws_clients=len(hub.clients) if hub else 0,
                  ws_authenticated=sum(1 for c in hub.clients if c.account) if hub else 0,
                  ws_subscribed_symbols=len(hub.subscribed) if hub else 0,
                  ws_dropped=hub.dropped if hub else 0)

    def _clock(self, **kw) -> web.Response:
        now = timeutil.now_ist()
        return ok(now_ist=timeutil.ist_stamp(now), offset_s=timeutil.offset().total_seconds(),
                  session=str(self.sim.broker.session), **kw)

    async def get_clock(self, request):
        return self._clock()

    async def set_clock(self, request):
        """Move the market clock: ``{"ist": "YYYY-MM-DD HH:MM[:SS]"}`` (the clock reads that instant now and runs
        on in real time), ``{"offset_s": N}`` (real clock + N seconds) or ``{"real": true}``. Everything
        time-of-day follows at once: the MIS gate, timestamps, order ids, the session (a clock moved into a new
        session rolls the positionbook, as 03:00 IST does)."""
        d = await body_of(request)
        try:
            delta = clock_delta(d)
        except ValueError as e:
            return bad(str(e))
        timeutil.set_offset(delta)
        rolled = self.sim.broker.roll_session()
        log.info("clock set to %s IST (offset %+.0fs)", timeutil.ist_stamp(), delta.total_seconds())
        return self._clock(rolled=rolled)

    async def reset(self, request):
        self.sim.reset()
        return ok(message="orders, positions and trades cleared, held prices released")


def clock_delta(d: dict) -> dt.timedelta:
    """The clock offset a /_sim/clock body asks for (ValueError with the reason for a bad one)."""
    if d.get("real") is True and len(d) == 1:
        return dt.timedelta(0)
    if set(d) == {"offset_s"}:
        v = d["offset_s"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > 3.2e8:
            raise ValueError("offset_s must be a finite number of seconds (at most ten years)")
        return dt.timedelta(seconds=float(v))
    if set(d) == {"ist"} and isinstance(d["ist"], str):
        for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
            try:
                when = dt.datetime.strptime(d["ist"].strip(), fmt).replace(tzinfo=timeutil.IST)
            except ValueError:
                continue
            return when - dt.datetime.now(timeutil.IST)
    raise ValueError('give one of {"ist": "YYYY-MM-DD HH:MM[:SS]"}, {"offset_s": seconds} or {"real": true}')


def setup_control(app: web.Application, sim: Sim) -> None:
    c = Control(sim)
    r = app.router
    r.add_get("/_sim/health", c.health)
    r.add_get("/_sim/accounts", c.list_accounts)
    r.add_post("/_sim/accounts", c.create_account)
    r.add_post("/_sim/price", c.price)
    r.add_post("/_sim/path", c.path)
    r.add_post("/_sim/freeze", c.freeze)
    r.add_post("/_sim/fault", c.fault)
    r.add_post("/_sim/fault/clear", c.clear)
    r.add_post("/_sim/partial", c.partial)
    r.add_get("/_sim/faults", c.list_faults)
    r.add_get("/_sim/orders", c.orders)
    r.add_get("/_sim/stats", c.stats)
    r.add_post("/_sim/reset", c.reset)
    r.add_get("/_sim/clock", c.get_clock)
    r.add_post("/_sim/clock", c.set_clock)
