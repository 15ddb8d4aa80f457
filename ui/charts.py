"""Plotly figure builders: DataFrame in, go.Figure out. One theme for every chart."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ui.format import to_ist

THEME = dict(template="plotly_dark", paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
             font=dict(size=12), margin=dict(l=10, r=10, t=40, b=10), height=340,
             # legend on the right above the plot, so it never overlaps the title on the left
             legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1))
GREEN, RED, BLUE, GREY, AMBER = "#2ecc71", "#e74c3c", "#2e86de", "#7f8c8d", "#f39c12"


def _fig(title: str, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(**{**THEME, "title": title, **layout})
    return fig


def pnl_lines(df: pd.DataFrame, title: str = "P&L today (₹)") -> go.Figure:
    """df: account, ts_utc, total (bucketed). One line per account plus the summed total (forward-filled)."""
    fig = _fig(title, yaxis_title="₹", hovermode="x unified")
    if df.empty:
        fig.add_annotation(text="No P&L snapshots yet", showarrow=False)
        return fig
    wide = df.pivot_table(index="ts_utc", columns="account", values="total", aggfunc="last").sort_index().ffill()
    x = to_ist(pd.Series(wide.index))
    for acct in wide.columns:
        fig.add_trace(go.Scatter(x=x, y=wide[acct].values, name=str(acct), mode="lines", line=dict(width=1)))
    fig.add_trace(go.Scatter(x=x, y=wide.fillna(0).sum(axis=1).values, name="Total", mode="lines",
                             line=dict(width=3, color=BLUE)))
    return fig


def strategy_bars(df: pd.DataFrame) -> go.Figure:
    """df: strategy, pnl (one row per strategy)."""
    fig = _fig("P&L by strategy (₹)", yaxis_title="₹")
    if df.empty:
        fig.add_annotation(text="No strategy runs today", showarrow=False)
        return fig
    fig.add_trace(go.Bar(x=df["strategy"], y=df["pnl"], marker_color=[GREEN if v >= 0 else RED for v in df["pnl"]]))
    return fig


def margin_bars(df: pd.DataFrame) -> go.Figure:
    """df: account, used_margin, available_cash."""
    fig = _fig("Margin (₹)", barmode="stack", yaxis_title="₹")
    if df.empty:
        fig.add_annotation(text="No funds reported yet", showarrow=False)
        return fig
    fig.add_trace(go.Bar(x=df["account"], y=df["used_margin"], name="Used", marker_color=AMBER))
    fig.add_trace(go.Bar(x=df["account"], y=df["available_cash"], name="Available", marker_color=GREEN))
    return fig


def risk_gauge(title: str, pnl: float, max_loss: float | None, max_profit: float | None,
               tsl_stop: float | None = None) -> go.Figure:
    """P&L needle between -max_loss and +max_profit; the trailing stop is the threshold line."""
    lo = -(max_loss or max(abs(pnl) * 2, 1000.0))
    hi = max_profit or max(abs(pnl) * 2, 1000.0)
    gauge = dict(axis=dict(range=[lo, hi]), bar=dict(color=GREEN if pnl >= 0 else RED),
                 steps=[dict(range=[lo, 0], color="rgba(231,76,60,0.15)"), dict(range=[0, hi],
                                                                               color="rgba(46,204,113,0.15)")])
    if tsl_stop is not None and not pd.isna(tsl_stop):
        gauge["threshold"] = dict(line=dict(color=AMBER, width=3), thickness=0.8, value=tsl_stop)
    fig = go.Figure(go.Indicator(mode="gauge+number", value=pnl, title=dict(text=title, font=dict(size=13)),
                                 number=dict(prefix="₹", valueformat=",.0f"), gauge=gauge))
    fig.update_layout(**{**THEME, "height": 220, "margin": dict(l=20, r=20, t=50, b=10)})
    return fig


def tsl_chart(df: pd.DataFrame, title: str = "Run P&L and trailing stop (₹)") -> go.Figure:
    """df: ts_utc, total, tsl_peak, tsl_stop."""
    fig = _fig(title, yaxis_title="₹", hovermode="x unified")
    if df.empty:
        fig.add_annotation(text="No snapshots for this run yet", showarrow=False)
        return fig
    x = to_ist(df["ts_utc"])
    fig.add_trace(go.Scatter(x=x, y=df["total"], name="P&L", line=dict(color=BLUE, width=2)))
    fig.add_trace(go.Scatter(x=x, y=df["tsl_peak"], name="Peak", line=dict(color=GREEN, dash="dot")))
    fig.add_trace(go.Scatter(x=x, y=df["tsl_stop"], name="Stop", line=dict(color=RED, dash="dash")))
    return fig


def payoff_chart(spots: np.ndarray, expiry_pnl: np.ndarray, today_pnl: np.ndarray | None, spot: float,
                 breakevens: list[float] = ()) -> go.Figure:
    fig = _fig("Payoff (₹)", xaxis_title="Underlying", yaxis_title="₹", hovermode="x unified")
    fig.add_trace(go.Scatter(x=spots, y=expiry_pnl, name="At expiry", line=dict(color=AMBER, width=2)))
    if today_pnl is not None:
        fig.add_trace(go.Scatter(x=spots, y=today_pnl, name="Today", line=dict(color=BLUE, dash="dash")))
    fig.add_hline(y=0, line=dict(color=GREY, width=1))
    fig.add_vline(x=spot, line=dict(color=GREY, dash="dot"), annotation_text=f"spot {spot:,.0f}")
    for b in breakevens:
        fig.add_vline(x=b, line=dict(color=GREEN, width=1, dash="dot"))
    return fig
