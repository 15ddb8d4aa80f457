"""Multi-day history: day summaries (written by the service), the order journal and the CSV exports (read by the
History and Journal pages). Every statement about ``day_summaries`` and the journal's reads of ``order_events``.

A day summary is one trading day's result, per account and per (account, strategy):

    account row (strategy '')  realised / unrealised: summed over every position the broker reported for the
                               account that day (the Dashboard's figures); trades: the broker's fills that day;
                               wins / losses: positions that made / lost money
    strategy row               over the runs started that day: realised = P&L of the finished runs, unrealised =
                               P&L of the runs still live; trades = runs; wins / losses = finished runs in profit /
                               in loss

A run carried overnight counts on the day it started. Writing a day again replaces its rows (one per day, account
and strategy): the end-of-day job and the History page's "Summarise today" are idempotent. The positions table
holds only the current day's positionbook, so a day can be summarised only while it is today.
"""
from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta

import pandas as pd
from sqlalchemy import delete, func, select, text

from db import Database
from db.broker_orders import parse_ts
from db.clock import IST_OFFSET
from db.models import Account, BrokerTrade, DaySummary, Position, Strategy, StrategyRun, utcnow
from db.order_fsm import values
from db.rawsql import sql_ts
from db.run_fsm import UNFINISHED_RUN


def trading_day_of(moment_ist: datetime) -> date | None:
    """The trading day an IST moment belongs to, or None when the market does not trade that day. Monday to
    Friday; exchange holidays are not known here (the one function to switch to an exchange calendar)."""
    day = moment_ist.date()
    return day if day.weekday() < 5 else None


def day_bounds_utc(day: date) -> tuple[datetime, datetime]:
    """[IST midnight of ``day``, IST midnight of the next day) as naive UTC."""
    start = datetime.combine(day, time()) - IST_OFFSET
    return start, start + timedelta(days=1)


# ---- writing (the service) --------------------------------------------------------------------------------------
def _account_rows(s, day: date) -> dict[int, dict]:
    start, end = day_bounds_utc(day)
    rows: dict[int, dict] = {}
    for acct, qty, realized, unrealized in s.execute(select(Position.account_id, Position.quantity,
                                                            Position.realized_pnl, Position.unrealized_pnl)):
        r = rows.setdefault(acct, dict(realized=0.0, unrealized=0.0, trades=0, wins=0, losses=0))
        open_pnl = (unrealized or 0.0) if qty else 0.0  # a closed position's unrealised is a stale mark
        r["realized"] += realized or 0.0
        r["unrealized"] += open_pnl
        pnl = (realized or 0.0) + open_pnl
        if pnl:
            r["wins" if pnl > 0 else "losses"] += 1
    for acct, raw in s.execute(select(BrokerTrade.account_id, BrokerTrade.broker_timestamp)):
        ts = parse_ts(raw)
        if ts is not None and start <= ts < end:
            rows.setdefault(acct, dict(realized=0.0, unrealized=0.0, trades=0, wins=0, losses=0))["trades"] += 1
    return rows


def _strategy_rows(s, day: date) -> dict[tuple[int, str], dict]:
    start, end = day_bounds_utc(day)
    live = set(values(UNFINISHED_RUN))
    rows: dict[tuple[int, str], dict] = {}
    q = (select(StrategyRun.account_id, Strategy.name, StrategyRun.status, StrategyRun.pnl)
         .join(Strategy, Strategy.id == StrategyRun.strategy_id)
         .where(StrategyRun.started_at >= start, StrategyRun.started_at < end))
    for acct, name, status, pnl in s.execute(q):
        r = rows.setdefault((acct, name), dict(realized=0.0, unrealized=0.0, trades=0, wins=0, losses=0))
        r["trades"] += 1
        if status in live:
            r["unrealized"] += pnl or 0.0
        else:
            r["realized"] += pnl or 0.0
            if pnl:
                r["wins" if pnl > 0 else "losses"] += 1
    return rows


