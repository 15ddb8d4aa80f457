"""Versioned schema migration, run at start by both processes (idempotent; an up-to-date database is only read).

Version 1 creates every table from db/models.py. A later change appends a function to MIGRATIONS; each
runs once, in order, inside one write transaction, and records its number in schema_version. A step that
raises rolls the whole upgrade back: the database stays at its previous version, unchanged.
"""
from __future__ import annotations

from sqlalchemy import Connection, select

from db.engine import Store
from db.models import (ACCOUNT_STATUS_INDEX, LIVE_EXIT_WHERE, MODIFYING_INDEX, QUEUE_INDEX, ApiKey, ApiRequest,
                       Base, BrokerCall, DaySummary, MarginCheck, OrderIntent, PortfolioSettings, QuickStop,
                       SchemaVersion, SquareOff, StrategySchedule, TimedFire, WebhookAlert, WebhookRule)
from db.vocab import TradingState

ONE_EXIT_INDEX = "uq_one_inflight_exit"
UPDATED_INDEX = "ix_order_intents_updated_at"


class MigrationError(RuntimeError):
    """The database cannot be upgraded as it is; the message says which rows and what to do."""


def _v1(conn: Connection) -> None:
    Base.metadata.create_all(conn)


def _v2_one_live_exit_per_leg(conn: Connection) -> None:
    """Rebuild the one-exit-per-leg index from the FSM's live statuses (version 1 left out partially_filled).

    Two live exits for one leg are the very fault the index prevents: both orders may be working at the broker.
    Which one to keep is a question only the broker can answer, and rewriting either row (cancelling it, unlinking
    it from its leg) would make the database disagree with the broker and lose the fill accounting. So such rows
    stop the upgrade, naming them, instead of being "repaired" here."""
    rows = conn.exec_driver_sql(
        "SELECT execution_id, id, account_id, status, coalesce(broker_order_id, '') FROM order_intents "
        f"WHERE execution_id IS NOT NULL AND {LIVE_EXIT_WHERE} AND execution_id IN ("
        f"  SELECT execution_id FROM order_intents WHERE {LIVE_EXIT_WHERE} "
        "  GROUP BY execution_id HAVING count(*) > 1) ORDER BY execution_id, id").all()
    if rows:
        listed = "; ".join(f"execution {ex}: intent {i} (account {acct}, {st}, broker order {oid or '-'})"
                           for ex, i, acct, st, oid in rows)
        raise MigrationError(
            f"cannot upgrade the database to schema version 2: more than one live exit order for the same strategy "
            f"leg ({listed}). Both may be working at the broker: check them there, and let them settle (filled or "
            f"cancelled, e.g. with the previous release running) before starting this release. Nothing was changed.")
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {ONE_EXIT_INDEX}")
    next(i for i in OrderIntent.__table__.indexes if i.name == ONE_EXIT_INDEX).create(conn)


def _v3_account_trading_state(conn: Connection) -> None:
    """Accounts gain a trading state (active / reducing / halted, with its reason and time): the gate that denies
    new entries while always allowing exits. Every existing account starts 'active', as it traded before. A
    database created at version 1 by this release already has the columns (create_all follows the models)."""
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(accounts)")}
    for name, ddl in (("trading_state", f"VARCHAR(16) NOT NULL DEFAULT '{TradingState.ACTIVE}'"),
                      ("trading_reason", "VARCHAR(256) NOT NULL DEFAULT ''"),
                      ("trading_changed_at", "DATETIME")):
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE accounts ADD COLUMN {name} {ddl}")


def _v4_account_day_limits(conn: Connection) -> None:
    """Accounts gain daily max loss / max profit on their day P&L (None = no limit, as every account had)."""
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(accounts)")}
    for name in ("daily_max_loss", "daily_max_profit"):
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE accounts ADD COLUMN {name} FLOAT")


def _v5_broker_calls(conn: Connection) -> None:
    """Every broker call the service makes is recorded (endpoint, HTTP status, duration, outcome; never the key)."""
    BrokerCall.__table__.create(conn, checkfirst=True)


def _v6_trailing_and_portfolio_limits(conn: Connection) -> None:
    """Accounts gain a trailing amount on their day P&L and the day's peak (with its trading day); the portfolio
    (all accounts together) gets its own settings row table, with a daily max loss. Nothing is limited that was
    not before: every new value starts empty."""
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(accounts)")}
    for name, ddl in (("daily_trailing", "FLOAT"), ("day_peak", "FLOAT"), ("day_peak_date", "VARCHAR(10)")):
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE accounts ADD COLUMN {name} {ddl}")
    PortfolioSettings.__table__.create(conn, checkfirst=True)


