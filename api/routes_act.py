"""Acting endpoints. Each writes command rows with the pages' own db functions (one validation code path), once
per idempotency key (db.api_calls.once). Entries (execute, quick order) are refused 503 while the service is down,
as the pages disable them; exits, cancels and flattens are queued for it, as the pages do."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.guard import ApiContext, ApiError
from db import repo
from db.api_calls import derived_key, once
from db.commands import OrderRequest, enqueue_control_in, enqueue_order_in
from db.strategies import execute_in, strategy_ref

IDEM_DOC = "The call's idempotency key (or the Idempotency-Key header): 1-64 of A-Z a-z 0-9 _ - . :"


def _f(default, description: str, typ: dict | str, **kw):
    """A body field documented with its type but validated by the pages' code, not by the schema: a wrong value
    gets the same message the form would show."""
    schema = typ if isinstance(typ, dict) else {"type": typ}
    return Field(default, description=description, json_schema_extra=schema, **kw)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    idempotency_key: Any = _f(None, IDEM_DOC, "string")


class ExecuteBody(Body):
    strategy: Any = _f(..., "the saved strategy's id or exact name", {"type": ["integer", "string"]},
                       examples=["NIFTY straddle"])
    account_ids: Any = _f(..., "accounts to execute it on (one run each)", {"type": "array", "items":
                          {"type": "integer"}}, examples=[[1, 2, 3]])
    multipliers: Any = _f(None, "lots multiplier per account id (whole number 1-50; default 1): that account trades "
                          "each leg's lots times it", {"type": "object", "additionalProperties": {"type": "integer"}},
                          examples=[{"1": 1, "2": 2, "3": 3}])


class OrderBody(Body):
    account_id: Any = _f(..., "account id", "integer")
    symbol: Any = _f(..., "OpenAlgo symbol, e.g. NIFTY30DEC2526000CE", "string")
    exchange: Any = _f(..., "NSE, BSE, NFO, BFO, CDS, BCD, MCX or NCDEX", "string")
    action: Any = _f(..., "BUY or SELL", "string")
    quantity: Any = _f(..., "units (a multiple of the lot size)", "integer")
    pricetype: Any = _f("MARKET", "MARKET, LIMIT, SL or SL-M", "string")
    product: Any = _f("MIS", "MIS, CNC or NRML", "string")
    price: Any = _f(0.0, "limit price (LIMIT / SL)", "number")
    trigger_price: Any = _f(0.0, "trigger price (SL / SL-M)", "number")
    strategy_tag: Any = _f("AlgoMirror", "strategy tag sent to the broker", "string")
    confirm: Any = _f(False, "true: place an order the fat-finger guards want confirmed", "boolean")


def router(ctx: ApiContext) -> APIRouter:
    def authed(request: Request) -> int:
        return ctx.key_id(request)

    def heavy(key_id: int = Depends(authed)) -> int:
        ctx.limiter.hit("heavy", f"key:{key_id}")
        return key_id

    r = APIRouter(prefix="/api/v1", tags=["act"])
    db = ctx.db

    def run(request: Request, key_id: int, header_key: str | None, body: Body | None,
            action: Callable[[object, Callable[..., str]], dict], entry: bool = False) -> JSONResponse:
        idem = header_key or (body.idempotency_key if body is not None else None)
        payload = body.model_dump(exclude={"idempotency_key"}) if body is not None else {}
        entries_ok = repo.service_state(db, ctx.settings.ui.service_stale_s)["orders_ok"] if entry else True

        def act(s) -> dict:
            if not entries_ok:
                raise ApiError(503, "The background service is down: order entry is disabled (nothing was written)")
            return action(s, lambda *parts: derived_key(key_id, idem, *parts))

        answer = once(db, key_id, idem, f"{request.method} {request.url.path}", payload, act)
        return JSONResponse(answer.body, answer.status_code,
                            headers={"Idempotent-Replayed": "true" if answer.replayed else "false"})

    idem_header = Header(None, alias="Idempotency-Key", description=IDEM_DOC)

    @r.post("/execute", summary="Execute a saved strategy on accounts (one run per account)")
    def execute(request: Request, body: ExecuteBody, key_id: int = Depends(heavy), idem: str | None = idem_header):
        def action(s, key):
            group = key()
            runs = execute_in(s, strategy_ref(s, body.strategy), body.account_ids, group,
                              _account_keyed(body.multipliers), market=ctx.settings.market).run_ids
            return {"group_id": group, "run_ids": runs}
        return run(request, key_id, idem, body, action, entry=True)

    @r.post("/orders", summary="Quick order: one order on one account")
    def order(request: Request, body: OrderBody, key_id: int = Depends(authed), idem: str | None = idem_header):
        def action(s, key):
            req = OrderRequest(account_id=body.account_id, symbol=body.symbol, exchange=body.exchange,
                               action=body.action, quantity=body.quantity, pricetype=body.pricetype,
                               product=body.product, price=body.price, trigger_price=body.trigger_price,
                               strategy_tag=body.strategy_tag)
            cid = key()
            intent_id, created = enqueue_order_in(s, req, cid, source="api", confirmed=body.confirm is True,
                                                  guards=ctx.settings.orders, market=ctx.settings.market)
            return {"intent_id": intent_id, "client_order_id": cid, "created": created}
        return run(request, key_id, idem, body, action, entry=True)

    def control(kind: str, field: str | None, value: int | None):
        def action(s, key):
            return {"command_id": enqueue_control_in(s, kind, {field: value} if field else {})}
        return action

    @r.post("/runs/{run_id}/exit", summary="Exit a strategy run now (its legs at market, reduce-only)")
    def exit_run(request: Request, run_id: int, body: Body | None = None, key_id: int = Depends(authed),
                 idem: str | None = idem_header):
        return run(request, key_id, idem, body, control("exit_run", "run_id", run_id))

    @r.post("/intents/{intent_id}/cancel", summary="Cancel an order intent (queued: here; working: at the broker)")
    def cancel(request: Request, intent_id: int, body: Body | None = None, key_id: int = Depends(authed),
               idem: str | None = idem_header):
        return run(request, key_id, idem, body, control("cancel_intent", "intent_id", intent_id))

    @r.post("/accounts/{account_id}/flatten", summary="Flatten one account: cancel, close everything, halt")
    def flatten_account(request: Request, account_id: int, body: Body | None = None, key_id: int = Depends(heavy),
                        idem: str | None = idem_header):
        return run(request, key_id, idem, body, control("flatten_account", "account_id", account_id))

    @r.post("/flatten", summary="Flatten every account")
    def flatten_all(request: Request, body: Body | None = None, key_id: int = Depends(heavy),
                    idem: str | None = idem_header):
        return run(request, key_id, idem, body, control("flatten_all", None, None))

    return r


def _account_keyed(m):
    """JSON object keys are strings: {"2": 3} means account 2. Anything else is passed on for the one validation
    (db.strategies) to refuse with its message."""
    if not isinstance(m, dict):
        return m
    return {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in m.items()}
