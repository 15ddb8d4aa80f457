"""Fixtures and builders for the dispatcher / reconciler / poller / runner tests.

Import what a test module needs: ``from tests.service.fixtures_orders import order_sim, octx, ...  # noqa``.
Real SQLite file per test (the lead's ``db`` fixture), real simulator process, real httpx client.
"""
from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import select

from config import load_settings
from db.accounts import add_account
from db.models import Execution, OrderEvent, OrderIntent, Strategy, StrategyRun
from services.context import ServiceContext
from simulator.testing import SimProcess
from tests.builders import fresh_row
from tests.harness import queue_runs, wait_for  # noqa: F401 (re-exported)

FAST = {
    "APP__SERVICE__DISPATCH_POLL_S": "0.01", "APP__SERVICE__RECONCILE_MAX_CHECKS": "3",
    "APP__SERVICE__RECONCILE_INTERVAL_S": "0.1", "APP__SERVICE__HEARTBEAT_S": "0.2",
    "APP__BROKER__BACKOFF_BASE_S": "0.05", "APP__BROKER__BACKOFF_MAX_S": "0.5",
    "APP__BROKER__READ_TIMEOUT_S": "1.0", "APP__BROKER__CONNECT_TIMEOUT_S": "1.0",
    "APP__BROKER__READ_RETRIES": "1",
}


def fast_settings(**over):
    env = dict(FAST)
    for k, v in over.items():
        section, key = k.split("__", 1)
        env[f"APP__{section.upper()}__{key.upper()}"] = str(v)
    return load_settings(env)


@pytest.fixture(scope="module")
def order_sim():
    with SimProcess(seed=11) as sim:
        yield sim


@pytest.fixture
def octx(db, order_sim):
    order_sim.clear_faults()
    ctx = ServiceContext(db, fast_settings())
    yield ctx
    ctx.close()
    order_sim.clear_faults()


def sim_account(db, sim, prefix: str = "acct", **kw) -> tuple[int, str]:
    """A fresh simulator account registered in our DB. Returns (account_id, name)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    key = sim.create_account(name)
    return add_account(db, name, sim.rest_url, sim.ws_url, key, **kw), name


def add_intent(db, account_id: int, symbol: str = "SBIN", exchange: str = "NSE", action: str = "BUY",
               qty: int = 1, product: str = "MIS", pricetype: str = "MARKET", price: float = 0.0,
               tag: str = "AlgoMirror", priority: int = 100, **fields) -> int:
    with db.write() as s:
        i = OrderIntent(client_order_id=fields.pop("client_order_id", uuid.uuid4().hex), account_id=account_id,
                        symbol=symbol, exchange=exchange, action=action, requested_qty=qty, product=product,
                        pricetype=pricetype, limit_price=price, strategy_tag=tag, priority=priority, **fields)
        s.add(i)
        s.flush()
        return i.id


def make_strategy_run(db, account_id: int, legs: list[dict], name: str | None = None) -> tuple[int, list[int]]:
    """A run in 'entering' with one queued entry intent per leg (see tests.harness.queue_runs)."""
    return queue_runs(db, [account_id], legs, name or f"strat-{uuid.uuid4().hex[:6]}")[0]


def intent(db, intent_id: int) -> OrderIntent:
    return fresh_row(db, OrderIntent, intent_id)


def events(db, intent_id: int) -> list[tuple[str, str, str]]:
    with db.read() as s:
        return [(e.from_status, e.to_status, e.source) for e in s.scalars(
            select(OrderEvent).where(OrderEvent.intent_id == intent_id).order_by(OrderEvent.id))]


def placed_at_sim(sim, account_name: str) -> list[dict]:
    """Orders the simulator accepted (has an orderid) for this account, in placement order."""
    return [o for o in sim.orders() if o.get("account") == account_name and o.get("orderid")]

