"""REST API v1 (aiohttp): request pipeline shared by every /api/v1 endpoint."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging

from aiohttp import web

from . import rest_data, rest_orders, rest_risk  # noqa: F401  (importing them registers their endpoints)
from .broker import PreEncoded, compact_json
from .engine import Sim
from .guards import mask
from .rest_registry import ENDPOINTS
from .schema import validate

log = logging.getLogger("simulator.rest")
UNEXPECTED = {"status": "error", "message": "An unexpected error occurred"}
INVALID_KEY = {"message": "Invalid openalgo apikey", "status": "error"}


def jresp(body, status: int = 200, sort_keys: bool = True) -> web.Response:
    if isinstance(body, PreEncoded):
        text = str(body)
    elif sort_keys:
        text = compact_json(body)
    else:
        text = json.dumps(body, ensure_ascii=False)
    return web.Response(text=text + "\n", status=status, content_type="application/json")


def validation_error(family: str, errors: dict) -> web.Response:
    if family == "A":
        return jresp({"message": repr(errors), "mode": "analyze", "status": "error"}, 400)
    if family in ("C", "G"):  # G: the greeks endpoints say "Validation failed"
        msg = "Validation error" if family == "C" else "Validation failed"
        return jresp({"status": "error", "message": msg, "errors": errors}, 400, False)
    return jresp({"message": errors, "status": "error"}, 400)


async def parse_body(request: web.Request):
    if request.content_type != "application/json":
        return None
    try:
        return json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return None


def make_handler(sim: Sim, name: str):
    schema, family, fn, sort_keys = ENDPOINTS[name]

    async def handler(request: web.Request) -> web.Response:
        body = await parse_body(request)
        apikey = body.get("apikey") if isinstance(body, dict) and isinstance(body.get("apikey"), str) else None
        acct = sim.broker.by_key.get(apikey) if apikey else None
        who = acct.name if acct else "unknown"
        sim.stats.count(who, name)
        limited = sim.limiter.hit(apikey or (request.remote or "?"), name)
        if limited:
            return jresp({"message": limited}, 429)
        early = await apply_faults(sim, name, apikey, acct)
        if early is not None:
            return early
        if not isinstance(body, dict):
            return jresp(UNEXPECTED, 500)
        data, errors = validate(schema, body)
        if errors:
            return validation_error(family, errors)
        if acct is None or sim.faults.key_revoked(apikey, acct.name):
            return jresp(INVALID_KEY, 403)
        sim.broker.roll_session()  # a new session (03:00 IST) starts the day's positionbook afresh
        try:
            res = fn(sim, acct, data)
            if inspect.isawaitable(res):
                res = await res
        except Exception:
            log.exception("endpoint %s failed (account %s, key %s)", name, who, mask(apikey))
            return jresp(UNEXPECTED, 500)
        code, out = res
        return jresp(out, code, sort_keys)

    return handler


async def apply_faults(sim: Sim, name: str, apikey, acct):
    f = sim.faults
    acct_name = acct.name if acct else None
    lat = f.match("latency", name, apikey, acct_name, consume=True)
    if lat:
        await asyncio.sleep(float(lat.get("ms", 0)) / 1000.0)
    if f.match("http_500", name, apikey, acct_name):
        return jresp({"status": "error", "message": "Simulated server error"}, 500)
    if f.match("http_429", name, apikey, acct_name):
        return jresp({"message": f"{sim.limiter.limit_for(name)} per 1 second"}, 429)
    return None


async def not_found(request: web.Request) -> web.Response:
    return jresp({"message": "Not found", "path": request.path, "status": "error"}, 404)


@web.middleware
async def notfound_mw(request, handler):
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return await not_found(request)
    except web.HTTPMethodNotAllowed:
        return await not_found(request)


INSTRUMENT_FIELDS = ("symbol", "brsymbol", "name", "exchange", "brexchange", "token", "expiry", "strike",
                     "lotsize", "instrumenttype", "tick_size")


def make_instruments_handler(sim: Sim):
    """GET /api/v1/instruments?apikey=&exchange=&format=json|csv (query parameters, like OpenAlgo)."""

    async def handler(request: web.Request) -> web.Response:
        apikey = request.query.get("apikey")
        exchange = request.query.get("exchange")
        acct = sim.broker.by_key.get(apikey) if apikey else None
        sim.stats.count(acct.name if acct else "unknown", "instruments")
        limited = sim.limiter.hit(apikey or (request.remote or "?"), "instruments")
        if limited:
            return jresp({"message": limited}, 429)
        errors = {k: ["Field may not be null."] for k, v in (("apikey", apikey), ("exchange", exchange)) if not v}
        if errors:
            return jresp({"message": errors, "status": "error"}, 400)
        if acct is None or sim.faults.key_revoked(apikey, acct.name):
            return jresp(INVALID_KEY, 403)
        rows = [{k: inst.as_dict(with_id=False)[k] for k in INSTRUMENT_FIELDS}
                for inst in sim.market.master.items.values() if inst.exchange == exchange]
        if request.query.get("format") == "csv":
            lines = [",".join(INSTRUMENT_FIELDS)] + [",".join(str(r[k]) for k in INSTRUMENT_FIELDS) for r in rows]
            return web.Response(text="\n".join(lines) + "\n", content_type="text/csv", headers={
                "Content-Disposition": f"attachment; filename=instruments_{exchange}.csv"})
        return jresp({"status": "success", "message": f"Found {len(rows)} instruments", "data": rows})

    return handler


def setup_rest(app: web.Application, sim: Sim) -> None:
    for name in ENDPOINTS:
        h = make_handler(sim, name)
        app.router.add_post(f"/api/v1/{name}", h)
        app.router.add_post(f"/api/v1/{name}/", h)
    ih = make_instruments_handler(sim)
    app.router.add_get("/api/v1/instruments", ih)
    app.router.add_get("/api/v1/instruments/", ih)
