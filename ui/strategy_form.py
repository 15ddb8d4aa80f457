"""The strategy builder's pieces that need no database: the legs table (columns, defaults, which columns show),
the expiry choices, and the frame <-> rows conversions. The page (pages/strategies.py) wires them to db/.

Numeric cells carry no min / max / step: the grid would clamp or round a typed value without a word (100000
lots shown as 500, 0 ignored, 2.5 rounded). What is typed reaches db/strategy_specs, which refuses a bad value
with a message and saves nothing."""
from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

# the values of db.vocab.StopMode and db.vocab.ReentryMode (ui/ may not import db/: tests/ui/test_leg_stops_ui.py
# checks that they agree)
STOP_MODES = ("points", "pct")
REENTRY_MODES = ("same", "atm")

BASIC_COLUMNS = ["instrument", "action", "strike_mode", "offset", "strike", "lots"]
# each leg's own stops: SL / target in points or % of the leg's entry price, a trailing stop in points, and up to
# N re-entries after its stop (same strike or ATM re-resolved; optionally once the price is back at the entry)
STOP_COLUMNS = ["sl_mode", "sl_value", "tp_mode", "tp_value", "trail_points", "reentry_count", "reentry_mode",
                "reentry_wait"]
MORE_COLUMNS = ["target", "entry_type", "entry_offset", "entry_offset_pct", "convert_after_s", *STOP_COLUMNS]
LEG_DEFAULTS = dict(instrument="CE", action="SELL", strike_mode="ATM", offset=0, strike=None, lots=1, target=None,
                    entry_type="MARKET", entry_offset=0.0, entry_offset_pct=False, convert_after_s=0,
                    sl_mode=STOP_MODES[0], sl_value=None, tp_mode=STOP_MODES[0], tp_value=None,
                    trail_points=None, reentry_count=0, reentry_mode=REENTRY_MODES[0], reentry_wait=False)
RELATIVE_EXPIRIES = ["current_week", "next_week", "current_month", "next_month"]


def default_legs() -> pd.DataFrame:
    """A short straddle: SELL 1 CE ATM + SELL 1 PE ATM, MARKET entries."""
    return legs_frame([dict(LEG_DEFAULTS), dict(LEG_DEFAULTS, instrument="PE")])


def legs_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows of leg fields (a saved strategy's, or the defaults) as the editor's frame, every column present."""
    frame = pd.DataFrame([{k: r.get(k, v) for k, v in LEG_DEFAULTS.items()} for r in rows],
                         columns=list(LEG_DEFAULTS))
    return frame.astype({"offset": "float", "strike": "float", "lots": "float", "target": "float",
                         "entry_offset": "float", "convert_after_s": "float", "entry_offset_pct": "bool",
                         "sl_value": "float", "tp_value": "float", "trail_points": "float", "reentry_count": "float",
                         "reentry_wait": "bool"})


def frame_rows(df: pd.DataFrame) -> list[dict]:
    """The editor's frame as one dict per non-empty row (blank cells None), for db.strategy_specs.leg_from_row."""
    out = []
    for rec in df.dropna(how="all").to_dict("records"):
        out.append({k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in rec.items()})
    return out


def column_order(more: bool) -> list[str]:
    return BASIC_COLUMNS + (MORE_COLUMNS if more else [])


def leg_columns() -> dict:
    return {
        "instrument": st.column_config.SelectboxColumn("Instrument", options=["CE", "PE", "FUT"], required=True),
        "action": st.column_config.SelectboxColumn("Action", options=["BUY", "SELL"], required=True),
        "strike_mode": st.column_config.SelectboxColumn(
            "Strike", options=["ATM", "ITM", "OTM", "STRIKE", "PREMIUM", "DELTA"], required=True,
            help="ATM / ITM n / OTM n steps, a fixed strike, or the strike whose premium (₹) or |delta| is "
                 "closest to the target, from the chain's live prices at Execute"),
        "offset": st.column_config.NumberColumn("ITM/OTM steps", help="Strikes away from ATM (1-50)",
                                                format="plain"),
        "strike": st.column_config.NumberColumn("Fixed strike", format="plain"),
        "lots": st.column_config.NumberColumn("Lots", required=True, help="A whole number from 1 to 500",
                                              format="plain"),
        "target": st.column_config.NumberColumn("Premium ₹ / delta", format="plain",
                                                help="PREMIUM: rupees (e.g. 50); DELTA: 0-1 (e.g. 0.30)"),
        "entry_type": st.column_config.SelectboxColumn("Entry", options=["MARKET", "LIMIT"], required=True),
        "entry_offset": st.column_config.NumberColumn(
            "LIMIT offset", format="plain", help="LIMIT price = the leg's LTP + this (negative = below the LTP)"),
        "entry_offset_pct": st.column_config.CheckboxColumn("Offset in %"),
        "convert_after_s": st.column_config.NumberColumn(
            "→ MARKET after (s)", format="plain",
            help="A LIMIT entry still working after this many seconds is modified to MARKET, once (0 = stays LIMIT)"),
        "sl_mode": st.column_config.SelectboxColumn("SL in", options=list(STOP_MODES)),
        "sl_value": st.column_config.NumberColumn("Stop-loss", format="plain",
                                                  help="points or % of the leg's entry price; empty = none"),
        "tp_mode": st.column_config.SelectboxColumn("Target in", options=list(STOP_MODES)),
        "tp_value": st.column_config.NumberColumn("Target", format="plain",
                                                  help="points or % of the leg's entry price; empty = none"),
        "trail_points": st.column_config.NumberColumn("Trail (pts)", format="plain",
                                                      help="trailing stop: points from the leg's best price"),
        "reentry_count": st.column_config.NumberColumn("Re-entries", format="plain",
                                                       help="re-enter this leg after its stop, up to this many times"),
        "reentry_mode": st.column_config.SelectboxColumn("Re-enter at", options=list(REENTRY_MODES)),
        "reentry_wait": st.column_config.CheckboxColumn(
            "…when back at entry", help="re-enter only once the price is back at the first entry's level"),
    }


def expiry_dates(listed: list[str], today, keep: str | None = None) -> list[str]:
    """The listed expiries from today on (in the listed order), plus ``keep`` (a date) when it is not among them."""
    out = [e for e in listed if (d := _date(e)) is not None and d >= today]
    if keep and keep not in out:
        out.append(keep)
    return out


def _date(expiry: str):
    try:
        return datetime.strptime(expiry.title(), "%d-%b-%y").date()
    except (ValueError, AttributeError):
        return None


def expiry_label(value: str, resolved: dict[str, str], labels: dict) -> str:
    """'Current week (09-DEC-26)' for a relative mode (with the date it trades today), the date itself else."""
    if value in RELATIVE_EXPIRIES:
        when = resolved.get(value)
        return f"{labels[value]} ({when})" if when else f"{labels[value]} (none listed)"
    return value


def saved_frame(rows: list[dict]) -> pd.DataFrame:
    """The saved strategies table: name, underlying, expiry, legs, size (lots), product, limits, live runs."""
    cols = ["id", "name", "underlying", "expiry", "legs", "size", "product", "max_loss", "max_profit",
            "trailing_sl", "live_runs"]
    return pd.DataFrame(rows, columns=cols + [c for c in (rows[0] if rows else {}) if c not in cols])[cols]
