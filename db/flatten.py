"""The statements of a flatten (services/flatten.py): close everything an account holds at the broker.

Flatten exits that no strategy leg owns (Quick Order positions, orders placed outside the app) are order_intents
with purpose 'exit' and no execution. Their client_order_id is derived from the flatten command, the account and
the position (``flatten_coid``), so running the same flatten again (after a restart in the middle of it) finds the
intent it wrote the first time instead of writing a second one: never placed twice.
"""
from __future__ import annotations

import hashlib
import json

from sqlalchemy import select

from db.accounts import set_trading_state
from db.clock import ist_now_str
from db.executions import apply_intent_outcome
from db.exits import exit_priority
from db.intents import transition
from db.models import Account, ControlCommand, Execution, OrderIntent, RiskEvent, StrategyRun, utcnow
from db.order_fsm import BROKER_STATUS_MAP, LIVE, OPEN, Status, values
from db.rawsql import insert_row, raw_cursor
from db.run_fsm import ACTIVE_LEG, LIVE_RUN, UNFINISHED_RUN, LegStatus
from db.vocab import TradingState

ENTRY_PURPOSES = ("entry", "manual")  # intents that open or add to a position (everything but exits)
# the broker's order_status words of an order still working (resting, or waiting for its trigger)
WORKING_AT_BROKER = frozenset(word for word, st in BROKER_STATUS_MAP.items() if st == Status.PLACED)

# plain SQL for what a limit's trip runs inside its transaction (its first close waits for the commit)
HELD_BY_RUNS_SQL = (
    "SELECT e.symbol, e.exchange, e.product, e.action, e.quantity, e.status, i.broker_filled_qty "
    "FROM executions e LEFT JOIN order_intents i ON i.id = e.exit_intent_id JOIN strategy_runs r ON r.id = e.run_id "
    f"WHERE e.account_id = ? AND e.status IN ({', '.join('?' * len(ACTIVE_LEG))}) "
    f"AND r.status IN ({', '.join('?' * len(UNFINISHED_RUN))})")
LIVE_KEYS_SQL = ("SELECT DISTINCT symbol, exchange, product FROM order_intents "
                 f"WHERE account_id = ? AND status IN ({', '.join('?' * len(LIVE))})")
MOVED_SINCE_SQL = ("SELECT DISTINCT symbol, exchange, product FROM broker_orders WHERE account_id = ? AND "
                   f"(updated_at >= ? OR lower(order_status) IN ({', '.join('?' * len(WORKING_AT_BROKER))}))")


def close_coid(key: str, account_id: int, symbol: str, exchange: str, product: str) -> str:
    """The client_order_id of the exit a close job (``key``: 'flatten:12', 'square_off:2026-12-01:MIS') writes
    for one position: the same on every run of the job, so a second run finds the first one's intent."""
    return hashlib.sha1(f"{key}:{account_id}:{symbol}:{exchange}:{product}".encode()).hexdigest()[:32]


def flatten_coid(command_id: int, account_id: int, symbol: str, exchange: str, product: str) -> str:
    return close_coid(f"flatten:{command_id}", account_id, symbol, exchange, product)


def withdraw_queued_entries(s, account_id: int, reason: str, product: str | None = None) -> int:
    """Queued intents that would open or add to a position (strategy entries, manual orders; of ``product`` only,
    if given) are cancelled before they are sent; their legs fail. Returns how many."""
    q = select(OrderIntent.id).where(OrderIntent.account_id == account_id, OrderIntent.status == Status.QUEUED,
                                     OrderIntent.purpose.in_(ENTRY_PURPOSES))
    ids = list(s.scalars(q if product is None else q.where(OrderIntent.product == product)))
    done = 0
    for iid in ids:
        if transition(s, iid, Status.QUEUED, Status.CANCELLED, "risk", reason):
            apply_intent_outcome(s, iid)
            done += 1
    return done


def live_run_ids(s, account_id: int, product: str | None = None) -> list[int]:
    """The account's live runs (those with a leg of ``product`` only, if given)."""
    q = select(StrategyRun.id).where(StrategyRun.account_id == account_id, StrategyRun.status.in_(LIVE_RUN))
    if product is not None:
        q = q.where(StrategyRun.id.in_(select(Execution.run_id).where(Execution.account_id == account_id,
                                                                       Execution.product == product)))
    return list(s.scalars(q.order_by(StrategyRun.id)))


