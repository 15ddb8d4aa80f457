"""Order-intent persistence: the only code that changes an intent's status.

Every change is a compare-and-set UPDATE (``WHERE id=? AND status=<expected>``) that must report exactly one
row, plus an append-only order_events row, in one BEGIN IMMEDIATE transaction. Two dispatchers racing for the
same intent therefore cannot both claim it; the loser sees rowcount 0 and moves on.
"""
from __future__ import annotations

import json
import math
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, select, union, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from db.commands import ACTIONS, EXCHANGES, PRICETYPES, PRODUCTS
from db.models import QUEUED_WHERE, OrderIntent, utcnow
from db.order_fsm import OPEN, RECONCILER_OWNED, Status, apply, values
from db.rawsql import raw_cursor, sql_ts, update_rows

TIME_FIELD = {Status.CLAIMED: "claimed_at", Status.SENT: "sent_at"}


def new_client_order_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class IntentView:
    """A detached, immutable copy of an intent for use outside a session (dispatcher threads)."""
    id: int
    client_order_id: str
    account_id: int
    run_id: int | None
    execution_id: int | None
    purpose: str
    source: str
    strategy_tag: str
    symbol: str
    exchange: str
    action: str
    requested_qty: int
    pricetype: str
    product: str
    limit_price: float
    trigger_price: float
    status: str
    broker_order_id: str | None
    created_at: object
    sent_at: object

    @classmethod
    def of(cls, i: OrderIntent) -> "IntentView":
        return cls(**{f: getattr(i, f) for f in cls.__dataclass_fields__})


# These functions are the hot path of every order (dispatcher claim / outcome, risk exits): plain sqlite3 statements
# in the caller's transaction (db/rawsql.py). An OrderIntent already loaded in the session gets the new values,
# as an ORM UPDATE would do.
INTENT = OrderIntent.__table__
VIEW_FIELDS = tuple(IntentView.__dataclass_fields__)
_DATETIME_VIEW_FIELDS = ("created_at", "sent_at")
INSERT_EVENT_SQL = ("INSERT INTO order_events (intent_id, from_status, to_status, source, reason, payload, ts_utc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)")
# The same condition as the queue index's (db.models QUEUE_INDEX), which serves it in this order
NEXT_QUEUED_SQL = (f"SELECT {', '.join(VIEW_FIELDS)} FROM order_intents WHERE account_id = ? AND {QUEUED_WHERE} "
                   "ORDER BY priority, created_at, id LIMIT 1")


def _cas(s: Session, cur: sqlite3.Cursor, intent_id: int, frm: str, values: dict) -> bool:
    if update_rows(cur, INTENT, values, "id = ? AND status = ?", (intent_id, frm)) != 1:
        return False
    obj = s.identity_map.get(identity_key(OrderIntent, intent_id))
    if obj is not None:  # keep an already loaded object in line with the row (ORM 'evaluate' sync)
        for k, v in values.items():
            set_committed_value(obj, k, v)
    return True


def transition(s: Session, intent_id: int, frm: Status | str, to: Status | str, source: str,
               reason: str = "", payload: object = None, **fields) -> bool:
    """CAS the intent from ``frm`` to ``to`` (FSM-checked). Returns False if the row was not in ``frm``."""
    to = apply(frm, to)
    frm = Status(frm).value
    now = utcnow()
    values = {"status": to.value, "updated_at": now, **fields}
    if reason:
        values["status_reason"] = reason[:512]
    if to in TIME_FIELD:
        values[TIME_FIELD[to]] = now
    cur = raw_cursor(s)
    if not _cas(s, cur, intent_id, frm, values):
        return False
    cur.execute(INSERT_EVENT_SQL, (intent_id, frm, to.value, source, reason[:512],
                                   json.dumps(payload, default=str)[:4000] if payload else "", sql_ts(now)))
    return True


def claim_path(s: Session, intent_id: int, path: list[Status], source: str, reason: str = "", **fields) -> bool:
    """Walk ``path`` (e.g. queued -> claimed -> sent) as ONE compare-and-set UPDATE on its first state, with one
    order_events row per step. Every step is FSM-checked; False if the row was not in ``path[0]``."""
    for frm, to in zip(path, path[1:], strict=False):
        apply(frm, to)
    now = utcnow()
    values = {"status": Status(path[-1]).value, "updated_at": now, **fields}
    if reason:
        values["status_reason"] = reason[:512]
    for st in path[1:]:
        if Status(st) in TIME_FIELD:
            values[TIME_FIELD[Status(st)]] = now
    cur = raw_cursor(s)
    if not _cas(s, cur, intent_id, Status(path[0]).value, values):
        return False
    stamp = sql_ts(now)
    cur.executemany(INSERT_EVENT_SQL, [
        (intent_id, Status(frm).value, Status(to).value, source, reason[:512] if to == path[-1] else "", "", stamp)
        for frm, to in zip(path, path[1:], strict=False)])
    return True


