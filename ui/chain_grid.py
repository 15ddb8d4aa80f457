"""Option-chain grid: CE | strike | PE, ATM detection and IV (pure)."""
from __future__ import annotations

import json
from datetime import datetime

import pandas as pd

from ui.black_scholes import greeks, implied_vol, years_to_expiry

SIDE_COLS = ["oi", "oi_chg", "volume", "iv", "delta", "theta", "bid", "ask", "ltp"]


def atm_strike(strikes, spot: float | None) -> float | None:
    strikes = sorted(set(float(k) for k in strikes))
    if not strikes:
        return None
    if spot is None or pd.isna(spot):
        return strikes[len(strikes) // 2]
    return min(strikes, key=lambda k: abs(k - spot))


def build_grid(chain: pd.DataFrame, spot: float | None, expiry: str, now_utc: datetime,
               strikes_each_side: int = 20) -> tuple[pd.DataFrame, float | None]:
    """chain: symbol, strike, kind (CE/PE), ltp, bid, ask, oi and optionally volume, oi_base (the day's first
    OI). Returns (grid, atm) where grid has CE_<col> for SIDE_COLS, strike, PE_<col> in reverse order, CE_symbol,
    PE_symbol. IV is in percent, computed from the LTP with Black-Scholes (None when it cannot be solved); delta
    and theta (₹/day) are per unit at that IV; oi_chg is OI minus the day's first OI."""
    cols = [f"CE_{c}" for c in SIDE_COLS] + ["strike"] + [f"PE_{c}" for c in reversed(SIDE_COLS)]
    if chain.empty:
        return pd.DataFrame(columns=cols + ["CE_symbol", "PE_symbol"]), None
    atm = atm_strike(chain["strike"], spot)
    strikes = sorted(set(chain["strike"].astype(float)))
    i = strikes.index(atm)
    keep = set(strikes[max(0, i - strikes_each_side): i + strikes_each_side + 1])
    t = years_to_expiry(expiry, now_utc)
    rows: dict[float, dict] = {k: {"strike": k} for k in sorted(keep)}
    for r in chain.itertuples(index=False):
        k = float(r.strike)
        if k not in keep or r.kind not in ("CE", "PE"):
            continue
        iv = implied_vol(r.ltp, spot, k, t, r.kind) if spot and not pd.isna(r.ltp) else None
        g = greeks(spot, k, t, iv, r.kind) if iv else {}
        base = getattr(r, "oi_base", None)
        chg = r.oi - base if r.oi is not None and base is not None and not (pd.isna(r.oi) or pd.isna(base)) else None
        side = rows[k]
        side.update({f"{r.kind}_symbol": r.symbol, f"{r.kind}_ltp": r.ltp, f"{r.kind}_bid": r.bid,
                     f"{r.kind}_ask": r.ask, f"{r.kind}_oi": r.oi, f"{r.kind}_oi_chg": chg,
                     f"{r.kind}_volume": getattr(r, "volume", None),
                     f"{r.kind}_iv": round(iv * 100, 2) if iv else None,
                     f"{r.kind}_delta": round(g["delta"], 3) if g else None,
                     f"{r.kind}_theta": round(g["theta"], 2) if g else None})
    # one construction with the columns named (a missing key is None): adding absent columns one by one and
    # reordering after was most of this function's time
    return pd.DataFrame(list(rows.values()), columns=cols + ["CE_symbol", "PE_symbol"]), atm


LABELS = {"oi": "OI", "oi_chg": "OI chg", "volume": "Vol", "iv": "IV %", "delta": "Δ", "theta": "Θ/day",
          "bid": "Bid", "ask": "Ask", "ltp": "LTP"}
FORMATS = {"oi": "{:,.0f}", "oi_chg": "{:+,.0f}", "volume": "{:,.0f}", "iv": "{:.2f}", "delta": "{:+.3f}",
           "theta": "{:+.2f}", "bid": "{:,.2f}", "ask": "{:,.2f}", "ltp": "{:,.2f}"}
ITM_CELL = "background-color: rgba(241,196,15,0.16)"
ATM_ROW = "background-color: rgba(46,134,222,0.35); font-weight: bold"


def label(col: str) -> str:
    """'CE_oi_chg' -> 'CE OI chg', 'strike' -> 'Strike': the headers a trader reads."""
    if col == "strike":
        return "Strike"
    side, key = col.split("_", 1)
    return f"{side} {LABELS.get(key, key)}"


def display_grid(grid: pd.DataFrame, atm: float | None, spot: float | None):
    """The grid as a Styler with readable headers ('CE OI chg', 'Strike'), numeric columns (so a missing value is
    '—', never 'None'), integer strikes and OI, the ATM row highlighted and in-the-money cells shaded (calls below
    spot, puts above). Streamlit shows the frame's own column names, so the columns are renamed, not relabelled."""
    shown = grid.drop(columns=[c for c in ("CE_symbol", "PE_symbol") if c in grid.columns]).copy()
    for c in shown.columns:
        shown[c] = pd.to_numeric(shown[c], errors="coerce")
    fmt = {label(c): FORMATS.get(c.split("_", 1)[1], "{:,.2f}") for c in shown.columns if c != "strike"}
    fmt["Strike"] = "{:,.0f}"
    shown.columns = [label(c) for c in shown.columns]

    def style(row):
        k = row["Strike"]
        if atm is not None and k == atm:
            return [ATM_ROW] * len(row)
        itm_ce = spot is not None and k < spot
        itm_pe = spot is not None and k > spot
        return [ITM_CELL if (c.startswith("CE ") and itm_ce) or (c.startswith("PE ") and itm_pe) else ""
                for c in row.index]

    return shown.style.apply(style, axis=1).format(fmt, na_rep="—")


def picked_contract(grid: pd.DataFrame, cell) -> tuple[float, str] | None:
    """(strike, 'CE'|'PE') of a selected grid cell (row position, column label or name); None for the strike column
    or nothing selected."""
    if cell is None:
        return None
    row, col = cell
    if not isinstance(row, int) or row < 0 or row >= len(grid):
        return None
    col = str(col)
    side = col[:2] if col[:2] in ("CE", "PE") else None
    if side is None:
        return None
    return float(grid.iloc[row]["strike"]), side


def parse_depth(raw: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """depth_json {"buy": [{price, quantity, orders}], "sell": [...]} -> (bids, asks) DataFrames."""
    cols = ["price", "quantity", "orders"]
    try:
        d = json.loads(raw or "{}") or {}
    except (TypeError, ValueError):
        d = {}
    def side(name):
        rows = d.get(name) or [] if isinstance(d, dict) else []
        df = pd.DataFrame([r for r in rows if isinstance(r, dict)])
        for c in cols:
            if c not in df.columns:
                df[c] = None
        return df[cols]
    return side("buy"), side("sell")
