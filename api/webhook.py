"""POST /webhook/<token>: a TradingView / Chartink alert, carried out by the rule the token belongs to
(db/webhooks.py). The token stands in for the API key (alert senders cannot set headers); a wrong one counts
against the auth tier like a wrong key. The token never reaches the log (api.app masks the path; the logged body
has it blanked)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.guard import ApiContext, ApiError
from db import repo
from db.vocab import AlertOutcome
from db.webhooks import receive, rule_for_token

MAX_BODY = 64 * 1024


def router(ctx: ApiContext) -> APIRouter:
    r = APIRouter(tags=["webhooks"])
    db, api = ctx.db, ctx.settings.api

    def handle(token: str, raw: bytes, content_type: str, client: str) -> JSONResponse:
        rule = rule_for_token(db, token)
        if rule is None:
            ctx.limiter.hit("auth", client)
            raise ApiError(401, "Unknown or revoked webhook token")
        ctx.limiter.hit("api", f"rule:{rule.id}")
        entries_ok = repo.service_state(db, ctx.settings.ui.service_stale_s)["orders_ok"]
        res = receive(db, rule, raw, content_type, dedupe_s=api.webhook_dedupe_s, entries_ok=entries_ok,
                      guards=ctx.settings.orders, secret=token, market=ctx.settings.market)
        data = {"alert_id": res.alert_id, "outcome": res.outcome, "message": res.message, **res.data}
        if res.outcome == AlertOutcome.ERROR:
            return JSONResponse({"status": "error", "message": res.message, "alert_id": res.alert_id}, 400)
        return JSONResponse({"status": "success", "data": data})

    @r.post("/webhook/{token}", summary="Receive an alert (JSON, form or text body) for the token's rule")
    async def webhook(token: str, request: Request):
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise ApiError(413, f"Alert body larger than {MAX_BODY // 1024} KiB")
        client = request.client.host if request.client else "?"
        return await run_in_threadpool(handle, token, raw, request.headers.get("content-type", ""), client)

    return r
