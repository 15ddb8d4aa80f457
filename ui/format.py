"""Formats defined once: IST conversion, rupee / quantity / P&L columns for st.dataframe."""
from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import streamlit as st

IST_OFFSET = timedelta(hours=5, minutes=30)
MONEY_COLS = {"ltp", "bid", "ask", "price", "trigger_price", "limit_price", "avg_price", "average_price",
              "broker_avg_price", "trade_value", "available_cash", "used_margin", "max_loss", "max_profit",
              "trailing_sl", "threshold", "value", "entry_price", "exit_price", "strike", "sl_level", "tp_level",
              "valued_at", "required", "available", "shortfall"}
PNL_COLS = {"pnl", "realized", "unrealized", "total", "realized_pnl", "unrealized_pnl", "tsl_peak", "tsl_stop",
            "leg_pnl"}
QTY_COLS = {"quantity", "requested_qty", "filled_qty", "broker_filled_qty", "lotsize", "oi", "volume", "n", "trades",
            "wins", "losses", "runs", "days"}
TIME_COLS = {"ts_utc", "last_beat", "created_at", "updated_at", "sent_at", "tick_ts", "started_at", "exited_at",
             "last_checked_at", "processed_at", "last_heartbeat", "last_error_at", "written_at"}


def to_ist(value):
    """Naive UTC (datetime, Timestamp or Series) -> naive IST."""
    if value is None:
        return None
    if isinstance(value, pd.Series):
        return pd.to_datetime(value, errors="coerce") + IST_OFFSET
    if isinstance(value, (datetime, pd.Timestamp)):
        return value + IST_OFFSET
    return value


def ist_str(value, fmt: str = "%H:%M:%S") -> str:
    v = to_ist(value)
    if v is None or (isinstance(v, float)) or pd.isna(v):
        return "—"
    return v.strftime(fmt)


def rupees(v, signed: bool = False) -> str:
    if v is None or pd.isna(v):
        return "—"
    return f"{'+' if signed and v > 0 else ''}{'-' if v < 0 else ''}₹{abs(v):,.2f}"


def age_str(seconds) -> str:
    if seconds is None or pd.isna(seconds):
        return "never"
    s = float(seconds)
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def column_config(df: pd.DataFrame) -> dict:
    """column_config for every known column in ``df``."""
    cfg = {}
    for c in df.columns:
        if c in PNL_COLS or c in MONEY_COLS:
            cfg[c] = st.column_config.NumberColumn(c.replace("_", " "), format="₹ %.2f")
        elif c in QTY_COLS:
            cfg[c] = st.column_config.NumberColumn(c.replace("_", " "), format="%d")
        elif c in TIME_COLS:
            cfg[c] = st.column_config.DatetimeColumn(c.replace("_utc", "").replace("_", " ") + " (IST)",
                                                     format="DD MMM HH:mm:ss")
    return cfg


def localize(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with every UTC time column shifted to IST (for display only)."""
    out = df.copy()
    for c in out.columns:
        if c in TIME_COLS:
            out[c] = to_ist(out[c])
    return out


def table(df: pd.DataFrame, *, key: str | None = None, height: int | str = "auto", empty: str = "No rows yet.",
          **kwargs):
    """st.dataframe with IST times and ₹/qty formats; an explicit message when there are no rows."""
    if df is None or df.empty:
        st.caption(empty)
        return None
    cfg = {**column_config(df), **kwargs.pop("column_config", {})}
    return st.dataframe(localize(df), column_config=cfg, hide_index=True, key=key, height=height,
                        width="stretch", **kwargs)
