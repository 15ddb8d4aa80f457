"""Fixtures and builders for the market-data / positions / risk / option-chain tests.

Import what a test module needs: ``from tests.service.fixtures_md import ctx, md, make_run, tick  # noqa``.
Uses the lead's ``db`` fixture (tests/conftest.py): a real SQLite file per test.
"""
from __future__ import annotations

import json
import time

import pytest

from config import load_settings
from db.accounts import add_account
from sqlalchemy import update

from db.clock import trading_day
from db.models import Account, Execution, Position, Strategy, StrategyRun, utcnow
from services.context import ServiceContext
from services.market_data import MarketDataManager

FAST = {"APP__SERVICE__WS_RECONNECT_BASE_S": "0.1", "APP__SERVICE__WS_RECONNECT_MAX_S": "0.4",
        "APP__SERVICE__HEARTBEAT_S": "0.2", "APP__SERVICE__FLUSH_INTERVAL_S": "0.05",
        "APP__BROKER__READ_RETRIES": "0", "APP__BROKER__CONNECT_TIMEOUT_S": "2"}


def make_ctx(db, **service) -> ServiceContext:
    """A context with fast reconnects; ``service`` overrides e.g. ws_stall_seconds=1."""
    env = dict(FAST, **{f"APP__SERVICE__{k.upper()}": str(v) for k, v in service.items()})
    return ServiceContext(db, load_settings(env))


@pytest.fixture
def ctx(db):
    c = make_ctx(db)
    yield c
    c.close()


@pytest.fixture
def md(ctx):
    m = MarketDataManager(ctx)
    yield m
    m.stop()


def tick(md: MarketDataManager, symbol: str, ltp, exchange: str = "NFO", **data) -> None:
    """Feed one tick through the same entry point the WebSocket thread uses."""
    md.on_message(json.dumps({"type": "market_data", "symbol": symbol, "exchange": exchange, "mode": 1,
                              "data": {"ltp": ltp, **data}}))


def account(db, name: str = "acct1", rest: str = "http://127.0.0.1:1", ws: str = "ws://127.0.0.1:1",
            key: str = "k" * 32, **kw) -> int:
    return add_account(db, name, rest, ws, key, **kw)


def make_run(db, account_id: int, legs: list[dict], *, max_loss=None, max_profit=None, trailing_sl=None,
             status: str = "active", name: str = "straddle") -> tuple[int, list[int]]:
    """A strategy run with executions. Each leg: symbol, action, qty, entry [, exchange, status, exit_price]."""
    with db.write() as s:
        st = s.query(Strategy).filter_by(name=name).one_or_none()
        if st is None:
            st = Strategy(name=name, underlying="NIFTY", exchange="NSE_INDEX", expiry="", product="NRML")
            s.add(st)
            s.flush()
        run = StrategyRun(strategy_id=st.id, account_id=account_id, group_id="g", status=status,
                          max_loss=max_loss, max_profit=max_profit, trailing_sl=trailing_sl)
        s.add(run)
        s.flush()
        ids = []
        for n, leg in enumerate(legs, start=1):
            ex = Execution(run_id=run.id, account_id=account_id, leg_no=leg.get("leg_no", n), symbol=leg["symbol"],
                           exchange=leg.get("exchange", "NFO"), action=leg["action"], quantity=leg["qty"],
                           product="NRML", status=leg.get("status", "entered"), entry_price=leg["entry"],
                           exit_price=leg.get("exit_price"))
            s.add(ex)
            s.flush()
            ids.append(ex.id)
        return run.id, ids


def add_position(db, account_id: int, symbol: str, qty: int, avg: float, exchange: str = "NFO",
                 realized: float = 0.0) -> None:
    """A positionbook row as account sync stores it, with the account's 'positionbook read' time (a book not read
    today is yesterday's, and the daily limits leave it out)."""
    with db.write() as s:
        s.add(Position(account_id=account_id, symbol=symbol, exchange=exchange, product="NRML", quantity=qty,
                       average_price=avg, realized_pnl=realized))
        s.execute(update(Account).where(Account.id == account_id).values(positions_synced_at=utcnow(),
                                                                              positions_day=trading_day().isoformat()))


def wait_for(pred, timeout: float = 5.0, interval: float = 0.02):
    """Poll ``pred`` until it returns a truthy value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {getattr(pred, '__name__', pred)}")