def working_orders_of_ours(s, account_id: int) -> set[str]:
    """Broker order ids of this account's exits still working: a flatten never cancels its own exits."""
    return set(s.scalars(select(OrderIntent.broker_order_id).where(
        OrderIntent.account_id == account_id, OrderIntent.purpose == "exit", OrderIntent.status.in_(OPEN),
        OrderIntent.broker_order_id.is_not(None))))


def held_by_runs(s, account_id: int) -> dict[tuple[str, str, str], int]:
    """Per (symbol, exchange, product): the signed quantity the account's strategy legs hold at the broker (+ long,
    - short): entered legs in full, exiting legs less what their exit filled. The risk manager's run exits close
    these; a flatten closes only the rest."""
    rows = raw_cursor(s).execute(HELD_BY_RUNS_SQL, (account_id, *values(ACTIVE_LEG), *values(UNFINISHED_RUN)))
    out: dict[tuple[str, str, str], int] = {}
    for symbol, exchange, product, action, qty, status, exit_filled in rows:
        held = qty - ((exit_filled or 0) if status == LegStatus.EXITING else 0)
        key = (symbol, exchange, product)
        out[key] = out.get(key, 0) + held * (1 if action == "BUY" else -1)
    return out


def live_orders(s, account_id: int, product: str | None = None) -> list[str]:
    """The statuses of the account's intents (of ``product``, if given) that may still trade (sent, working,
    outcome unknown...)."""
    q = select(OrderIntent.status).where(OrderIntent.account_id == account_id, OrderIntent.status.in_(LIVE))
    return list(s.scalars(q if product is None else q.where(OrderIntent.product == product)))


def all_at_broker(statuses: list[str]) -> bool:
    """Every one of these orders is acknowledged by the broker and only waits for its fill: the next orderbook read
    settles them (none is still being sent, or unknown: those are the dispatcher's and the reconciler's)."""
    return all(st in OPEN for st in statuses)


def busy_keys(s, account_id: int) -> set[tuple[str, str, str]]:
    """Positions (symbol, exchange, product) a flatten must not close on its own now: a strategy leg holds them
    (the risk manager's exit closes it), or one of our orders on them may still trade (an exit in flight, an order
    not yet settled). The broker's positionbook can run ahead of our rows for those (a fill the poller has not
    recorded yet), so a close computed from it could trade the same units twice."""
    live = raw_cursor(s).execute(LIVE_KEYS_SQL, (account_id, *values(LIVE)))
    return {tuple(r) for r in live} | {k for k, v in held_by_runs(s, account_id).items() if v}


def write_flatten_exit(s, command_id: int, account_id: int, symbol: str, exchange: str, product: str,
                       net_qty: int, n: int, tag: str, step: int = 1) -> tuple[int, bool]:
    """The MARKET order that closes a net position of ``net_qty`` (>0 long: SELL; <0 short: BUY first). Returns
    (intent id, created): an intent this flatten wrote before for the same position and ``step`` is returned, not
    repeated."""
    return write_close_exit(s, f"flatten:{command_id}", "flatten", account_id, symbol, exchange, product, net_qty,
                            n, tag, step)


def write_close_exit(s, key: str, source: str, account_id: int, symbol: str, exchange: str, product: str,
                     net_qty: int, n: int, tag: str, step: int = 1) -> tuple[int, bool]:
    """write_flatten_exit for any close job (``key``, ``source``: a flatten, a square-off)."""
    coid = close_coid(key, account_id, symbol, exchange, f"{product}:{step}")
    cur = raw_cursor(s)
    existing = cur.execute("SELECT id FROM order_intents WHERE client_order_id = ?", (coid,)).fetchone()
    if existing:
        return existing[0], False
    action = "SELL" if net_qty > 0 else "BUY"
    iid = insert_row(cur, OrderIntent.__table__, dict(
        client_order_id=coid, account_id=account_id, purpose="exit", source=source[:16],
        priority=exit_priority(action, n), strategy_tag=tag[:64], symbol=symbol, exchange=exchange, action=action,
        requested_qty=abs(net_qty), pricetype="MARKET", product=product), utcnow())
    return iid, True


def flatten_intents(s, command_id: int, account_id: int) -> list[OrderIntent]:
    """The intents this flatten wrote for the account (found by their derived client_order_ids' source)."""
    return close_intents(s, "flatten", f"flatten-{command_id}", account_id)