def _v7_quick_stops(conn: Connection) -> None:
    """Quick Order stop-loss / target rows (quick_stops), and the time account sync last read an account's
    positionbook (the stops trust the stored book only once it is newer than their fills)."""
    QuickStop.__table__.create(conn, checkfirst=True)
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(accounts)")}
    if "positions_synced_at" not in have:
        conn.exec_driver_sql("ALTER TABLE accounts ADD COLUMN positions_synced_at DATETIME")


def _v8_local_api(conn: Connection) -> None:
    """The local API's tables: its keys (hashed), the idempotency records of its acting calls, webhook rules and
    the log of their alerts. New tables only; create_all skips those a version-1 database of this release has."""
    Base.metadata.create_all(conn, tables=[ApiKey.__table__, ApiRequest.__table__, WebhookRule.__table__,
                                           WebhookAlert.__table__])


def _v9_run_multiplier_and_margin_checks(conn: Connection) -> None:
    """Strategy runs gain a lots multiplier (1 for every existing run: it traded its legs' lots as saved), the
    margin_checks table holds the service's answers to margin_check commands, and latest_prices keeps the day's
    first OI (the option chain's change in OI)."""
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(strategy_runs)")}
    if "multiplier" not in have:
        conn.exec_driver_sql("ALTER TABLE strategy_runs ADD COLUMN multiplier INTEGER NOT NULL DEFAULT 1")
    MarginCheck.__table__.create(conn, checkfirst=True)
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(latest_prices)")}
    for name, ddl in (("oi_base", "FLOAT"), ("oi_base_day", "VARCHAR(10) NOT NULL DEFAULT ''")):
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE latest_prices ADD COLUMN {name} {ddl}")


def _v10_history(conn: Connection) -> None:
    """Day summaries (the History page's days), and what each risk exit was decided on (the Journal's prices)."""
    DaySummary.__table__.create(conn, checkfirst=True)
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(risk_events)")}
    if "decided_on" not in have:
        conn.exec_driver_sql("ALTER TABLE risk_events ADD COLUMN decided_on TEXT NOT NULL DEFAULT ''")


LEG_COLUMNS = (("sl_mode", "VARCHAR(8) NOT NULL DEFAULT ''"), ("sl_value", "FLOAT"),
               ("tp_mode", "VARCHAR(8) NOT NULL DEFAULT ''"), ("tp_value", "FLOAT"), ("trail_points", "FLOAT"),
               ("reentry_count", "INTEGER NOT NULL DEFAULT 0"), ("reentry_mode", "VARCHAR(8) NOT NULL DEFAULT 'same'"),
               ("reentry_wait", "BOOLEAN NOT NULL DEFAULT 0"))


def _v11_leg_stops(conn: Connection) -> None:
    """Strategy legs gain their own stop-loss / target / trailing stop and re-entry settings, and executions a copy
    of them (taken at execute) with the leg's re-entry attempt, the reference price a re-entry waits for, the best
    price since entry (trailing) and why the leg exited on its own. Every existing leg has none of them: off."""
    for table, extra in (("strategy_legs", ()),
                         ("executions", (("attempt", "INTEGER NOT NULL DEFAULT 0"), ("reentry_ref", "FLOAT"),
                                         ("leg_best", "FLOAT"), ("exit_kind", "VARCHAR(16) NOT NULL DEFAULT ''")))):
        have = {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")}
        for name, ddl in (*LEG_COLUMNS, *extra):
            if name not in have:
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}")


def _add_columns(conn: Connection, table: str, columns: tuple[tuple[str, str], ...]) -> None:
    have = {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")}
    for name, ddl in columns:
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}")


def _v12_reusable_strategies(conn: Connection) -> None:
    """Strategies gain an expiry mode (every saved one stays 'fixed' on its date) and a deleted mark; legs gain the
    premium / delta target and the entry order type (MARKET for every existing leg, as it traded); entry intents
    gain the LIMIT-to-MARKET conversion (none for every existing intent)."""
    _add_columns(conn, "strategies", (("expiry_mode", "VARCHAR(16) NOT NULL DEFAULT 'fixed'"),
                                      ("deleted_at", "DATETIME")))
    _add_columns(conn, "strategy_legs", (("target", "FLOAT"),
                                         ("entry_type", "VARCHAR(8) NOT NULL DEFAULT 'MARKET'"),
                                         ("entry_offset", "FLOAT NOT NULL DEFAULT 0"),
                                         ("entry_offset_pct", "BOOLEAN NOT NULL DEFAULT 0"),
                                         ("convert_after_s", "INTEGER NOT NULL DEFAULT 0")))
    _add_columns(conn, "order_intents", (("convert_after_s", "INTEGER"),
                                         ("convert_state", "VARCHAR(16) NOT NULL DEFAULT ''")))


