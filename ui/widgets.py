"""Small Streamlit widgets shared by pages (rendering only: callers pass the data in)."""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import streamlit as st

from ui.format import age_str, rupees

SERVICE_DOWN = "Background service is not running — prices, orders and risk are stopped"
DISPATCHER_DOWN = "Order dispatcher is not running — order entry is disabled"


def service_banner(state: dict) -> None:
    """A plain error on every page when the heartbeat is missing or stale."""
    if not state["up"]:
        age = state.get("age_s")
        st.error(SERVICE_DOWN + (f" (last heartbeat {age_str(age)} ago)" if age is not None else
                                 " (no heartbeat recorded)"), icon=":material/error:")
    elif not state.get("orders_ok", True):
        st.error(DISPATCHER_DOWN, icon=":material/error:")


def health_badge(state: dict) -> None:
    """The service's state in one line, drawn where the caller is (the pages put it in the sidebar)."""
    if state["up"]:
        extra = f" · stale: {', '.join(state['stale'])}" if state.get("stale") else ""
        st.success(f"Service up · beat {age_str(state['age_s'])} ago{extra}")
    else:
        st.error("Service DOWN")


def watchlist_metrics(prices: pd.DataFrame) -> None:
    """One tile per watchlist symbol: last price and how old it is (a stale or missing price says so)."""
    if prices.empty:
        return
    cols = st.columns(len(prices))
    for col, r in zip(cols, prices.itertuples(index=False), strict=True):
        if pd.isna(r.ltp):
            col.metric(r.symbol, "—", "no price yet", delta_color="off", delta_arrow="off")
        else:
            col.metric(r.symbol, f"{r.ltp:,.2f}", f"{r.exchange} · {age_str(r.age_s)} ago", delta_color="off",
                       delta_arrow="off")


def pnl_metrics(latest: pd.DataFrame) -> None:
    """Total and per-account P&L tiles from the latest per-account snapshot."""
    if latest.empty:
        st.info("No P&L snapshots yet (the service writes them once accounts are connected).")
        return
    total = float(latest["total"].sum())
    tiles = [("Total P&L", rupees(total, signed=True), f"realized {rupees(latest['realized'].sum())}")]
    tiles += [(str(r.account), rupees(r.total, signed=True), f"U {rupees(r.unrealized)} / R {rupees(r.realized)}")
              for r in latest.itertuples(index=False)]
    # four to a row at Streamlit's own figure size: at six an account's "+₹12,345.70" was cut to "+₹12,3…" on a
    # 1400 px screen, and five fitted only with a smaller font from a style-only st.html, which a rerun redraws
    # after the tiles (a clipped figure for a moment, caught by the browser test in CI)
    per_row = 4
    for start in range(0, len(tiles), per_row):  # every account gets a tile
        cols = st.columns(per_row)
        for col, (label, value, detail) in zip(cols, tiles[start:start + per_row], strict=False):
            # the detail is a breakdown, not a change: no arrow (Streamlit would draw an up arrow on "U -₹50")
            col.metric(label, value, detail, delta_color="off", delta_arrow="off")


def account_picker(names: dict[int, str], key: str, label: str = "Account", all_label: str = "All accounts",
                   sidebar: bool = True):
    """Selectbox over account ids (None = all). Returns the chosen id or None."""
    where = st.sidebar if sidebar else st
    options = [None] + list(names)
    return where.selectbox(label, options, key=key, format_func=lambda i: all_label if i is None else names[i])


def status_chip(status: str, colors: Mapping[str, str]) -> str:
    """A coloured badge; ``colors`` maps a status to a Streamlit colour name (gray for any other)."""
    return f":{colors.get(status, 'gray')}-badge[{status}]"
