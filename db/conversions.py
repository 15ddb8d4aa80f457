"""A LIMIT entry's one conversion to MARKET (order_intents.convert_after_s / convert_state, db/vocab.ConvertState),
as services/entry_convert.py carries it out: which entries are due, the compare-and-set that claims the one
attempt (committed before modifyorder is sent), and its outcome with an audit row in order_events."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from db.models import MODIFYING_WHERE, Account, OrderEvent, OrderIntent, StrategyRun, utcnow
from db.order_fsm import OPEN, values
from db.rawsql import raw_cursor
from db.run_fsm import LIVE_RUN
from db.vocab import ENTRIES_DENIED, ConvertState

SOURCE = "entry_convert"


@dataclass(frozen=True)
class Due:
    intent_id: int
    account_id: int
    broker_order_id: str
    symbol: str
    exchange: str
    action: str
    product: str
    quantity: int
    strategy_tag: str
    after_s: int
    status: str


def due_conversions(s, now: datetime) -> list[Due]:
    """Entries to convert now: LIMIT, still working at the broker (placed / partially filled) convert_after_s
    after they were sent, not tried yet, of a run still entering or active, on an account that may enter (a
    halted account's working entries are the flatten's to cancel, not to push to MARKET)."""
    rows = s.execute(
        select(OrderIntent.id, OrderIntent.account_id, OrderIntent.broker_order_id, OrderIntent.symbol,
               OrderIntent.exchange, OrderIntent.action, OrderIntent.product, OrderIntent.requested_qty,
               OrderIntent.strategy_tag, OrderIntent.convert_after_s, OrderIntent.status, OrderIntent.sent_at)
        .join(StrategyRun, StrategyRun.id == OrderIntent.run_id).join(Account, Account.id == OrderIntent.account_id)
        .where(OrderIntent.purpose == "entry", OrderIntent.pricetype == "LIMIT", OrderIntent.convert_after_s > 0,
               OrderIntent.convert_state == ConvertState.NONE.value, OrderIntent.status.in_(values(OPEN)),
               OrderIntent.broker_order_id.is_not(None), OrderIntent.sent_at.is_not(None),
               StrategyRun.status.in_(values(LIVE_RUN)), Account.trading_state.not_in(values(ENTRIES_DENIED)))
        .order_by(OrderIntent.sent_at)).all()
    return [Due(*r[:11]) for r in rows if r.sent_at + timedelta(seconds=r.convert_after_s) <= now]


def claim_conversion(s, d: Due) -> bool:
    """'' -> modifying by compare-and-set, with its audit row; False when another pass (or process) took it or
    the order stopped working meanwhile. The caller commits before sending modifyorder."""
    n = s.execute(update(OrderIntent).where(
        OrderIntent.id == d.intent_id, OrderIntent.convert_state == ConvertState.NONE.value,
        OrderIntent.status.in_(values(OPEN))).values(convert_state=ConvertState.MODIFYING.value,
                                                     updated_at=utcnow())).rowcount
    if n == 1:
        _event(s, d.intent_id, f"LIMIT still working {d.after_s} s after it was sent: modifyorder to MARKET")
    return n == 1


def finish_conversion(s, intent_id: int, converted: bool, reason: str) -> None:
    state = ConvertState.CONVERTED if converted else ConvertState.NOT_CONVERTED
    s.execute(update(OrderIntent).where(OrderIntent.id == intent_id,
                                        OrderIntent.convert_state == ConvertState.MODIFYING.value)
              .values(convert_state=state.value, updated_at=utcnow()))
    _event(s, intent_id, reason)


LEFT_MODIFYING_SQL = f"SELECT id, account_id, symbol, broker_order_id FROM order_intents WHERE {MODIFYING_WHERE}"


def left_modifying(s) -> list[tuple[int, int, str, str]]:
    """(intent id, account id, symbol, broker order id) of conversions marked modifying: at a pass's start, a row
    this process is not converting was left by one that stopped between the claim and the answer."""
    # the condition as SQL text, the partial index's own (db.models MODIFYING_INDEX): a bound value could not use it
    return [tuple(r) for r in raw_cursor(s).execute(LEFT_MODIFYING_SQL).fetchall()]


def _event(s, intent_id: int, reason: str) -> None:
    status = s.scalar(select(OrderIntent.status).where(OrderIntent.id == intent_id)) or ""
    s.add(OrderEvent(intent_id=intent_id, from_status=status, to_status=status, source=SOURCE, reason=reason[:512]))
