"""Quick Order stop-loss / target on screen: the ticket's preview line and the Positions page's table (pure: no
database, no service)."""
from __future__ import annotations

import pandas as pd

from ui.format import rupees

MODE_LABELS = {"points": "points", "pct": "%"}  # the ticket's selector: stored value -> label


def rule(mode: str, value) -> str:
    """'10 pts' / '2 %' / '—'."""
    if value is None or pd.isna(value) or not mode:
        return "—"
    return f"{value:g} %" if mode == "pct" else f"{value:g} pts"


def preview_line(action: str, ltp: float | None, sl: tuple[str, float | None, float | None],
                 tp: tuple[str, float | None, float | None]) -> str:
    """The ticket's preview of the stops: each (mode, value, level from the LTP)."""
    parts = []
    for name, (mode, value, level) in (("Stop-loss", sl), ("Target", tp)):
        if value is not None:
            parts.append(f"{name} {rule(mode, value)} → **{rupees(level) if level is not None else '—'}**")
    if not parts:
        return ""
    base = f"from the LTP {rupees(ltp)}" if ltp else "(no LTP yet)"
    return (" · ".join(parts) + f" {base}. The levels are set from the average fill price when the {action} "
            "fills, on the filled quantity; the service exits the position at MARKET when one is reached.")


def stops_view(df: pd.DataFrame) -> pd.DataFrame:
    """The Positions page's stop table: one rule column per level, the level in rupees beside it."""
    if df.empty:
        return df
    out = df.copy()
    out["stop_loss"] = [rule(m, v) for m, v in zip(out["sl_mode"], out["sl_value"], strict=True)]
    out["target"] = [rule(m, v) for m, v in zip(out["tp_mode"], out["tp_value"], strict=True)]
    return out[["id", "account", "symbol", "exchange", "product", "side", "quantity", "entry_price", "stop_loss",
                "sl_level", "target", "tp_level", "status", "status_reason", "exit_intent_id", "updated_at"]]
