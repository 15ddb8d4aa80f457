"""The local API's application: error shapes, the global limit, the access log, and the routers.

Every error is ``{"status": "error", "message": ...}`` (OpenAlgo's shape): 400 bad input (nothing written),
401 no valid key, 404 no such route or row, 409 an idempotency key reused for another request, 413 a body too
large, 429 over a rate limit (with Retry-After), 503 the database could not take the write or the service is down
for an entry. The process never calls a broker: it reads SQLite and writes command rows, like the pages.
"""
from __future__ import annotations

import logging
import re
import time
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import routes_act, routes_read, webhook
from api.guard import ApiContext, ApiError, Limiter, tier_items
from config import Settings
from db import Database
from db.api_calls import IdempotencyConflict
from db.commands import CommandError, NeedsConfirmation
from db.errors import DbError

log = logging.getLogger("api")
TOKEN_IN_PATH = re.compile(r"(/webhook/[0-9A-Za-z]{0,8})[^/?]*")
VERSION = "1.0.0"


def error(status_code: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message, **extra}, status_code=status_code, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
    return "Bad request: " + "; ".join(parts)


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error(exc.status_code, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(IdempotencyConflict)
    async def _conflict(request: Request, exc: IdempotencyConflict):
        return error(409, str(exc))

    @app.exception_handler(NeedsConfirmation)
    async def _confirm(request: Request, exc: NeedsConfirmation):
        return error(400, str(exc) + " (send \"confirm\": true to place it anyway)", problems=exc.problems)

    @app.exception_handler(CommandError)
    async def _command(request: Request, exc: CommandError):
        return error(400, str(exc))

    @app.exception_handler(DbError)
    async def _db(request: Request, exc: DbError):
        return error(503, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


def masked_path(path: str) -> str:
    """The request path for the log: a webhook token cut to the 8 characters the page shows."""
    return TOKEN_IN_PATH.sub(lambda m: m.group(1) + "…", path)


def create_app(settings: Settings, db: Database | None = None) -> FastAPI:
    ctx = ApiContext(settings, db or Database.from_settings(settings), Limiter(tier_items(settings.api)))
    app = FastAPI(title="AlgoMirror local API", version=VERSION, description=DESCRIPTION,
                  docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
    app.state.ctx = ctx
    install_errors(app)

    @app.middleware("http")
    async def global_limit_and_log(request: Request, call_next):
        started = time.perf_counter()
        try:
            ctx.limiter.hit("global", request.client.host if request.client else "?")
            response = await call_next(request)
        except ApiError as exc:
            response = error(exc.status_code, exc.message, exc.headers)
        log.info("%s %s %s %.1f ms", request.method, masked_path(request.url.path), response.status_code,
                 (time.perf_counter() - started) * 1000)
        return response

    app.include_router(routes_read.router(ctx))
    app.include_router(routes_act.router(ctx))
    app.include_router(webhook.router(ctx))
    return app


DESCRIPTION = """
JSON over HTTP on loopback. Every `/api/v1` call needs an API key (created on the **API & Webhooks** page), sent
as the `X-API-KEY` header (or `Authorization: Bearer <key>`). Answers are `{"status": "success", "data": ...}`;
errors `{"status": "error", "message": ...}`.

**Acting calls** (POST) write command rows exactly like the pages do; the background service alone talks to the
broker. Each needs an idempotency key (`Idempotency-Key` header or `idempotency_key` field): the same key again
returns the first answer (header `Idempotent-Replayed: true`) and places nothing new; the same key with a different
request is 409. Input is validated by the same code as the pages: 400 with the message, nothing written.

**Rate limits** (429 with `Retry-After`): global 1000/min per address, failed authentications 10/min per address,
100/min per key, fan-out calls (execute, flatten) 20/min per key.

**Webhooks**: `POST /webhook/<token>` with a TradingView or Chartink alert (JSON or form); the rule the token
belongs to says what it does. Times are UTC.
"""
