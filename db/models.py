"""SQLAlchemy 2.x typed models. Times are UTC (naive datetimes holding UTC) internally; IST only in ui/.

Ownership (design guide §2): the UI writes only command rows (order_intents with status 'queued',
control_commands, strategies, accounts, option_chain_sessions heartbeats); the service owns every
broker-state table (broker_orders, broker_trades, positions, funds, holdings, latest_prices, ...).
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.order_fsm import LIVE, Status, sql_in
from db.run_fsm import LegStatus, RunStatus
from db.vocab import (ChainStatus, CommandStatus, ConvertState, SquareOffStatus, StopStatus, TimedState,
                      TradingState)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    broker: Mapped[str] = mapped_column(String(64), default="")
    host_url: Mapped[str] = mapped_column(String(256))
    ws_url: Mapped[str] = mapped_column(String(256))
    api_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    backup_order: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1 = first backup for the feed
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(32), default="unchecked")  # ok | invalid_key | unreachable | unchecked
    status_message: Mapped[str] = mapped_column(String(512), default="")
    last_checked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # db.vocab.TradingState; changed only through db.accounts.set_trading_state (audit row + risk event)
    trading_state: Mapped[str] = mapped_column(String(16), default=TradingState.ACTIVE.value)
    trading_reason: Mapped[str] = mapped_column(String(256), default="")
    trading_changed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # a halt that lifts by itself: the ISO date (IST) of the day it lasts through (a daily limit's halt lasts its
    # trading day; re-armed at the first check on a later trading day); '' = until re-armed by hand
    trading_until: Mapped[str] = mapped_column(String(10), default="")
    # the account's day P&L limits in rupees (None = no limit); services/account_limits.py
    daily_max_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    daily_max_profit: Mapped[float | None] = mapped_column(Float, nullable=True)
    # trailing on the day P&L: once the day's peak is above 0, trip at peak - daily_trailing (None = off). The
    # peak is kept for the trading day it was seen on (day_peak_date, ISO), so a restart within the day keeps it.
    daily_trailing: Mapped[float | None] = mapped_column(Float, nullable=True)
    day_peak: Mapped[float | None] = mapped_column(Float, nullable=True)
    day_peak_date: Mapped[str | None] = mapped_column(String(10), nullable=True)
    # when account sync last READ the positionbook it stored (taken before the call): the stored book includes
    # every fill the broker had by then (db/stops.py trusts it only when it is newer than our fills)
    positions_synced_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # the market clock's trading day (ISO) that read happened on: a book read on an earlier day is not today's P&L
    positions_day: Mapped[str] = mapped_column(String(10), default="")


class PortfolioSettings(Base):
    """Limits on all accounts together (one row, id 1; no row = no limit): services/account_limits.py."""
    __tablename__ = "portfolio_settings"
    id: Mapped[int] = mapped_column(primary_key=True)
    daily_max_loss: Mapped[float | None] = mapped_column(Float, nullable=True)  # rupees, on the sum of day P&Ls
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Strategy(Base):
    __tablename__ = "strategies"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    underlying: Mapped[str] = mapped_column(String(32))
    exchange: Mapped[str] = mapped_column(String(16))  # underlying's exchange, e.g. NSE_INDEX
    expiry: Mapped[str] = mapped_column(String(16), default="")  # DD-MMM-YY; '' when expiry_mode is relative
    # fixed (the expiry above) | current_week | next_week | current_month | next_month (db/expiry_rules.py),
    # resolved from the listed expiries each time the strategy is executed
    expiry_mode: Mapped[str] = mapped_column(String(16), default="fixed")
    product: Mapped[str] = mapped_column(String(8), default="NRML")
    max_loss: Mapped[float | None] = mapped_column(Float, nullable=True)  # rupees, positive number
    max_profit: Mapped[float | None] = mapped_column(Float, nullable=True)
    trailing_sl: Mapped[float | None] = mapped_column(Float, nullable=True)  # rupees trailed below peak P&L
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # set by Delete: the row stays for the runs (and their history) that name it, hidden everywhere else
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    legs: Mapped[list[StrategyLeg]] = relationship(
        back_populates="strategy", cascade="all, delete-orphan", order_by="StrategyLeg.leg_no")


class StrategyLeg(Base):
    __tablename__ = "strategy_legs"
    id: Mapped[int] = mapped_column(primary_key=True)
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"))
    leg_no: Mapped[int] = mapped_column(Integer)
    instrument: Mapped[str] = mapped_column(String(4))  # CE | PE | FUT
    action: Mapped[str] = mapped_column(String(4))  # BUY | SELL
    strike_mode: Mapped[str] = mapped_column(String(8), default="ATM")  # ATM | ITM | OTM | STRIKE | PREMIUM | DELTA
    offset: Mapped[int] = mapped_column(Integer, default=0)
    strike: Mapped[float | None] = mapped_column(Float, nullable=True)
    lots: Mapped[int] = mapped_column(Integer, default=1)
    # the leg's own stop-loss / target (db.vocab.StopMode points | pct of the entry price; '' / None = off),
    # trailing stop in points below (BUY) / above (SELL) the best price since entry, and re-entry after its stop
    sl_mode: Mapped[str] = mapped_column(String(8), default="")
    sl_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    tp_mode: Mapped[str] = mapped_column(String(8), default="")
    tp_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    trail_points: Mapped[float | None] = mapped_column(Float, nullable=True)
    reentry_count: Mapped[int] = mapped_column(Integer, default=0)  # 0 = no re-entry
    reentry_mode: Mapped[str] = mapped_column(String(8), default="same")  # db.vocab.ReentryMode
    reentry_wait: Mapped[bool] = mapped_column(Boolean, default=False)  # only once the price is back at the entry
    target: Mapped[float | None] = mapped_column(Float, nullable=True)  # PREMIUM: ₹; DELTA: |delta| e.g. 0.30
    entry_type: Mapped[str] = mapped_column(String(8), default="MARKET")  # MARKET | LIMIT
    # LIMIT: price = the leg's LTP + entry_offset (₹, or % of the LTP when entry_offset_pct); negative = below
    entry_offset: Mapped[float] = mapped_column(Float, default=0.0)
    entry_offset_pct: Mapped[bool] = mapped_column(Boolean, default=False)
    convert_after_s: Mapped[int] = mapped_column(Integer, default=0)  # LIMIT still working after N s -> MARKET
    strategy: Mapped[Strategy] = relationship(back_populates="legs")


class StrategyRun(Base):
    """One execution of a strategy on one account. Risk limits and trailing-stop state live here."""
    __tablename__ = "strategy_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    group_id: Mapped[str] = mapped_column(String(36), index=True)  # one Execute click across accounts
    multiplier: Mapped[int] = mapped_column(Integer, default=1)  # each leg's lots are multiplied by this
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.ENTERING.value)  # db/run_fsm.py
    max_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_profit: Mapped[float | None] = mapped_column(Float, nullable=True)
    trailing_sl: Mapped[float | None] = mapped_column(Float, nullable=True)
    tsl_peak: Mapped[float | None] = mapped_column(Float, nullable=True)
    tsl_stop: Mapped[float | None] = mapped_column(Float, nullable=True)
    pnl: Mapped[float] = mapped_column(Float, default=0.0)
    exit_reason: Mapped[str] = mapped_column(String(64), default="")
    exit_requested_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    exited_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Execution(Base):
    """A leg of a strategy run on an account: entry intent, fill, exit intent, exit fill."""
    __tablename__ = "executions"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("strategy_runs.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    leg_no: Mapped[int] = mapped_column(Integer)
    symbol: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[int] = mapped_column(Integer)
    product: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=LegStatus.PENDING.value)  # db/run_fsm.py
    entry_intent_id: Mapped[int | None] = mapped_column(ForeignKey("order_intents.id"), nullable=True)
    entry_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_intent_id: Mapped[int | None] = mapped_column(ForeignKey("order_intents.id"), nullable=True)
    exit_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    # the leg's stops and re-entry, copied from its StrategyLeg at execute (a later edit never changes a live run)
    sl_mode: Mapped[str] = mapped_column(String(8), default="")
    sl_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    tp_mode: Mapped[str] = mapped_column(String(8), default="")
    tp_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    trail_points: Mapped[float | None] = mapped_column(Float, nullable=True)
    reentry_count: Mapped[int] = mapped_column(Integer, default=0)
    reentry_mode: Mapped[str] = mapped_column(String(8), default="same")
    reentry_wait: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # 0: the first entry; n: the leg's n-th re-entry
    # a re-entry waiting for its turn is a 'pending' execution without an entry intent; reentry_ref is the
    # price of the leg's first entry (the level the price must come back to, with reentry_wait)
    reentry_ref: Mapped[float | None] = mapped_column(Float, nullable=True)
    leg_best: Mapped[float | None] = mapped_column(Float, nullable=True)  # best price since entry (trailing)
    exit_kind: Mapped[str] = mapped_column(String(16), default="")  # why this leg alone exited (leg_sl, close_leg..)


# The WHERE of the one-exit-per-leg index, from the FSM (sql_in keeps enum order, so the SQL text is stable).
LIVE_EXIT_WHERE = f"purpose='exit' AND status IN {sql_in(LIVE)}"
# The queue of orders not sent yet, per account in sending order (db/intents.py NEXT_QUEUED_SQL: every claim of the
# dispatcher and of a risk exit). Partial: only queued rows, so it stays a few entries while an account's intents
# grow by thousands a month; the plain account index made that claim visit every intent the account ever had.
QUEUED_WHERE = f"status = '{Status.QUEUED.value}'"
QUEUE_INDEX = "ix_order_intents_queue"
# Reads asked every second (or per orderbook) that SQLite otherwise answered by reading every intent of the account
# (or of the table): the account's intents in given statuses (db/broker_orders.py INFLIGHT_SQL), and conversions left
# 'modifying' (db/conversions.py left_modifying).
ACCOUNT_STATUS_INDEX = "ix_order_intents_account_status"
MODIFYING_INDEX = "ix_order_intents_modifying"
MODIFYING_WHERE = f"convert_state = '{ConvertState.MODIFYING.value}'"


class OrderIntent(Base):
    """An order we intend to place. Written before any network call; state machine in db/order_fsm.py."""
    __tablename__ = "order_intents"
    id: Mapped[int] = mapped_column(primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("strategy_runs.id"), nullable=True)
    execution_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    purpose: Mapped[str] = mapped_column(String(8), default="manual")  # entry | exit | manual
    source: Mapped[str] = mapped_column(String(16), default="ui")  # ui | risk | strategy
    priority: Mapped[int] = mapped_column(Integer, default=100)  # lower first (exits BUY legs = 0)
    strategy_tag: Mapped[str] = mapped_column(String(64), default="AlgoMirror")
    symbol: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(4))
    requested_qty: Mapped[int] = mapped_column(Integer)
    pricetype: Mapped[str] = mapped_column(String(8), default="MARKET")
    product: Mapped[str] = mapped_column(String(8), default="MIS")
    limit_price: Mapped[float] = mapped_column(Float, default=0.0)
    trigger_price: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(20), default=Status.QUEUED.value, index=True)
    status_reason: Mapped[str] = mapped_column(String(512), default="")
    broker_order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    broker_status: Mapped[str] = mapped_column(String(32), default="")
    broker_filled_qty: Mapped[int] = mapped_column(Integer, default=0)
    broker_avg_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    claimed_by: Mapped[str] = mapped_column(String(64), default="")
    reconcile_checks: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # indexed: the poller asks every second for the accounts with an intent updated in the last minute (db/intents.py
    # accounts_with_intents), which otherwise read the whole table
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # A LIMIT entry still working this many seconds after it was sent is modified to MARKET, once
    # (services/entry_convert.py); convert_state (db/vocab.ConvertState) records that one attempt.
    convert_after_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    convert_state: Mapped[str] = mapped_column(String(16), default="")
    __table_args__ = (
        UniqueConstraint("account_id", "broker_order_id", name="uq_intent_broker_order"),
        # One live exit per strategy leg: a second exit for the same position cannot be written while the first
        # may still fill (partially_filled included: its remainder is still working at the broker).
        Index("uq_one_inflight_exit", "execution_id", unique=True, sqlite_where=text(LIVE_EXIT_WHERE)),
        Index(QUEUE_INDEX, "account_id", "priority", "created_at", "id", sqlite_where=text(QUEUED_WHERE)),
        Index(ACCOUNT_STATUS_INDEX, "account_id", "status"),
        Index(MODIFYING_INDEX, "id", sqlite_where=text(MODIFYING_WHERE)),
    )


class OrderEvent(Base):
    """Append-only audit trail of intent transitions."""
    __tablename__ = "order_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    intent_id: Mapped[int] = mapped_column(ForeignKey("order_intents.id"), index=True)
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(16))  # ui|risk|dispatcher|poller|reconciler
    reason: Mapped[str] = mapped_column(String(512), default="")
    payload: Mapped[str] = mapped_column(Text, default="")
    ts_utc: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class BrokerOrder(Base):
    """Orderbook rows as reported by the broker (service-owned)."""
    __tablename__ = "broker_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    broker_order_id: Mapped[str] = mapped_column(String(64))
    intent_id: Mapped[int | None] = mapped_column(ForeignKey("order_intents.id"), nullable=True)
    external: Mapped[bool] = mapped_column(Boolean, default=False)
    symbol: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[int] = mapped_column(Integer)
    price: Mapped[float] = mapped_column(Float, default=0.0)
    trigger_price: Mapped[float] = mapped_column(Float, default=0.0)
    pricetype: Mapped[str] = mapped_column(String(8), default="")
    product: Mapped[str] = mapped_column(String(8), default="")
    order_status: Mapped[str] = mapped_column(String(32), default="")
    filled_qty: Mapped[int] = mapped_column(Integer, default=0)
    avg_price: Mapped[float] = mapped_column(Float, default=0.0)
    strategy_tag: Mapped[str] = mapped_column(String(64), default="")
    broker_timestamp: Mapped[str] = mapped_column(String(32), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("account_id", "broker_order_id", name="uq_broker_order"),)


class BrokerTrade(Base):
    __tablename__ = "broker_trades"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    trade_key: Mapped[str] = mapped_column(String(96))  # tradeid, or orderid+timestamp when absent
    broker_order_id: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[int] = mapped_column(Integer)
    average_price: Mapped[float] = mapped_column(Float)
    product: Mapped[str] = mapped_column(String(8), default="")
    trade_value: Mapped[float] = mapped_column(Float, default=0.0)
    broker_timestamp: Mapped[str] = mapped_column(String(32), default="")
    __table_args__ = (UniqueConstraint("account_id", "trade_key", name="uq_trade"),)


class Position(Base):
    __tablename__ = "positions"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    symbol: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(16))
    product: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    average_price: Mapped[float] = mapped_column(Float, default=0.0)
    ltp: Mapped[float] = mapped_column(Float, default=0.0)
    realized_pnl: Mapped[float] = mapped_column(Float, default=0.0)
    unrealized_pnl: Mapped[float] = mapped_column(Float, default=0.0)
    pnl: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("account_id", "symbol", "exchange", "product", name="uq_position"),)


class QuickStop(Base):
    """A Quick Order's stop-loss / target (db/stops.py; states db.vocab.StopStatus). Written by the ticket in the
    transaction of its entry intent, one per entry intent; the service arms it when the entry fills (levels from
    the average fill price, on the filled quantity) and writes its one exit intent in the transaction that moves it
    to 'triggered'."""
    __tablename__ = "quick_stops"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    entry_intent_id: Mapped[int] = mapped_column(ForeignKey("order_intents.id"), unique=True)
    client_order_id: Mapped[str] = mapped_column(String(40))  # the entry's
    symbol: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(16))
    product: Mapped[str] = mapped_column(String(8))
    side: Mapped[str] = mapped_column(String(4))  # the entry's action: BUY protects a long, SELL a short
    sl_mode: Mapped[str] = mapped_column(String(8), default="")  # db.vocab.StopMode, '' = no stop-loss
    sl_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    tp_mode: Mapped[str] = mapped_column(String(8), default="")  # '' = no target
    tp_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=StopStatus.PENDING.value, index=True)
    status_reason: Mapped[str] = mapped_column(String(256), default="")
    quantity: Mapped[int] = mapped_column(Integer, default=0)  # units protected: what the entry filled
    entry_price: Mapped[float | None] = mapped_column(Float, nullable=True)  # the entry's average fill price
    sl_level: Mapped[float | None] = mapped_column(Float, nullable=True)
    tp_level: Mapped[float | None] = mapped_column(Float, nullable=True)
    # a level crossed while the stored positionbook could not be trusted yet: latched until the exit is written
    hit_kind: Mapped[str] = mapped_column(String(16), default="")  # stop_loss | target
    hit_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    hit_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    exit_intent_id: Mapped[int | None] = mapped_column(ForeignKey("order_intents.id"), nullable=True)
    exit_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    armed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Holding(Base):
    __tablename__ = "holdings"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    symbol: Mapped[str] = mapped_column(String(64))
    exchange: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    average_price: Mapped[float] = mapped_column(Float, default=0.0)
    ltp: Mapped[float] = mapped_column(Float, default=0.0)
    pnl: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("account_id", "symbol", "exchange", name="uq_holding"),)


class Funds(Base):
    __tablename__ = "funds"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    available_cash: Mapped[float] = mapped_column(Float, default=0.0)
    used_margin: Mapped[float] = mapped_column(Float, default=0.0)
    realized_pnl: Mapped[float] = mapped_column(Float, default=0.0)
    unrealized_pnl: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class LatestPrice(Base):
    __tablename__ = "latest_prices"
    symbol: Mapped[str] = mapped_column(String(64), primary_key=True)
    exchange: Mapped[str] = mapped_column(String(16), primary_key=True)
    ltp: Mapped[float] = mapped_column(Float)
    bid: Mapped[float | None] = mapped_column(Float, nullable=True)
    ask: Mapped[float | None] = mapped_column(Float, nullable=True)
    volume: Mapped[float | None] = mapped_column(Float, nullable=True)
    oi: Mapped[float | None] = mapped_column(Float, nullable=True)
    oi_base: Mapped[float | None] = mapped_column(Float, nullable=True)  # the first OI seen on oi_base_day
    oi_base_day: Mapped[str] = mapped_column(String(10), default="")  # IST date, YYYY-MM-DD
    depth_json: Mapped[str] = mapped_column(Text, default="")
    tick_ts: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PnlSnapshot(Base):
    """Time series for charts: one row per account (run_id NULL) or per strategy run, per interval."""
    __tablename__ = "pnl_snapshots"
    id: Mapped[int] = mapped_column(primary_key=True)
    ts_utc: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("strategy_runs.id"), nullable=True)
    realized: Mapped[float] = mapped_column(Float, default=0.0)
    unrealized: Mapped[float] = mapped_column(Float, default=0.0)
    total: Mapped[float] = mapped_column(Float, default=0.0)
    tsl_peak: Mapped[float | None] = mapped_column(Float, nullable=True)
    tsl_stop: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_pnl_acct_run_ts", "account_id", "run_id", "ts_utc"),)


class RiskEvent(Base):
    __tablename__ = "risk_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("strategy_runs.id"), nullable=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    event_type: Mapped[str] = mapped_column(String(32))  # max_loss | max_profit | trailing_sl | exit_failed | ...
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    action: Mapped[str] = mapped_column(String(64), default="")
    exit_order_ids: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of client/broker order ids
    message: Mapped[str] = mapped_column(String(512), default="")
    ts_utc: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ts_ist: Mapped[str] = mapped_column(String(32), default="")
    # what an exit was decided on: JSON list of the run's legs with the price each was valued at (db/history.py)
    decided_on: Mapped[str] = mapped_column(Text, default="")


class DaySummary(Base):
    """One trading day's result per account (strategy '' = the whole account, every position the broker reported)
    and per (account, strategy) over that day's runs. Written at the end of the trading day and on demand,
    replaced (never duplicated) when written again for the same day (db/history.py)."""
    __tablename__ = "day_summaries"
    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[str] = mapped_column(String(10))  # the IST trading day, YYYY-MM-DD
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    strategy: Mapped[str] = mapped_column(String(64), default="")  # '' = the account as a whole
    realized: Mapped[float] = mapped_column(Float, default=0.0)
    unrealized: Mapped[float] = mapped_column(Float, default=0.0)
    total: Mapped[float] = mapped_column(Float, default=0.0)
    trades: Mapped[int] = mapped_column(Integer, default=0)  # account: broker fills; strategy: runs
    wins: Mapped[int] = mapped_column(Integer, default=0)
    losses: Mapped[int] = mapped_column(Integer, default=0)
    closed: Mapped[bool] = mapped_column(Boolean, default=False)  # written after the close of that day
    written_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("day", "account_id", "strategy", name="uq_day_summary"),)


class OptionChainSession(Base):
    __tablename__ = "option_chain_sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    underlying: Mapped[str] = mapped_column(String(32))
    exchange: Mapped[str] = mapped_column(String(16))
    expiry: Mapped[str] = mapped_column(String(16))
    symbols_json: Mapped[str] = mapped_column(Text, default="[]")  # filled by the service
    status: Mapped[str] = mapped_column(String(16), default=ChainStatus.REQUESTED.value)  # db/vocab.py
    message: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_heartbeat: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SquareOff(Base):
    """One time-based square-off: a product's positions closed at its time on one trading day (services/square_off.py).
    The row is the once-per-day latch: written 'running' before the first order, 'done' / 'incomplete' after."""
    __tablename__ = "square_offs"
    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[str] = mapped_column(String(10))  # the trading day, ISO (IST)
    product: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default=SquareOffStatus.RUNNING.value)  # db/vocab.py
    summary: Mapped[str] = mapped_column(String(1024), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    __table_args__ = (UniqueConstraint("day", "product", name="uq_square_off_day"),)


class StrategySchedule(Base):
    """A saved strategy's timed entry and exit (db/schedules.py, services/timed.py): IST times of day on trading
    days, the accounts (with their lots multipliers) the entry executes on, and whether it is on."""
    __tablename__ = "strategy_schedules"
    id: Mapped[int] = mapped_column(primary_key=True)
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id"), unique=True)
    entry_at: Mapped[str] = mapped_column(String(5), default="")  # HH:MM IST; '' = no timed entry
    exit_at: Mapped[str] = mapped_column(String(5), default="")  # HH:MM IST; '' = no timed exit
    accounts_json: Mapped[str] = mapped_column(Text, default="[]")  # [[account_id, multiplier], ...]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # the market clock's IST instant of the last save: a time already past then is due from the next trading day
    saved_at_ist: Mapped[str] = mapped_column(String(19), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class TimedFire(Base):
    """One timed action of one strategy on one trading day: the once-per-day latch. An entry's row is written in
    the same transaction as the runs (and their queued intents) it creates, or as the refusal; an exit's before
    its first exit ('exiting') and finished after ('exited')."""
    __tablename__ = "timed_fires"
    id: Mapped[int] = mapped_column(primary_key=True)
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id"))
    day: Mapped[str] = mapped_column(String(10))  # the trading day, ISO (IST)
    kind: Mapped[str] = mapped_column(String(8))  # db.vocab.TimedKind
    status: Mapped[str] = mapped_column(String(16), default=TimedState.ENTERED.value)  # db.vocab.TimedState
    run_ids_json: Mapped[str] = mapped_column(Text, default="[]")
    error: Mapped[str] = mapped_column(String(512), default="")
    fired_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    __table_args__ = (UniqueConstraint("strategy_id", "day", "kind", name="uq_timed_fire"),)


class ServiceHeartbeat(Base):
    __tablename__ = "service_heartbeat"
    component: Mapped[str] = mapped_column(String(32), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(32), default="ok")
    details_json: Mapped[str] = mapped_column(Text, default="{}")
    last_beat: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class BrokerCall(Base):
    """One HTTP call to an account's OpenAlgo gateway, as the service saw it (never the key): Service Health's
    per-account latency, error rate and recent calls. Kept for BROKER_CALLS_KEEP_H hours."""
    __tablename__ = "broker_calls"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    ts_utc: Mapped[datetime] = mapped_column(DateTime, index=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: no answer (network)
    duration_ms: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))  # broker.client.CALL_OUTCOMES
    error: Mapped[str] = mapped_column(String(300), default="")


class ServiceLog(Base):
    """Recent warnings/errors from the service, shown on the health page."""
    __tablename__ = "service_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    ts_utc: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    component: Mapped[str] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(String(1024))


class ControlCommand(Base):
    """Commands the UI asks the service to carry out (exit_run, refresh_account, ...)."""
    __tablename__ = "control_commands"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload_json: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(16), default=CommandStatus.QUEUED.value, index=True)  # db/vocab.py
    result: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class MarginCheck(Base):
    """The service's answer to a margin_check control command, one row per account: the broker's basket margin
    for the strategy at that account's multiplier (``plan_json``: the [symbol, action, quantity] it priced) and the
    account's available cash. ``error`` is set instead when the broker could not say."""
    __tablename__ = "margin_checks"
    id: Mapped[int] = mapped_column(primary_key=True)
    command_id: Mapped[int] = mapped_column(ForeignKey("control_commands.id"), index=True)
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    multiplier: Mapped[int] = mapped_column(Integer, default=1)
    plan_json: Mapped[str] = mapped_column(Text, default="[]")
    required: Mapped[float | None] = mapped_column(Float, nullable=True)
    available: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str] = mapped_column(String(256), default="")
    checked_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    ts_utc: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(32))  # ui | service | cli
    action: Mapped[str] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text, default="")


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Instrument(Base):
    """Symbol master cached by the service from OpenAlgo's /instruments (used by the UI for validation)."""
    __tablename__ = "instruments"
    symbol: Mapped[str] = mapped_column(String(64), primary_key=True)
    exchange: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), default="", index=True)
    expiry: Mapped[str] = mapped_column(String(16), default="")  # DD-MMM-YY; '' when expiry_mode is relative
    # fixed (the expiry above) | current_week | next_week | current_month | next_month (db/expiry_rules.py),
    # resolved from the listed expiries each time the strategy is executed
    expiry_mode: Mapped[str] = mapped_column(String(16), default="fixed")
    strike: Mapped[float] = mapped_column(Float, default=0.0)
    lotsize: Mapped[int] = mapped_column(Integer, default=1)
    instrumenttype: Mapped[str] = mapped_column(String(16), default="")
    tick_size: Mapped[float] = mapped_column(Float, default=0.05)
    freeze_qty: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ApiKey(Base):
    """A key of the local API (api/). Only its argon2 hash is kept; ``prefix`` (its first 8 characters, not
    secret) finds the row to verify against and tells keys apart on the page."""
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ApiRequest(Base):
    """The first answer to an acting API call, by its idempotency key: the same key again returns it and writes
    nothing. Written in the same transaction as the command rows the call wrote."""
    __tablename__ = "api_requests"
    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    idempotency_key: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("api_key_id", "idempotency_key", name="uq_api_request_key"),)