def _v13_time_protection(conn: Connection) -> None:
    """Accounts gain ``trading_until`` (the day a halt lasts through, lifted on the next trading day: '' for every
    existing halt, as they all wait for a re-arm by hand), and the ``square_offs`` table (one row per trading day
    and product)."""
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(accounts)")}
    if "trading_until" not in have:
        conn.exec_driver_sql("ALTER TABLE accounts ADD COLUMN trading_until VARCHAR(10) NOT NULL DEFAULT ''")
    SquareOff.__table__.create(conn, checkfirst=True)


def _v14_positions_day(conn: Connection) -> None:
    """Accounts record the trading day their positionbook was last read on ('' = unknown: not today's, so the
    daily limits wait for the next read instead of trading on yesterday's realised P&L)."""
    have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(accounts)")}
    if "positions_day" not in have:
        conn.exec_driver_sql("ALTER TABLE accounts ADD COLUMN positions_day VARCHAR(10) NOT NULL DEFAULT ''")


def _v15_timed_strategies(conn: Connection) -> None:
    """Saved strategies gain a schedule (a timed entry and exit on trading days: ``strategy_schedules``, none for
    every existing strategy) and the once-per-day latch of each timed action (``timed_fires``)."""
    StrategySchedule.__table__.create(conn, checkfirst=True)
    TimedFire.__table__.create(conn, checkfirst=True)


def _create_intent_indexes(conn: Connection, *names: str) -> None:
    """These indexes of order_intents as db/models.py defines them, where missing."""
    for index in OrderIntent.__table__.indexes:
        if index.name in names:
            index.create(conn, checkfirst=True)


def _v16_queue_index(conn: Connection) -> None:
    """The per-account queue index (db.models QUEUE_INDEX): claiming an account's next order no longer reads every
    intent the account ever had."""
    _create_intent_indexes(conn, QUEUE_INDEX)


def _v17_intent_indexes(conn: Connection) -> None:
    """order_intents gains the indexes of reads made every second that read the whole table or an account's whole
    history: on updated_at (the poller's accounts with recently updated intents), on (account_id, status) (an
    account's in-flight intents), and on the conversions left 'modifying'."""
    _create_intent_indexes(conn, UPDATED_INDEX, ACCOUNT_STATUS_INDEX, MODIFYING_INDEX)


MIGRATIONS = [_v1, _v2_one_live_exit_per_leg, _v3_account_trading_state, _v4_account_day_limits, _v5_broker_calls,
              _v6_trailing_and_portfolio_limits, _v7_quick_stops, _v8_local_api,
              _v9_run_multiplier_and_margin_checks, _v10_history, _v11_leg_stops, _v12_reusable_strategies,
              _v13_time_protection, _v14_positions_day, _v15_timed_strategies, _v16_queue_index,
              _v17_intent_indexes]
LATEST = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    has = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").first()
    if not has:
        return 0
    return conn.execute(select(SchemaVersion.version).order_by(SchemaVersion.version.desc())).scalar() or 0


def migrate(store: Store) -> int:
    """Bring the database to LATEST; returns the version. Safe when two processes start at once.

    An up-to-date database (every start but the first) is only read: no write transaction. Otherwise the
    migration runs under the same write gate as every other writer: outside it, a process starting while the
    other writes back to back waits in SQLite's coarse busy handler for a gap, may not find one within
    busy_timeout, and dies at start with "database is locked" (the gate exists to prevent exactly that)."""
    engine = store.engine
    with engine.execution_options(algomirror_readonly=True).connect() as conn:
        version = current_version(conn)
    if version >= LATEST:
        return version
    with store.gated(), engine.begin() as conn:  # BEGIN IMMEDIATE: the second process waits, then sees the new version
        version = current_version(conn)
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            step(conn)
            conn.execute(SchemaVersion.__table__.insert().values(version=number))
            version = number
    return version