def write_day_summary(s, day: date, closed: bool) -> int:
    """In the caller's write transaction: replace ``day``'s summary rows with what the database holds now.
    Returns the number of rows written (0: nothing traded that day, and any earlier rows of it are kept)."""
    rows = [dict(account_id=a, strategy="", **r) for a, r in _account_rows(s, day).items()]
    rows += [dict(account_id=a, strategy=name[:64], **r) for (a, name), r in _strategy_rows(s, day).items()]
    known = set(s.scalars(select(Account.id)))
    rows = [r for r in rows if r["account_id"] in known]
    if not rows:
        return 0
    s.execute(delete(DaySummary).where(DaySummary.day == day.isoformat()))
    now = utcnow()
    for r in rows:
        s.add(DaySummary(day=day.isoformat(), total=r["realized"] + r["unrealized"], closed=closed, written_at=now,
                         **r))
    return len(rows)


def has_closed_summary(s, day: date) -> bool:
    """Whether ``day`` already has a summary written after its close."""
    return s.scalar(select(func.count()).select_from(DaySummary).where(
        DaySummary.day == day.isoformat(), DaySummary.closed.is_(True))) > 0


# ---- reading (the pages) ----------------------------------------------------------------------------------------
def _df(db: Database, sql: str, params: dict, columns: list[str], times: tuple[str, ...] = ()) -> pd.DataFrame:
    with db.read() as s:
        res = s.execute(text(sql), params)
        rows = [tuple(r) for r in res]
    df = pd.DataFrame(rows, columns=columns)
    for c in times:
        df[c] = pd.to_datetime(df[c], errors="coerce", format="mixed")
    return df


SUMMARY_COLS = ["day", "account", "strategy", "realized", "unrealized", "total", "trades", "wins", "losses",
                "closed", "written_at"]


def day_summaries(db: Database, account_id: int | None = None, since: date | None = None) -> pd.DataFrame:
    """Every day summary row (oldest day first), optionally of one account and from ``since`` on."""
    where, p = "", {}
    if account_id is not None:
        where, p["acct"] = where + " AND d.account_id = :acct", int(account_id)
    if since is not None:
        where, p["since"] = where + " AND d.day >= :since", since.isoformat()
    df = _df(db, "SELECT d.day, a.name, d.strategy, d.realized, d.unrealized, d.total, d.trades, d.wins, d.losses, "
                 "d.closed, d.written_at FROM day_summaries d JOIN accounts a ON a.id = d.account_id WHERE 1=1"
             + where + " ORDER BY d.day, a.name, d.strategy", p, SUMMARY_COLS, ("written_at",))
    df["closed"] = df["closed"].astype(bool)
    return df


ORDER_COLS = ["id", "created_at", "account", "purpose", "source", "run_id", "symbol", "exchange", "action",
              "requested_qty", "pricetype", "product", "limit_price", "trigger_price", "status", "status_reason",
              "broker_order_id", "broker_filled_qty", "broker_avg_price", "client_order_id"]


def orders_between(db: Database, start: date, end: date, account_id: int | None = None) -> pd.DataFrame:
    """Order intents created on the IST days start..end (inclusive), oldest first: the orders CSV."""
    lo, hi = day_bounds_utc(start)[0], day_bounds_utc(end)[1]
    where, p = "", {"lo": sql_ts(lo), "hi": sql_ts(hi)}
    if account_id is not None:
        where, p["acct"] = " AND t.account_id = :acct", int(account_id)
    return _df(db, "SELECT t.id, t.created_at, a.name, t.purpose, t.source, t.run_id, t.symbol, t.exchange, "
                   "t.action, t.requested_qty, t.pricetype, t.product, t.limit_price, t.trigger_price, t.status, "
                   "t.status_reason, t.broker_order_id, t.broker_filled_qty, t.broker_avg_price, t.client_order_id "
                   "FROM order_intents t JOIN accounts a ON a.id = t.account_id "
                   "WHERE t.created_at >= :lo AND t.created_at < :hi" + where + " ORDER BY t.id", p, ORDER_COLS,
               ("created_at",))


