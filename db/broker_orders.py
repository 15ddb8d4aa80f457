"""The broker_orders table: each account's orderbook as last seen, every order linked to its intent; and the
broker's orderbook rows parsed into ``BookOrder`` reports (timestamps in a broker-specific IST format -> UTC).

Plain sqlite3 statements (db/rawsql.py): the poller compares every active account's whole book with these rows
every second, and a busy day's book holds thousands of orders, nearly all unchanged.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.clock import IST_OFFSET
from db.models import BrokerOrder, OrderIntent, utcnow
from db.order_fsm import INFLIGHT, sql_in
from db.rawsql import insert_many, raw_cursor, select_in, update_many


TS_FORMATS = ("%Y-%m-%d %H:%M:%S", "%d-%b-%Y %H:%M:%S", "%d-%m-%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
              "%d/%m/%Y %H:%M:%S", "%H:%M:%S %d-%m-%Y")


def _f(v, default: float = 0.0) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


@lru_cache(maxsize=8192)
def parse_ts(raw: str) -> datetime | None:
    """Broker timestamps are naive IST strings in a broker-specific format -> naive UTC (None if unparseable).
    Memoised: every poll sees the day's orders again, and strptime costs tens of microseconds per try."""
    raw = (raw or "").strip()
    for fmt in TS_FORMATS:
        try:
            return datetime.strptime(raw[:19] if "T" in fmt else raw, fmt) - IST_OFFSET
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class BookOrder:
    orderid: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    price: float
    trigger_price: float
    pricetype: str
    product: str
    order_status: str
    filled_qty: int
    avg_price: float
    strategy: str | None  # None when the broker does not report the tag
    timestamp: str
    ts_utc: datetime | None

    @classmethod
    def parse(cls, r: dict) -> "BookOrder | None":
        oid = str(r.get("orderid") or "").strip()
        if not oid:
            return None
        qty = int(_f(r.get("quantity")))
        status = str(r.get("order_status") or "").strip().lower()
        filled = r.get("filled_quantity")
        filled_qty = int(_f(filled)) if filled is not None else (qty if status == "complete" else 0)
        ts = str(r.get("timestamp") or "")
        return cls(oid, str(r.get("symbol") or ""), str(r.get("exchange") or ""),
                   str(r.get("action") or "").upper(), qty, _f(r.get("price")), _f(r.get("trigger_price")),
                   str(r.get("pricetype") or r.get("price_type") or ""), str(r.get("product") or ""), status,
                   filled_qty, _f(r.get("average_price")),
                   str(r["strategy"]) if r.get("strategy") is not None else None, ts, parse_ts(ts))


def parse_book(rows: list[dict]) -> list[BookOrder]:
    return [b for b in (BookOrder.parse(r) for r in rows if isinstance(r, dict)) if b is not None]


BOOK_FIELDS = ("intent_id", "external", "symbol", "exchange", "action", "quantity", "price", "trigger_price",
               "pricetype", "product", "order_status", "filled_qty", "avg_price", "strategy_tag", "broker_timestamp")
_INSERT_COLS = ("account_id", "broker_order_id", *BOOK_FIELDS, "updated_at")
_UPDATE_COLS = (*BOOK_FIELDS, "updated_at")
INTENT_IDS_SQL = "SELECT broker_order_id, id FROM order_intents WHERE account_id = ? AND broker_order_id IN"
INFLIGHT_SQL = f"SELECT 1 FROM order_intents WHERE account_id = ? AND status IN {sql_in(INFLIGHT)} LIMIT 1"
EXISTING_SQL = (f"SELECT broker_order_id, id, {', '.join(BOOK_FIELDS)} FROM broker_orders WHERE account_id = ? AND "
                "broker_order_id IN")


@dataclass
class BookChanges:
    """What an orderbook changes in broker_orders: rows to insert, rows to update, orders newly adopted."""
    inserts: list[tuple] = field(default_factory=list)
    updates: list[tuple] = field(default_factory=list)
    adopted: int = 0

    def __bool__(self) -> bool:
        return bool(self.inserts or self.updates)


def book_changes(s: Session, account_id: int, orders: list[BookOrder], now: datetime) -> BookChanges:
    """Compare the account's orderbook with its broker_orders rows (reads only; a read session is enough). An
    order with no intent while nothing of ours is in flight for the account is adopted as external (sticky once
    adopted). Rows whose content is unchanged are left alone, so a poll of an unchanged book writes nothing.
    Returns the rows to insert and update (``updated_at`` = ``now``) and the count of newly adopted orders."""
    return _book_changes(raw_cursor(s), account_id, orders, now)


def _book_changes(cur: sqlite3.Cursor, account_id: int, orders: list[BookOrder], now: datetime) -> BookChanges:
    book = {o.orderid: o for o in orders}  # a repeated order id: the last row wins
    oids = list(book)
    by_oid = dict(select_in(cur, INTENT_IDS_SQL, (account_id,), oids))
    inflight = cur.execute(INFLIGHT_SQL, (account_id,)).fetchone()
    existing = {r[0]: (r[1], r[2:]) for r in select_in(cur, EXISTING_SQL, (account_id,), oids)}
    out = BookChanges()
    for oid, o in book.items():
        row_id, old = existing.get(oid, (None, None))
        intent_id = by_oid.get(oid)
        was_external = bool(old[1]) if old else False
        external = intent_id is None and (was_external or inflight is None)
        out.adopted += int(external and not was_external)
        new = (intent_id, int(external), o.symbol, o.exchange, o.action, o.quantity, o.price, o.trigger_price,
               o.pricetype, o.product, o.order_status, o.filled_qty, o.avg_price, (o.strategy or "")[:64],
               o.timestamp[:32])
        if old is None:
            out.inserts.append((account_id, oid, *new, now))
        elif new != tuple(old):
            out.updates.append((*new, now, row_id))
    return out


def upsert_orders(s: Session, account_id: int, orders: list[BookOrder]) -> int:
    """Bring the account's broker_orders in line with its orderbook (only changed rows are written), linking each
    order to its intent. Returns the number of orders newly adopted as external."""
    cur = raw_cursor(s)
    changes = _book_changes(cur, account_id, orders, utcnow())
    insert_many(cur, BrokerOrder.__table__, _INSERT_COLS, changes.inserts)
    update_many(cur, BrokerOrder.__table__, _UPDATE_COLS, changes.updates)
    return changes.adopted


def linked_order_ids(s: Session, account_id: int) -> set[str]:
    """Broker order ids of the account that already belong to an intent: the intent holds the id, or the
    broker_orders row names the intent. The reconciler never matches another intent to one of these."""
    ids = set(s.scalars(select(OrderIntent.broker_order_id).where(
        OrderIntent.account_id == account_id, OrderIntent.broker_order_id.is_not(None))))
    ids |= set(s.scalars(select(BrokerOrder.broker_order_id).where(
        BrokerOrder.account_id == account_id, BrokerOrder.intent_id.is_not(None))))
    return ids