class UnreadableIntent(ValueError):
    """A queued row whose fields cannot build an IntentView (written by hand, by a script, by a bad migration).
    ``reason`` says which field and value; the row must be denied, never retried."""

    def __init__(self, intent_id: int, reason: str):
        super().__init__(reason)
        self.intent_id, self.reason = intent_id, reason


_ID_VIEW_FIELDS = ("account_id", "run_id", "execution_id")  # run_id / execution_id may be NULL


def _timestamp(value) -> datetime | None:
    """A stored DATETIME as the ORM reads it (datetime.fromisoformat); ValueError if the ORM could not."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(value)
    return datetime.fromisoformat(value)


def _shown(v) -> str:
    r = repr(v)
    return r if len(r) <= 24 else r[:21] + "..."


def _view_of_row(row: tuple) -> IntentView:
    view = dict(zip(VIEW_FIELDS, row, strict=True))
    for k in _ID_VIEW_FIELDS:
        v = view[k]
        if not (isinstance(v, int) or (v is None and k != "account_id")):
            raise UnreadableIntent(view["id"], f"unreadable intent row: {k} {_shown(v)} is not an id")
    for k in _DATETIME_VIEW_FIELDS:
        try:
            view[k] = _timestamp(view[k])
        except ValueError:
            raise UnreadableIntent(view["id"], f"unreadable intent row: {k} {_shown(view[k])} is not a "
                                               "timestamp") from None
    if view["created_at"] is None:
        raise UnreadableIntent(view["id"], "unreadable intent row: created_at is empty")
    return IntentView(**view)


def next_queued_view(s: Session, account_id: int) -> IntentView | None:
    """The account's most urgent queued intent (priority, then FIFO). Raises UnreadableIntent for a row that
    cannot be read: the caller denies it (``deny_unsendable``) and asks again, so it never blocks the rows
    behind it."""
    row = raw_cursor(s).execute(NEXT_QUEUED_SQL, (account_id,)).fetchone()
    return None if row is None else _view_of_row(row)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def intent_problem(v: IntentView) -> str:
    """Why this intent must not be sent ('' when it may), checked right before every placeorder: rows reach the
    queue from the UI, the risk manager, strategies and anyone with the database file, so the dispatcher does
    not count on the broker to refuse nonsense. The enqueue-side rules (lot size, tick size, symbol master)
    are db.commands.validate_order's; these are the ones no order can break."""
    q, price, trigger = v.requested_qty, v.limit_price, v.trigger_price
    if not isinstance(q, int) or isinstance(q, bool) or q <= 0:
        return f"invalid intent: quantity {_shown(q)} (must be a whole number > 0)"
    for what, p in (("price", price), ("trigger price", trigger)):
        if not _number(p) or p < 0:
            return f"invalid intent: {what} {_shown(p)} (must be a finite number >= 0)"
    for what, value, allowed in (("action", v.action, ACTIONS), ("exchange", v.exchange, EXCHANGES),
                                 ("product", v.product, PRODUCTS), ("price type", v.pricetype, PRICETYPES)):
        if not isinstance(value, str) or value not in allowed:
            return f"invalid intent: {what} {_shown(value)} (must be one of {', '.join(sorted(allowed))})"
    if v.pricetype in ("LIMIT", "SL") and price <= 0:
        return f"invalid intent: {v.pricetype} order with price {price} (must be > 0)"
    if v.pricetype in ("SL", "SL-M") and trigger <= 0:
        return f"invalid intent: {v.pricetype} order with trigger price {trigger} (must be > 0)"
    if not isinstance(v.symbol, str) or not v.symbol.strip():
        return f"invalid intent: symbol {_shown(v.symbol)} is empty"
    return ""


DATETIME_COLUMNS = tuple(c.name for c in INTENT.columns if isinstance(c.type, DateTime))


def deny_unsendable(s: Session, intent_id: int, reason: str, source: str) -> bool:
    """queued -> denied (never sent) for a row that is unreadable or invalid, with the reason and an order_events
    row. Stored timestamps the ORM cannot load are replaced (NULL, or now where the column is NOT NULL) and the
    original values kept in the event's payload: otherwise every later reader of the denied row (execution
    bookkeeping, the risk manager's exit retry, the UI) would fail on it in turn. False if it was not queued."""
    row = raw_cursor(s).execute(f"SELECT {', '.join(DATETIME_COLUMNS)} FROM order_intents WHERE id = ?",
                                (intent_id,)).fetchone()
    bad = {}
    for col, value in zip(DATETIME_COLUMNS, row or (), strict=False):
        try:
            if _timestamp(value) is None and not INTENT.c[col].nullable:
                raise ValueError(value)
        except ValueError:
            bad[col] = value
    fixes = {col: None if INTENT.c[col].nullable else utcnow() for col in bad}
    return transition(s, intent_id, Status.QUEUED, Status.DENIED, source, reason,
                      payload={"unreadable": bad} if bad else None, **fixes)


