"""The order journal ("why did this happen"): one run's or one order's story from its audit rows (no Streamlit, no
DB). Input: db.history.order_timeline (order_events with their intent) and db.history.run_risk_events."""
from __future__ import annotations

import pandas as pd

from ui.format import rupees

TIMELINE_COLS = ["ts_utc", "what", "order", "detail"]
DECIDED_COLS = ["symbol", "action", "quantity", "entry_price", "ltp", "age_s", "valued_at", "leg_pnl"]


def _leg_pnl(action, qty, entry, price):
    if entry is None or price is None or qty is None:
        return None
    return (price - entry) * qty * (1 if action == "BUY" else -1)


def decided_on(rows: list) -> pd.DataFrame:
    """A risk event's ``decided_on`` ([symbol, action, qty, entry, ltp, age s, valued at] per leg) as a table, with
    each leg's P&L at the price it was valued at."""
    recs = [r[:7] for r in rows if isinstance(r, list) and len(r) >= 7]
    df = pd.DataFrame(recs, columns=DECIDED_COLS[:-1])
    df["leg_pnl"] = [_leg_pnl(a, q, e, v) for a, q, e, v in
                     zip(df["action"], df["quantity"], df["entry_price"], df["valued_at"], strict=True)]
    return df


def _risk_line(ev: dict) -> str:
    parts = [str(ev["event_type"])]
    if ev.get("value") is not None and not pd.isna(ev["value"]):
        parts.append(f"P&L {rupees(ev['value'], signed=True)}")
    if ev.get("threshold") is not None and not pd.isna(ev["threshold"]):
        parts.append(f"limit {rupees(ev['threshold'], signed=True)}")
    return " · ".join(parts)


def timeline(events: pd.DataFrame, risk: list[dict]) -> pd.DataFrame:
    """Risk events and order transitions in one time-ordered table: when, what, which order, detail."""
    rows = [dict(ts_utc=ev["ts_utc"], what=f"risk: {_risk_line(ev)}", order=", ".join(map(str, ev["exit_order_ids"])),
                 detail=ev["message"]) for ev in risk]
    for e in events.itertuples(index=False):
        rows.append(dict(ts_utc=e.ts_utc, what=f"{e.from_status} → {e.to_status} ({e.source})",
                         order=f"#{e.intent_id} {e.purpose} {e.action} {e.requested_qty} {e.symbol}",
                         detail=e.reason or (f"broker order {e.broker_order_id}" if e.broker_order_id else "")))
    df = pd.DataFrame(rows, columns=TIMELINE_COLS)
    if df.empty:
        return df
    df["ts_utc"] = pd.to_datetime(df["ts_utc"], errors="coerce", format="mixed")
    return df.sort_values("ts_utc", kind="stable").reset_index(drop=True)
