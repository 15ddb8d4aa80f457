"""Read endpoints: the same reads the pages show (db.repo), as JSON. Accounts never carry keys."""
from __future__ import annotations

import json

import pandas as pd
from fastapi import APIRouter, Depends, Query, Request

from api.guard import ApiContext, ApiError
from db import repo

ACCOUNT_FIELDS = ["id", "name", "broker", "is_primary", "backup_order", "is_active", "status", "status_message",
                  "trading_state", "trading_reason", "daily_max_loss", "daily_max_profit"]


def records(df: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: NaN -> null, times as ISO 8601 (UTC)."""
    return json.loads(df.to_json(orient="records", date_format="iso")) if len(df) else []


def ok(data) -> dict:
    return {"status": "success", "data": data}


def router(ctx: ApiContext) -> APIRouter:
    def authed(request: Request) -> int:
        return ctx.key_id(request)

    r = APIRouter(prefix="/api/v1", dependencies=[Depends(authed)], tags=["read"])
    db = ctx.db
    acct_q = Query(None, description="one account's rows (default: every account)")

    def known(account_id: int | None) -> int | None:
        if account_id is not None and account_id not in repo.account_names(db):
            raise ApiError(404, f"No account with id {account_id}")
        return account_id

    @r.get("/health", summary="Service health: components, heartbeats, queues")
    def health():
        state = repo.service_state(db, ctx.settings.ui.service_stale_s)
        intents, commands = repo.queue_depths(db)
        beats = repo.heartbeats(db).drop(columns=["details_json"])
        return ok({**state, "components": records(beats), "intents": records(intents),
                   "commands": records(commands)})

    @r.get("/accounts", summary="Accounts (never their keys)")
    def accounts():
        return ok(records(repo.accounts(db)[ACCOUNT_FIELDS]))

    @r.get("/positions", summary="Positions, per account or across accounts")
    def positions(account_id: int | None = acct_q):
        return ok(records(repo.positions(db, known(account_id))))

    @r.get("/holdings", summary="Holdings, per account or across accounts")
    def holdings(account_id: int | None = acct_q):
        return ok(records(repo.holdings(db, known(account_id))))

    @r.get("/orders", summary="Order intents (what AlgoMirror asked for and what became of it)")
    def orders(account_id: int | None = acct_q, limit: int = Query(500, ge=1, le=5000)):
        return ok(records(repo.intents(db, known(account_id), limit)))

    @r.get("/orderbook", summary="The broker's orderbook as last read by the service")
    def orderbook(account_id: int | None = acct_q, limit: int = Query(1000, ge=1, le=5000)):
        return ok(records(repo.broker_orders(db, known(account_id), limit)))

    @r.get("/trades", summary="Trades, per account or across accounts")
    def trades(account_id: int | None = acct_q, limit: int = Query(1000, ge=1, le=5000)):
        return ok(records(repo.trades(db, known(account_id), limit)))

    @r.get("/funds", summary="Funds, per account or across accounts")
    def funds(account_id: int | None = acct_q):
        return ok(records(repo.funds(db, known(account_id))))

    @r.get("/strategies", summary="Saved strategies")
    def strategies():
        return ok(records(repo.strategies(db)))

    @r.get("/runs", summary="Strategy runs and their P&L")
    def runs(active_only: bool = False, limit: int = Query(200, ge=1, le=2000)):
        return ok(records(repo.runs(db, active_only, limit)))

    @r.get("/runs/{run_id}", summary="One run with its order intents")
    def run(run_id: int):
        row = repo.runs(db, run_id=run_id)
        if row.empty:
            raise ApiError(404, f"No run with id {run_id}")
        return ok({**records(row)[0], "intents": records(repo.run_intents(db, [run_id]))})

    @r.get("/risk-events", summary="Risk events (exits, limits, flattens, state changes)")
    def risk_events(run_id: int | None = None, limit: int = Query(200, ge=1, le=2000)):
        return ok(records(repo.risk_events(db, run_id, limit)))

    return r