def requeue_orphan_claims(s: Session, reason: str = "claimed by a process that stopped before sending") -> int:
    """At service start (single instance, lock held): 'claimed' rows were never sent ('sent' is committed
    before any network call), so they can safely go back to the queue."""
    ids = list(s.scalars(select(OrderIntent.id).where(OrderIntent.status == Status.CLAIMED.value)))
    return sum(transition(s, i, Status.CLAIMED, Status.QUEUED, "reconciler", reason, claimed_by="") for i in ids)


QUEUED_ACCOUNTS_SQL = (f"SELECT account_id FROM order_intents WHERE status = '{Status.QUEUED}' "
                       "ORDER BY priority, created_at, id")


def queued_accounts(s: Session) -> list[int]:
    """Accounts with queued intents, most urgent first (one plain SELECT on the status index: the dispatcher runs
    it every dispatch_poll_s). Only ids are read, so a row that cannot be parsed does not make it raise."""
    return list(dict.fromkeys(a for (a,) in raw_cursor(s).execute(QUEUED_ACCOUNTS_SQL)))


# ---- the order poller's reads -----------------------------------------------------------------------------------
# Intents whose status the orderbook still moves: working ones, and cancelled ones (a fill can race the cancel);
# and filled ones the book gave no average price for yet. ``followed_by_book`` says the same in Python.
FOLLOWED = values(OPEN | {Status.CANCELLED})
FOLLOWED_SQL = ("SELECT id, broker_order_id, status, broker_status, broker_filled_qty, broker_avg_price "
                "FROM order_intents WHERE account_id = ? AND broker_order_id IS NOT NULL AND "
                f"(status IN ({', '.join('?' * len(FOLLOWED))}) OR (status = ? AND broker_avg_price IS NULL))")


def followed_by_book(status: str, avg_price: float | None) -> bool:
    """Does a poll bring an intent in this state in line with its broker order (the rows FOLLOWED_SQL selects)?"""
    return status in FOLLOWED or (status == Status.FILLED.value and avg_price is None)


def book_followed_intents(s: Session, account_id: int) -> list[tuple]:
    """(id, broker order id, status, broker_status, broker_filled_qty, broker_avg_price) of the account's intents
    that a poll follows (``followed_by_book``); one plain SELECT, fine on a read session."""
    return raw_cursor(s).execute(FOLLOWED_SQL, (account_id, *FOLLOWED, Status.FILLED.value)).fetchall()


def accounts_with_intents(s: Session, statuses: tuple[str, ...], updated_since: datetime) -> set[int]:
    """Ids of the accounts with an intent in one of ``statuses``, or with any intent updated at or after
    ``updated_since``. A UNION, each half on its own index: with the two conditions OR'ed, SQLite read every intent
    of every account (8.2 ms a call, every second, with 20,000 of them)."""
    return set(s.scalars(union(select(OrderIntent.account_id).where(OrderIntent.status.in_(statuses)),
                               select(OrderIntent.account_id).where(OrderIntent.updated_at >= updated_since))))


def intents_by_id(s: Session, ids: list[int]) -> list[OrderIntent]:
    """The intents with these ids, as ORM objects of this session (ids with no row are left out)."""
    return list(s.scalars(select(OrderIntent).where(OrderIntent.id.in_(ids))))


# ---- the reconciler's reads and writes --------------------------------------------------------------------------
def reconciler_owned(s: Session) -> list[tuple]:
    """(account id, intent id, status, sent_at) of every intent whose outcome at the broker is not known
    (RECONCILER_OWNED), oldest sent first."""
    return list(s.execute(select(OrderIntent.account_id, OrderIntent.id, OrderIntent.status, OrderIntent.sent_at)
                          .where(OrderIntent.status.in_(values(RECONCILER_OWNED)))
                          .order_by(OrderIntent.sent_at, OrderIntent.id)).all())


def set_reconcile_checks(s: Session, intent_id: int, checks: int) -> None:
    """Record how many reconciler passes have looked for the intent at the broker (status unchanged); an
    OrderIntent loaded in the session gets the new count too."""
    s.execute(update(OrderIntent).where(OrderIntent.id == intent_id).values(reconcile_checks=checks))