TRADE_COLS = ["account", "broker_order_id", "symbol", "exchange", "action", "quantity", "average_price", "product",
              "trade_value", "broker_timestamp"]


def trades_between(db: Database, start: date, end: date, account_id: int | None = None) -> pd.DataFrame:
    """The broker's fills on the IST days start..end (inclusive), by their broker timestamp: the trades CSV.
    A fill whose timestamp cannot be read is listed too (its day is unknown; dropping it would lose a trade)."""
    where, p = "", {}
    if account_id is not None:
        where, p["acct"] = " AND t.account_id = :acct", int(account_id)
    df = _df(db, "SELECT a.name, t.broker_order_id, t.symbol, t.exchange, t.action, t.quantity, t.average_price, "
                 "t.product, t.trade_value, t.broker_timestamp FROM broker_trades t JOIN accounts a "
                 "ON a.id = t.account_id WHERE 1=1" + where + " ORDER BY t.id", p, TRADE_COLS)
    lo, hi = day_bounds_utc(start)[0], day_bounds_utc(end)[1]
    keep = [ts is None or lo <= ts < hi for ts in map(parse_ts, df["broker_timestamp"])]
    return df[keep].reset_index(drop=True)


TIMELINE_COLS = ["ts_utc", "intent_id", "purpose", "symbol", "action", "requested_qty", "from_status", "to_status",
                 "source", "reason", "broker_order_id", "client_order_id"]


def order_timeline(db: Database, run_id: int | None = None, intent_id: int | None = None) -> pd.DataFrame:
    """The order_events audit rows (claimed, sent, placed, filled, ...) of one run's intents or of one intent,
    in the order they happened."""
    if (run_id is None) == (intent_id is None):
        raise ValueError("order_timeline needs exactly one of run_id, intent_id")
    where, p = ("t.run_id = :r", {"r": int(run_id)}) if run_id is not None else ("t.id = :i", {"i": int(intent_id)})
    return _df(db, "SELECT e.ts_utc, e.intent_id, t.purpose, t.symbol, t.action, t.requested_qty, e.from_status, "
                   "e.to_status, e.source, e.reason, t.broker_order_id, t.client_order_id FROM order_events e "
                   f"JOIN order_intents t ON t.id = e.intent_id WHERE {where} ORDER BY e.ts_utc, e.id", p,
               TIMELINE_COLS, ("ts_utc",))


EVENT_COLS = ["id", "ts_utc", "ts_ist", "event_type", "threshold", "value", "action", "exit_order_ids", "message",
              "decided_on"]


def run_risk_events(db: Database, run_id: int) -> list[dict]:
    """The run's risk events, oldest first, each with ``decided_on`` parsed (the legs and the price each was valued
    at when the exit was decided; [] for events written before it was recorded)."""
    df = _df(db, "SELECT id, ts_utc, ts_ist, event_type, threshold, value, action, exit_order_ids, message, "
                 "decided_on FROM risk_events WHERE run_id = :r ORDER BY id", {"r": int(run_id)}, EVENT_COLS,
             ("ts_utc",))
    out = []
    for row in df.to_dict("records"):
        row["decided_on"] = _json_list(row["decided_on"])
        row["exit_order_ids"] = _json_list(row["exit_order_ids"])
        out.append(row)
    return out


def intent_run(db: Database, intent_id: int) -> int | None:
    """The run an intent belongs to (None: a manual order, or no such intent)."""
    with db.read() as s:
        return s.execute(text("SELECT run_id FROM order_intents WHERE id = :i"), {"i": int(intent_id)}).scalar()


def _json_list(raw) -> list:
    try:
        v = json.loads(raw or "[]")
    except (TypeError, ValueError):
        return [raw]
    return v if isinstance(v, list) else [v]
