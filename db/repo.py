"""Read queries for the Streamlit pages. Every function opens a short read session and returns a pandas
DataFrame (empty, with the right columns, when there are no rows) or a small dict.

Times come back as naive UTC ``datetime64``; conversion to IST happens in ``ui/format.py`` only.
Heavy series (P&L snapshots) are downsampled in SQL: last row per (account/run, time bucket).
"""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import text

from db import Database
from db.clock import IST_OFFSET
from db.models import Strategy, utcnow
from db.order_fsm import sql_in
from db.run_fsm import ACTIVE_LEG, HOLDING_RUN, UNFINISHED_RUN
from db.strategies import OPTION_EXCHANGE, LegSpec, parse_expiry, resolve_legs

EPOCH = datetime(1970, 1, 1)
TS_FMT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime in SQLite: comparable as text
UNDERLYING_EXCHANGES = ("NSE_INDEX", "BSE_INDEX", "NSE", "BSE")
# Epoch seconds // bucket width, via julianday (faster than strftime('%s')); +0.5 ms absorbs float error.
BUCKET = "CAST(((julianday(ts_utc) - 2440587.5) * 86400 + 0.0005) / :b AS INTEGER)"
TIME_COLS = ("ts_utc", "last_beat", "created_at", "updated_at", "sent_at", "tick_ts", "started_at", "exited_at",
             "last_checked_at", "processed_at", "last_heartbeat", "bucket_ts")


def _ts(dt: datetime) -> str:
    return dt.strftime(TS_FMT)