def close_intents(s, source: str, tag: str, account_id: int) -> list[OrderIntent]:
    """The exits a close job (``source``, strategy ``tag``) wrote for the account."""
    return list(s.scalars(select(OrderIntent).where(OrderIntent.account_id == account_id,
                                                    OrderIntent.source == source[:16],
                                                    OrderIntent.strategy_tag == tag[:64])))


def early_closes(s, command_id: int, account_id: int) -> int:
    """At a limit's trip, in its transaction: the MARKET exits (step 0 of the flatten ``command_id``; BUYs first)
    for the positions the stored positionbook shows that nothing can have moved since it was read, so the first
    close goes out on the trip's commit instead of after the flatten's orderbook and positionbook reads. A
    position is left to the flatten itself (cancel first, then a fresh positionbook) when a strategy leg holds
    it or an order of ours on it may still trade (busy_keys), when an order on it is working at the broker, or
    when a broker order on it was stored after the last account sync began (funds.updated_at): the stored
    quantity may be out of date. The flatten then skips these positions while their exits are live and, once
    everything has settled, closes whatever a fresh positionbook still shows. Returns how many were written."""
    cur = raw_cursor(s)
    synced = cur.execute("SELECT updated_at FROM funds WHERE account_id = ?", (account_id,)).fetchone()
    if synced is None or synced[0] is None:
        return 0
    # the stored DATETIME texts compare in time order (one format for every row: db/rawsql.sql_ts)
    moved = {tuple(r) for r in cur.execute(MOVED_SINCE_SQL, (account_id, synced[0], *sorted(WORKING_AT_BROKER)))}
    skip = moved | busy_keys(s, account_id)
    closes = {(sym, ex, prod): int(q) for sym, ex, prod, q in cur.execute(
        "SELECT symbol, exchange, product, quantity FROM positions WHERE account_id = ? AND quantity != 0",
        (account_id,)) if (sym, ex, prod) not in skip}
    for n, (key, net) in enumerate(sorted(closes.items(), key=lambda kv: (kv[1] > 0, kv[0]))):
        write_flatten_exit(s, command_id, account_id, *key, net, n, f"flatten-{command_id}", step=0)
    return len(closes)


def halt_and_flatten(s, account_id: int, reason: str, event_type: str, threshold: float, value: float,
                     until: str = "") -> int:
    """A protection tripped: in the caller's transaction the account is halted with ``reason``, the risk event is
    written and a flatten_account command is queued (carried out like the trader's own, so it survives a restart
    the same way). ``until``: the ISO date the halt lasts through (a daily limit: its trading day; re-armed at
    the first check on a later trading day, services/square_off.py); '' = until re-armed by hand. Returns the
    command id."""
    set_trading_state(s, account_id, TradingState.HALTED, reason, "service", until=until)
    return _flatten_command(s, "flatten_account", json.dumps({"account_id": account_id}), account_id, event_type,
                            threshold, value, reason)


def halt_all_and_flatten(s, reason: str, event_type: str, threshold: float, value: float,
                         until: str = "") -> tuple[int, list[int]]:
    """The portfolio's protection tripped: in the caller's transaction every account is halted with ``reason``
    (each ``until`` that day, as halt_and_flatten), ONE risk event (no account: the portfolio's) is written and one
    flatten_all command is queued (a restart carries it out again, on every account, as the control handler
    does). Returns (command id, account ids)."""
    account_ids = list(s.scalars(select(Account.id).order_by(Account.id)))
    for account_id in account_ids:
        set_trading_state(s, account_id, TradingState.HALTED, reason, "service", until=until)
    return _flatten_command(s, "flatten_all", "{}", None, event_type, threshold, value, reason), account_ids


def _flatten_command(s, kind: str, payload: str, account_id: int | None, event_type: str, threshold: float,
                     value: float, reason: str) -> int:
    """The queued flatten command and the trip's risk event, in plain SQL (a trip's first close waits for this
    transaction); returns the command id."""
    cur, now = raw_cursor(s), utcnow()
    cid = insert_row(cur, ControlCommand.__table__, dict(kind=kind, payload_json=payload), now)
    insert_row(cur, RiskEvent.__table__, dict(account_id=account_id, event_type=event_type[:32], threshold=threshold,
                                              value=value, action="flatten", message=reason[:512],
                                              ts_ist=ist_now_str()), now)
    return cid