class WebhookRule(Base):
    """How an alert posted to /webhook/<token> becomes an action (db/webhooks.py). The token is kept as its
    SHA-256 only (a 192-bit random value: a fast exact-match hash is enough, and the webhook's latency budget
    has no room for argon2)."""
    __tablename__ = "webhook_rules"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # db.webhooks.RuleKind
    strategy_id: Mapped[int | None] = mapped_column(ForeignKey("strategies.id"), nullable=True)
    account_ids_json: Mapped[str] = mapped_column(Text, default="[]")
    default_action: Mapped[str] = mapped_column(String(8), default="")  # strategy rules: enter | exit | ''
    order_action: Mapped[str] = mapped_column(String(4), default="BUY")  # symbol-list rules
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    exchange: Mapped[str] = mapped_column(String(8), default="NSE")
    product: Mapped[str] = mapped_column(String(8), default="MIS")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class WebhookAlert(Base):
    """Every alert a rule received and what it did (db.vocab.AlertOutcome)."""
    __tablename__ = "webhook_alerts"
    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("webhook_rules.id"))
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    dedupe_key: Mapped[str] = mapped_column(String(80))
    body: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(String(512), default="")
    result_json: Mapped[str] = mapped_column(Text, default="{}")
    first_alert_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # a duplicate: the alert it repeats
    __table_args__ = (Index("ix_webhook_alert_dedupe", "rule_id", "dedupe_key"),)