def _df(db: Database, sql: str, params: dict | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    with db.read() as s:
        res = s.execute(text(sql), params or {})
        cols = list(res.keys())
        rows = [tuple(r) for r in res]  # plain tuples: pandas probes Row objects attribute by attribute (~10 us/row)
    df = pd.DataFrame(rows, columns=cols if rows or not columns else columns)
    for c in df.columns:
        if c in TIME_COLS:
            df[c] = pd.to_datetime(df[c], errors="coerce", format="mixed")
    return df


def _scalar(db: Database, sql: str, params: dict | None = None):
    with db.read() as s:
        return s.execute(text(sql), params or {}).scalar()


# ---- service health -------------------------------------------------------------------------------------------
def heartbeats(db: Database) -> pd.DataFrame:
    df = _df(db, "SELECT component, pid, status, details_json, last_beat FROM service_heartbeat ORDER BY component",
             columns=["component", "pid", "status", "details_json", "last_beat"])
    now = pd.Timestamp(utcnow())
    df["age_s"] = (now - df["last_beat"]).dt.total_seconds() if len(df) else pd.Series(dtype=float)
    return df


def service_state(db: Database, stale_s: float) -> dict:
    """{'up', 'orders_ok', 'age_s' (newest beat), 'stale' (components not alive)}. A component is not alive
    when its beat is older than ``stale_s`` or its status is 'stopped'/'down' (written at shutdown).
    Order entry needs the service up and the 'dispatcher' component (when it reports) alive."""
    with db.read() as s:  # plain rows, not a DataFrame: every page and every API entry asks this
        rows = s.execute(text("SELECT component, status, last_beat FROM service_heartbeat ORDER BY component")).all()
    if not rows:
        return {"up": False, "orders_ok": False, "age_s": None, "stale": []}
    now = utcnow()
    ages = {c: (now - pd.Timestamp(beat).to_pydatetime()).total_seconds() for c, _, beat in rows}
    dead = {c for c, status, _ in rows if ages[c] > stale_s or status in ("stopped", "down")}
    up = len(dead) < len(rows)
    return {"up": up, "orders_ok": up and "dispatcher" not in dead, "age_s": float(min(ages.values())),
            "stale": [c for c, _, _ in rows if c in dead]}


def queue_depths(db: Database) -> tuple[pd.DataFrame, pd.DataFrame]:
    intents = _df(db, "SELECT status, COUNT(*) AS n FROM order_intents GROUP BY status ORDER BY status",
                  columns=["status", "n"])
    cmds = _df(db, "SELECT kind, status, COUNT(*) AS n FROM control_commands GROUP BY kind, status "
                   "ORDER BY status, kind", columns=["kind", "status", "n"])
    return intents, cmds


def service_log(db: Database, limit: int = 200, min_level: str = "WARNING") -> pd.DataFrame:
    levels = ["ERROR", "CRITICAL"] if min_level == "ERROR" else ["WARNING", "ERROR", "CRITICAL"]
    return _df(db, "SELECT ts_utc, component, level, message FROM service_log WHERE level IN "
                   f"({','.join(repr(v) for v in levels)}) ORDER BY id DESC LIMIT :n", {"n": limit},
               ["ts_utc", "component", "level", "message"])


def alerts(db: Database, after_id: int = 0, limit: int = 100) -> pd.DataFrame:
    """Alerts the service raised (service_log rows of the alerts component), newest first; ``after_id``: only
    those newer than that row."""
    return _df(db, "SELECT id, ts_utc, message FROM service_log WHERE component = 'alerts' AND id > :after "
                   "ORDER BY id DESC LIMIT :n", {"after": int(after_id), "n": limit}, ["id", "ts_utc", "message"])


def last_flatten(db: Database) -> dict | None:
    """The newest flatten command: {'id', 'kind', 'status', 'result'} ('queued' while it runs)."""
    df = _df(db, "SELECT id, kind, status, result FROM control_commands WHERE kind IN ('flatten_all', "
                 "'flatten_account') ORDER BY id DESC LIMIT 1", columns=["id", "kind", "status", "result"])
    return None if df.empty else df.iloc[0].to_dict()


def command_outcome(db: Database, command_id: int) -> tuple[str, str] | None:
    """(status, result) of one control command (a row action's message follows it), None if there is none."""
    with db.read() as s:
        row = s.execute(text("SELECT status, result FROM control_commands WHERE id = :i"),
                        {"i": int(command_id)}).first()
    return None if row is None else (row[0], row[1] or "")


def control_commands(db: Database, limit: int = 50) -> pd.DataFrame:
    return _df(db, "SELECT id, kind, payload_json, status, result, created_at, processed_at FROM control_commands "
                   "ORDER BY id DESC LIMIT :n", {"n": limit},
               ["id", "kind", "payload_json", "status", "result", "created_at", "processed_at"])


# ---- accounts, funds, books -----------------------------------------------------------------------------------
def accounts(db: Database) -> pd.DataFrame:
    return _df(db, "SELECT id, name, broker, host_url, ws_url, is_primary, backup_order, is_active, status, "
                   "status_message, last_checked_at, trading_state, trading_reason, daily_max_loss, "
                   "daily_max_profit, daily_trailing, day_peak, day_peak_date FROM accounts "
                   "ORDER BY is_primary DESC, backup_order IS NULL, backup_order, id",
               columns=["id", "name", "broker", "host_url", "ws_url", "is_primary", "backup_order", "is_active",
                        "status", "status_message", "last_checked_at", "trading_state", "trading_reason",
                        "daily_max_loss", "daily_max_profit", "daily_trailing", "day_peak", "day_peak_date"])


def broker_health(db: Database, window_min: float = 15.0) -> pd.DataFrame:
    """Per account: status as the service last saw it (with its error and time), and over the last ``window_min``
    minutes of broker calls: calls, error rate, p50 / p99 latency, last error."""
    from db.broker_calls import call_stats  # the stats are computed in Python (percentiles)
    accts = accounts(db)
    with db.read() as s:
        stats = call_stats(s, window_min)
    cols = ["account", "status", "status_message", "last_checked_at", "calls", "error_rate", "p50_ms", "p99_ms",
            "last_error", "last_error_at"]
    rows = []
    for a in accts.itertuples():
        st_ = stats.get(int(a.id), {})
        rows.append((a.name, a.status, a.status_message, a.last_checked_at, st_.get("calls", 0),
                     st_.get("error_rate"), st_.get("p50_ms"), st_.get("p99_ms"), st_.get("last_error", ""),
                     st_.get("last_error_at")))
    df = pd.DataFrame(rows, columns=cols)
    df["last_error_at"] = pd.to_datetime(df["last_error_at"], errors="coerce")
    return df


def broker_calls(db: Database, limit: int = 50) -> pd.DataFrame:
    return _df(db, "SELECT c.ts_utc, a.name AS account, c.endpoint, c.http_status, c.duration_ms, c.outcome, c.error "
                   "FROM broker_calls c LEFT JOIN accounts a ON a.id = c.account_id ORDER BY c.id DESC LIMIT :n",
               {"n": limit}, ["ts_utc", "account", "endpoint", "http_status", "duration_ms", "outcome", "error"])


def account_names(db: Database) -> dict[int, str]:
    df = accounts(db)
    return dict(zip(df["id"].astype(int), df["name"], strict=True))


def _acct_filter(account_id: int | None, alias: str = "t") -> tuple[str, dict]:
    if account_id is None:
        return "", {}
    return f" AND {alias}.account_id = :acct", {"acct": int(account_id)}


def intents(db: Database, account_id: int | None = None, limit: int = 500) -> pd.DataFrame:
    where, p = _acct_filter(account_id)
    return _df(db, "SELECT t.id, t.created_at, a.name AS account, t.symbol, t.exchange, t.action, t.requested_qty, "
                   "t.pricetype, t.product, t.limit_price, t.trigger_price, t.status, t.status_reason, "
                   "t.broker_order_id, t.broker_status, t.broker_filled_qty, t.broker_avg_price, t.purpose, t.source, "
                   "t.client_order_id FROM order_intents t JOIN accounts a ON a.id = t.account_id WHERE 1=1"
               + where + " ORDER BY t.id DESC LIMIT :n", {**p, "n": limit})


def intent(db: Database, intent_id: int) -> dict | None:
    df = _df(db, "SELECT id, client_order_id, symbol, exchange, action, requested_qty, status, status_reason, "
                 "broker_order_id, broker_filled_qty, broker_avg_price, updated_at FROM order_intents WHERE id = :i",
             {"i": int(intent_id)})
    return None if df.empty else df.iloc[0].to_dict()


def broker_orders(db: Database, account_id: int | None = None, limit: int = 1000) -> pd.DataFrame:
    where, p = _acct_filter(account_id)
    return _df(db, "SELECT a.name AS account, t.broker_order_id, t.symbol, t.exchange, t.action, t.quantity, t.price, "
                   "t.trigger_price, t.pricetype, t.product, t.order_status, t.filled_qty, t.avg_price, t.external, "
                   "t.strategy_tag, t.broker_timestamp, t.updated_at FROM broker_orders t "
                   "JOIN accounts a ON a.id = t.account_id WHERE 1=1" + where + " ORDER BY t.id DESC LIMIT :n",
               {**p, "n": limit})


def trades(db: Database, account_id: int | None = None, limit: int = 1000) -> pd.DataFrame:
    where, p = _acct_filter(account_id)
    return _df(db, "SELECT a.name AS account, t.broker_order_id, t.symbol, t.exchange, t.action, t.quantity, "
                   "t.average_price, t.product, t.trade_value, t.broker_timestamp FROM broker_trades t "
                   "JOIN accounts a ON a.id = t.account_id WHERE 1=1" + where + " ORDER BY t.id DESC LIMIT :n",
               {**p, "n": limit})


def positions(db: Database, account_id: int | None = None) -> pd.DataFrame:
    where, p = _acct_filter(account_id)
    return _df(db, "SELECT a.name AS account, t.symbol, t.exchange, t.product, t.quantity, t.average_price, t.ltp, "
                   "t.realized_pnl, t.unrealized_pnl, t.pnl, t.updated_at, t.account_id FROM positions t "
                   "JOIN accounts a ON a.id = t.account_id WHERE 1=1" + where + " ORDER BY a.name, t.symbol", p)


def stops(db: Database, account_id: int | None = None, limit: int = 200) -> pd.DataFrame:
    """Quick Order stop-loss / target rows, newest first: the ones that may still act, then the rest."""
    where, p = _acct_filter(account_id)
    return _df(db, "SELECT t.id, a.name AS account, t.symbol, t.exchange, t.product, t.side, t.quantity, "
                   "t.entry_price, t.sl_level, t.tp_level, t.sl_mode, t.sl_value, t.tp_mode, t.tp_value, t.status, "
                   "t.status_reason, t.entry_intent_id, t.exit_intent_id, t.created_at, t.updated_at "
                   "FROM quick_stops t JOIN accounts a ON a.id = t.account_id WHERE 1=1" + where
               + " ORDER BY t.id DESC LIMIT :n", {**p, "n": limit})


def holdings(db: Database, account_id: int | None = None) -> pd.DataFrame:
    where, p = _acct_filter(account_id)
    return _df(db, "SELECT a.name AS account, t.symbol, t.exchange, t.quantity, t.average_price, t.ltp, t.pnl, "
                   "t.updated_at FROM holdings t JOIN accounts a ON a.id = t.account_id WHERE 1=1" + where
               + " ORDER BY a.name, t.symbol", p)


def funds(db: Database, account_id: int | None = None) -> pd.DataFrame:
    where, p = _acct_filter(account_id)
    return _df(db, "SELECT a.name AS account, t.available_cash, t.used_margin, t.realized_pnl, t.unrealized_pnl, "
                   "t.updated_at FROM funds t JOIN accounts a ON a.id = t.account_id WHERE 1=1" + where
               + " ORDER BY a.name", p,
               ["account", "available_cash", "used_margin", "realized_pnl", "unrealized_pnl", "updated_at"])


# ---- P&L series -----------------------------------------------------------------------------------------------
def pnl_accounts(db: Database, since: datetime, bucket_s: int, until: datetime | None = None) -> pd.DataFrame:
    """Per-account P&L (run_id NULL rows) since ``since`` (and before ``until``; naive UTC): the last snapshot of
    each bucket."""
    sql = ("SELECT p.account_id, a.name AS account, p.ts_utc, p.realized, p.unrealized, p.total FROM pnl_snapshots p "
           # account_id IN (...) lets SQLite seek the (account, run, ts) index per account instead of scanning
           # every snapshot ever written (bench_curves 'pages': 372-489 -> 225-280 ms at 250 days)
           "JOIN (SELECT MAX(id) AS id FROM pnl_snapshots WHERE account_id IN (SELECT id FROM accounts) "
           "AND run_id IS NULL AND ts_utc >= :since" + (" AND ts_utc < :until" if until is not None else "")
           + f" GROUP BY account_id, {BUCKET}) m ON m.id = p.id "
           "JOIN accounts a ON a.id = p.account_id ORDER BY p.ts_utc")
    params = {"since": _ts(since), "b": max(1, int(bucket_s))}
    if until is not None:
        params["until"] = _ts(until)
    return _df(db, sql, params, ["account_id", "account", "ts_utc", "realized", "unrealized", "total"])


class PnlHistory:
    """``pnl_accounts(db, since, bucket_s)`` kept in memory and extended on each read by the snapshots written since
    the last one, instead of grouping the whole day again (~130 ms for a full day of 10 accounts, each time the
    Dashboard's cache expired: the slow visits of bench_pages_browser).

    Buckets that ended more than ``SETTLE_S`` before now are final: the service writes each snapshot with the time
    it writes it, so nothing lands in them any more. Each read queries only the unsettled tail. The cut between the
    kept part and the tail is on a bucket boundary of the epoch, as the SQL's buckets are, so no bucket is split
    and the result equals the full query. Account names (and deletions) come from the accounts table at each read.
    One instance serves every Streamlit session (thread-safe)."""

    SETTLE_S = 120

    def __init__(self, since: datetime, bucket_s: int):
        self.since, self.bucket_s = since, max(1, int(bucket_s))
        self._lock = threading.Lock()
        self._kept: pd.DataFrame | None = None  # the settled buckets (rows before _upto); None: none yet
        self._upto = since
        self._top = 0  # the highest snapshot id at the last read

    def _cut(self) -> datetime:
        settled = utcnow() - timedelta(seconds=self.SETTLE_S)
        epoch = (settled - EPOCH).total_seconds()
        return EPOCH + timedelta(seconds=int(epoch // self.bucket_s) * self.bucket_s)

    def read(self, db: Database) -> pd.DataFrame:
        with self._lock:
            top = _scalar(db, "SELECT MAX(id) FROM pnl_snapshots") or 0
            if top < self._top:  # the table was emptied or the file replaced under the app: start again
                self._kept, self._upto = None, self.since
            self._top = top
            cut = self._cut()
            if cut > self._upto:
                more = pnl_accounts(db, self._upto, self.bucket_s, until=cut)
                if not more.empty:  # an empty frame's object columns would turn the kept numbers into objects
                    self._kept = more if self._kept is None else pd.concat([self._kept, more], ignore_index=True)
                self._upto = cut
            kept, upto = self._kept, self._upto
        tail = pnl_accounts(db, upto, self.bucket_s)
        if kept is None:
            return tail
        names = _df(db, "SELECT id, name FROM accounts").set_index("id")["name"]
        kept = kept[kept["account_id"].isin(names.index)].assign(account=lambda d: d["account_id"].map(names))
        if kept.empty:  # every account it held was deleted
            return tail
        return pd.concat([kept, tail], ignore_index=True) if not tail.empty else kept.reset_index(drop=True)


def pnl_latest(db: Database) -> pd.DataFrame:
    """Latest per-account snapshot (run_id NULL): one index seek per account (ix_pnl_acct_run_ts), not a scan of
    the day's snapshots (this runs on every refresh of the Dashboard tiles)."""
    return _df(db, "SELECT p.account_id, a.name AS account, p.ts_utc, p.realized, p.unrealized, p.total "
                   "FROM accounts a JOIN pnl_snapshots p ON p.id = (SELECT id FROM pnl_snapshots "
                   "WHERE account_id = a.id AND run_id IS NULL ORDER BY ts_utc DESC, id DESC LIMIT 1) "
                   "ORDER BY a.name",
               columns=["account_id", "account", "ts_utc", "realized", "unrealized", "total"])


def pnl_run(db: Database, run_id: int, bucket_s: int = 10) -> pd.DataFrame:
    sql = ("SELECT p.ts_utc, p.total, p.tsl_peak, p.tsl_stop FROM pnl_snapshots p "
           "JOIN (SELECT MAX(id) AS id FROM pnl_snapshots WHERE run_id = :r "
           f"GROUP BY {BUCKET}) m ON m.id = p.id ORDER BY p.ts_utc")
    return _df(db, sql, {"r": int(run_id), "b": max(1, int(bucket_s))}, ["ts_utc", "total", "tsl_peak", "tsl_stop"])


def pnl_first(db: Database, since: datetime) -> datetime | None:
    """The earliest account P&L snapshot since ``since`` (naive UTC): one index seek per account."""
    raw = _scalar(db, "SELECT MIN((SELECT ts_utc FROM pnl_snapshots WHERE account_id = a.id AND run_id IS NULL "
                      "AND ts_utc >= :since ORDER BY ts_utc LIMIT 1)) FROM accounts a", {"since": _ts(since)})
    return datetime.fromisoformat(raw) if raw else None


BUCKET_STEPS = (10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)


def bucket_for(since: datetime, max_points: int = 720) -> int:
    """Bucket width (s) so that a series since ``since`` has at most ``max_points`` points (min 10 s), from a short
    ladder of round widths: the width (and with it what PnlHistory keeps) changes a few times a day, not every
    ``max_points`` seconds."""
    span = max(1.0, (utcnow() - since).total_seconds())
    need = -(-span // max_points)
    return next((s for s in BUCKET_STEPS if s >= need), int(need))


# ---- strategies, runs, risk -----------------------------------------------------------------------------------
def runs(db: Database, active_only: bool = False, limit: int = 200, run_id: int | None = None) -> pd.DataFrame:
    """Strategy runs, newest first; ``run_id``: only that one."""
    where = f" WHERE r.status IN {sql_in(UNFINISHED_RUN)}" if active_only else " WHERE 1=1"
    if run_id is not None:
        where += " AND r.id = :run"
    return _df(db, "SELECT r.id, s.name AS strategy, a.name AS account, r.group_id, r.status, r.pnl, r.max_loss, "
                   "r.max_profit, r.trailing_sl, r.tsl_peak, r.tsl_stop, r.exit_reason, r.started_at, r.exited_at "
                   "FROM strategy_runs r JOIN strategies s ON s.id = r.strategy_id JOIN accounts a "
                   "ON a.id = r.account_id" + where + " ORDER BY r.id DESC LIMIT :n", {"n": limit, "run": run_id},
               ["id", "strategy", "account", "group_id", "status", "pnl", "max_loss", "max_profit", "trailing_sl",
                "tsl_peak", "tsl_stop", "exit_reason", "started_at", "exited_at"])


GREEK_LEG_COLS = ["run_id", "account", "strategy", "leg_no", "symbol", "action", "quantity", "kind", "strike", "expiry",
                  "ltp", "spot"]


def held_legs(db: Database) -> pd.DataFrame:
    """Every leg that holds units (entered / exiting) of a run that holds legs, with its instrument, its last price
    and its underlying's: what the Risk Monitor's greeks are computed from."""
    return _df(db, "SELECT e.run_id, a.name AS account, s.name AS strategy, e.leg_no, e.symbol, e.action, e.quantity, "
                   "i.instrumenttype AS kind, i.strike, i.expiry, p.ltp, u.ltp AS spot FROM executions e "
                   "JOIN strategy_runs r ON r.id = e.run_id JOIN strategies s ON s.id = r.strategy_id "
                   "JOIN accounts a ON a.id = e.account_id "
                   "LEFT JOIN instruments i ON i.symbol = e.symbol AND i.exchange = e.exchange "
                   "LEFT JOIN latest_prices p ON p.symbol = e.symbol AND p.exchange = e.exchange "
                   "LEFT JOIN latest_prices u ON u.symbol = s.underlying AND u.exchange = s.exchange "
                   f"WHERE e.status IN {sql_in(ACTIVE_LEG)} AND r.status IN {sql_in(HOLDING_RUN)} "
                   "ORDER BY e.run_id, e.leg_no, e.id", None, GREEK_LEG_COLS)


def run_intents(db: Database, run_ids: list[int]) -> pd.DataFrame:
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "account", "symbol", "action", "requested_qty", "status"])
    ids = ",".join(str(int(i)) for i in run_ids)
    return _df(db, "SELECT t.run_id, a.name AS account, t.purpose, t.symbol, t.action, t.requested_qty, t.status, "
                   "t.status_reason, t.broker_order_id, t.broker_filled_qty, t.broker_avg_price, t.updated_at "
                   f"FROM order_intents t JOIN accounts a ON a.id = t.account_id WHERE t.run_id IN ({ids}) "
                   "ORDER BY t.run_id, t.id")


def risk_events(db: Database, run_id: int | None = None, limit: int = 200) -> pd.DataFrame:
    where = " WHERE run_id = :r" if run_id is not None else ""
    df = _df(db, "SELECT id, ts_utc, run_id, account_id, event_type, threshold, value, action, exit_order_ids, "
                 "message FROM risk_events" + where + " ORDER BY id DESC LIMIT :n",
             {"r": run_id, "n": limit},
             ["id", "ts_utc", "run_id", "account_id", "event_type", "threshold", "value", "action",
              "exit_order_ids", "message"])
    df["exit_order_ids"] = [", ".join(map(str, _json_list(v))) for v in df["exit_order_ids"]]
    return df


def account_risk_events(db: Database, limit: int = 200) -> pd.DataFrame:
    """Risk events of no strategy run: account limits, the portfolio limit (no account), flattens, trading
    state changes. Newest first."""
    return _df(db, "SELECT e.id, e.ts_utc, coalesce(a.name, 'portfolio') AS account, e.event_type, e.threshold, "
                   "e.value, e.action, e.message FROM risk_events e LEFT JOIN accounts a ON a.id = e.account_id "
                   "WHERE e.run_id IS NULL ORDER BY e.id DESC LIMIT :n", {"n": limit},
               ["id", "ts_utc", "account", "event_type", "threshold", "value", "action", "message"])


def _json_list(raw) -> list:
    try:
        v = json.loads(raw or "[]")
    except (TypeError, ValueError):
        return [raw]
    return v if isinstance(v, list) else [v]


def strategies(db: Database) -> pd.DataFrame:
    """Saved strategies (deleted ones left out), newest first."""
    return _df(db, "SELECT s.id, s.name, s.underlying, s.exchange, s.expiry, s.expiry_mode, s.product, s.max_loss, "
                   "s.max_profit, s.trailing_sl, (SELECT COUNT(*) FROM strategy_legs l WHERE l.strategy_id = s.id) "
                   "AS legs FROM strategies s WHERE s.deleted_at IS NULL ORDER BY s.id DESC",
               columns=["id", "name", "underlying", "exchange", "expiry", "expiry_mode", "product", "max_loss",
                        "max_profit", "trailing_sl", "legs"])


# ---- instruments and prices -----------------------------------------------------------------------------------
def option_underlyings(db: Database) -> pd.DataFrame:
    """Names that have options: name, option exchange (NFO/BFO) and the underlying's own exchange."""
    df = _df(db, "SELECT DISTINCT name, exchange AS opt_exchange FROM instruments "
                 "WHERE instrumenttype IN ('CE','PE') AND name != '' ORDER BY name",
             columns=["name", "opt_exchange"])
    spot = _df(db, "SELECT symbol AS name, exchange FROM instruments WHERE exchange IN "
                   "('NSE_INDEX','BSE_INDEX','NSE','BSE')", columns=["name", "exchange"])
    spot_ex = {}
    for name, ex in zip(spot["name"], spot["exchange"], strict=True):
        if name not in spot_ex or ex.endswith("_INDEX"):
            spot_ex[name] = ex
    fallback = {v: k for k, v in OPTION_EXCHANGE.items() if k.endswith("_INDEX")}
    df["exchange"] = [spot_ex.get(n, fallback.get(o, "NSE_INDEX"))
                      for n, o in zip(df["name"], df["opt_exchange"], strict=True)]
    return df


def expiries(db: Database, name: str, opt_exchange: str, since=None) -> list[str]:
    """The underlying's option expiries, nearest first; ``since`` (a date) leaves out those before it."""
    df = _df(db, "SELECT DISTINCT expiry FROM instruments WHERE name = :n AND exchange = :e "
                 "AND instrumenttype IN ('CE','PE') AND expiry != ''", {"n": name, "e": opt_exchange}, ["expiry"])
    out = sorted(df["expiry"].tolist(), key=parse_expiry)
    return [e for e in out if since is None or parse_expiry(e).date() >= since]


def chain(db: Database, name: str, opt_exchange: str, expiry: str) -> pd.DataFrame:
    """Every CE/PE of one expiry with its latest price row (NULLs when the service has no tick yet)."""
    return _df(db, "SELECT i.symbol, i.exchange, i.strike, i.instrumenttype AS kind, i.lotsize, p.ltp, p.bid, p.ask, "
                   "p.oi, p.oi_base, p.volume, p.depth_json, p.tick_ts FROM instruments i LEFT JOIN latest_prices p "
                   "ON p.symbol = i.symbol AND p.exchange = i.exchange WHERE i.name = :n AND i.exchange = :e "
                   "AND i.expiry = :x AND i.instrumenttype IN ('CE','PE') ORDER BY i.strike",
               {"n": name, "e": opt_exchange, "x": expiry},
               ["symbol", "exchange", "strike", "kind", "lotsize", "ltp", "bid", "ask", "oi", "oi_base", "volume",
                "depth_json", "tick_ts"])


def watchlist(db: Database, keys: list[tuple[str, str]]) -> pd.DataFrame:
    """Latest price rows for (symbol, exchange) pairs, in the given order; missing ones have ltp NaN."""
    cols = ["symbol", "exchange", "ltp", "tick_ts"]
    if not keys:
        return pd.DataFrame(columns=cols)
    where = " OR ".join(f"(symbol = :s{i} AND exchange = :e{i})" for i in range(len(keys)))
    params = {k: v for i, (sym, ex) in enumerate(keys) for k, v in ((f"s{i}", sym), (f"e{i}", ex))}
    got = _df(db, f"SELECT symbol, exchange, ltp, tick_ts FROM latest_prices WHERE {where}", params, cols)
    order = pd.DataFrame(keys, columns=["symbol", "exchange"])
    out = order.merge(got, on=["symbol", "exchange"], how="left")
    now = pd.Timestamp(utcnow())
    out["age_s"] = (now - pd.to_datetime(out["tick_ts"])).dt.total_seconds()
    return out


def latest_price(db: Database, symbol: str, exchange: str) -> dict | None:
    df = _df(db, "SELECT symbol, exchange, ltp, bid, ask, volume, oi, depth_json, tick_ts FROM latest_prices "
                 "WHERE symbol = :s AND exchange = :e", {"s": symbol, "e": exchange})
    return None if df.empty else df.iloc[0].to_dict()


def search_instruments(db: Database, query: str, limit: int = 50) -> pd.DataFrame:
    """Prefix search on name or symbol (case-insensitive), tradable exchanges only."""
    q = "".join(c for c in (query or "").strip().upper() if c.isalnum() or c in "-&.")
    cols = ["symbol", "exchange", "name", "instrumenttype", "expiry", "strike", "lotsize", "tick_size"]
    if not q:
        return pd.DataFrame(columns=cols)
    return _df(db, "SELECT symbol, exchange, name, instrumenttype, expiry, strike, lotsize, tick_size FROM instruments "
                   "WHERE (symbol LIKE :p OR name LIKE :p) AND exchange NOT IN ('NSE_INDEX', 'BSE_INDEX') "
                   "ORDER BY (symbol = :q) DESC, length(symbol), symbol LIMIT :n",
               {"p": q + "%", "q": q, "n": limit}, cols)


def instrument(db: Database, symbol: str, exchange: str) -> dict | None:
    df = _df(db, "SELECT symbol, exchange, name, instrumenttype, expiry, strike, lotsize, tick_size, freeze_qty "
                 "FROM instruments WHERE symbol = :s AND exchange = :e", {"s": symbol, "e": exchange})
    return None if df.empty else df.iloc[0].to_dict()


def preview_legs(db: Database, underlying: str, exchange: str, expiry: str, legs: list[LegSpec],
                 expiry_mode: str = "fixed") -> list[dict]:
    """Resolve unsaved legs against the symbol master and the live prices (no writes), as Execute would now.
    Raises CommandError (e.g. no live price). Each row: leg fields + symbol, strike, quantity, ltp, the expiry
    traded (a relative mode resolved today), pricetype and limit_price."""
    from db.strategies import check_legs, leg_rows, strategy_expiry, underlying_ltp
    st = Strategy(name="preview", underlying=underlying, exchange=exchange, expiry=expiry, expiry_mode=expiry_mode)
    legs = check_legs(legs)
    st.legs = leg_rows(legs)
    with db.read() as s:
        ltp = underlying_ltp(s, st)
        traded = strategy_expiry(s, st)
        resolved = resolve_legs(s, st, ltp)
        out = []
        for leg, r in zip(legs, resolved, strict=True):
            row = s.execute(text("SELECT ltp FROM latest_prices WHERE symbol = :s AND exchange = :e"),
                            {"s": r.symbol, "e": r.exchange}).first()
            out.append(dict(kind=leg.instrument, action=r.action, symbol=r.symbol, exchange=r.exchange,
                            strike=r.strike, quantity=r.quantity, lots=leg.lots, ltp=row[0] if row else None,
                            spot=ltp, expiry=traded, pricetype=r.pricetype, limit_price=r.limit_price))
        return out


def today_start_utc() -> datetime:
    """Midnight IST today, as naive UTC."""
    ist_now = utcnow() + IST_OFFSET
    return ist_now.replace(hour=0, minute=0, second=0, microsecond=0) - IST_OFFSET
