"""Plotly figure builders: DataFrame in, go.Figure out. One theme for every chart."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from ui.format import to_ist
from ui.payoff import net_premium_text

# The dark template is plotly's process default (set here) rather than a template= argument: plotly applies its
# default without re-validating the whole template, which halves the cost of every figure (33 -> 18 ms).
pio.templates.default = "plotly_dark"
THEME = dict(paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
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
    # x as IST milliseconds on a date axis: plotly sends a float array as base64 bytes, where datetimes go as one
    # ISO string per point per line (3/4 of a full day's figure, parsed again by the browser at every refresh)
    fig = _fig(title, yaxis_title="₹", hovermode="x unified", xaxis_type="date")
    if df.empty:
        fig.add_annotation(text="No P&L snapshots yet", showarrow=False)
        return fig
    wide = df.pivot_table(index="ts_utc", columns="account", values="total", aggfunc="last").sort_index().ffill()
    x = (to_ist(pd.Series(wide.index)) - pd.Timestamp(0)).dt.total_seconds().to_numpy() * 1000.0
    for acct in wide.columns:
        fig.add_trace(go.Scatter(x=x, y=wide[acct].values, name=str(acct), mode="lines", line=dict(width=1)))
    fig.add_trace(go.Scatter(x=x, y=wide.fillna(0).sum(axis=1).values, name="Total", mode="lines",
                             line=dict(width=3, color=BLUE)))
    return fig


def with_latest(series: pd.DataFrame, latest: pd.DataFrame) -> pd.DataFrame:
    """The bucketed history with each account's latest snapshot appended (when newer than its last point), so the
    chart's last point is the value the tiles show."""
    if latest.empty:
        return series
    cols = ["account_id", "account", "ts_utc", "realized", "unrealized", "total"]
    last = series.groupby("account_id")["ts_utc"].max() if not series.empty else pd.Series(dtype="datetime64[ns]")
    newer = latest[[pd.isna(last.get(a)) or t > last.get(a) for a, t in zip(latest["account_id"], latest["ts_utc"],
                                                                            strict=True)]]
    if newer.empty:
        return series
    return pd.concat([series[cols], newer[cols]], ignore_index=True) if not series.empty else newer[cols]


OTHER_POSITIONS = "Other positions"


def pnl_by_strategy(runs_today: pd.DataFrame, latest: pd.DataFrame) -> pd.DataFrame:
    """One bar per strategy (today's runs), plus what the accounts hold outside any run (Quick Order, orders placed
    outside the app): the account total minus the runs, so the bars add up to the Total P&L tile."""
    by = (runs_today.groupby("strategy", as_index=False)["pnl"].sum() if not runs_today.empty
          else pd.DataFrame(columns=["strategy", "pnl"]))
    by["pnl"] = by["pnl"].fillna(0.0).astype(float)
    if not latest.empty:
        other = float(latest["total"].sum()) - float(by["pnl"].sum())
        if abs(other) >= 0.005 or by.empty:
            by = pd.concat([by, pd.DataFrame({"strategy": [OTHER_POSITIONS], "pnl": [round(other, 2)]})],
                           ignore_index=True)
    return by


def strategy_bars(df: pd.DataFrame) -> go.Figure:
    """df: strategy, pnl (one row per strategy, 'Other positions' last)."""
    fig = _fig("P&L by strategy (₹)", yaxis_title="₹")
    if df.empty:
        fig.add_annotation(text="No P&L today", showarrow=False)
        return fig
    fig.add_trace(go.Bar(x=df["strategy"], y=df["pnl"], marker_color=[GREEN if v >= 0 else RED for v in df["pnl"]],
                         text=[_short_rupees(v) for v in df["pnl"]], textposition="auto"))
    return fig


def _short_rupees(v: float) -> str:
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v >= 1e7:
        return f"{sign}₹{v / 1e7:.2f} Cr"
    if v >= 1e5:
        return f"{sign}₹{v / 1e5:.2f} L"
    return f"{sign}₹{v:,.0f}"


def margin_bars(df: pd.DataFrame) -> go.Figure:
    """df: account, used_margin, available_cash. Each segment is labelled with its amount."""
    fig = _fig("Margin (₹)", barmode="stack", yaxis_title="₹")
    if df.empty:
        fig.add_annotation(text="No funds reported yet", showarrow=False)
        return fig
    fig.add_trace(go.Bar(x=df["account"], y=df["used_margin"], name="Used", marker_color=AMBER,
                         text=[_short_rupees(v) for v in df["used_margin"].fillna(0)], textposition="inside"))
    fig.add_trace(go.Bar(x=df["account"], y=df["available_cash"], name="Available", marker_color=GREEN,
                         text=[_short_rupees(v) for v in df["available_cash"].fillna(0)], textposition="inside"))
    return fig


def _limits(pnl: float, max_loss, max_profit) -> tuple[float, float]:
    """(-max_loss, max_profit) of a run; a missing limit becomes twice the current P&L (at least 1,000)."""
    fallback = max(abs(pnl) * 2, 1000.0)
    lo = -(max_loss if max_loss and not pd.isna(max_loss) else fallback)
    hi = max_profit if max_profit and not pd.isna(max_profit) else fallback
    return lo, hi


def limit_pct(value: float, lo: float, hi: float) -> float:
    """A P&L as % of the distance to its limit: -100 = at max loss, +100 = at max profit (clipped to +-120)."""
    pct = value / -lo * 100.0 if value < 0 else value / hi * 100.0
    return max(-120.0, min(120.0, pct))


def risk_distance(df: pd.DataFrame) -> go.Figure:
    """One row per run: where its P&L sits between max loss (-100 %) and max profit (+100 %), with the trailing
    stop as an amber tick. df: label, pnl, max_loss, max_profit, tsl_stop. One figure for any number of runs
    (a gauge per run cost a figure each: ~40 ms apiece on a small VM)."""
    fig = _fig("Risk distance: P&L as % of the way to its limit", height=90 + 34 * max(1, len(df)),
               xaxis=dict(range=[-125, 125], ticksuffix=" %", zeroline=True), yaxis=dict(autorange="reversed"),
               barmode="overlay", showlegend=False)
    if df.empty:
        fig.add_annotation(text="No active strategy runs", showarrow=False)
        return fig
    labels, pct, stops, stop_labels, text, colors = [], [], [], [], [], []
    for r in df.itertuples(index=False):
        lo, hi = _limits(float(r.pnl), r.max_loss, r.max_profit)
        labels.append(r.label)
        pct.append(limit_pct(float(r.pnl), lo, hi))
        text.append(f"₹{r.pnl:,.0f}  (limits ₹{lo:,.0f} / ₹{hi:,.0f})")
        colors.append(GREEN if r.pnl >= 0 else RED)
        if r.tsl_stop is not None and not pd.isna(r.tsl_stop):
            stops.append(limit_pct(float(r.tsl_stop), lo, hi))
            stop_labels.append(r.label)
    n = len(labels)
    fig.add_trace(go.Bar(y=labels, x=[100.0] * n, base=[-100.0] * n, orientation="h", hoverinfo="skip",
                         marker_color="rgba(231,76,60,0.15)", width=0.6))
    fig.add_trace(go.Bar(y=labels, x=[100.0] * n, base=[0.0] * n, orientation="h", hoverinfo="skip",
                         marker_color="rgba(46,204,113,0.15)", width=0.6))
    fig.add_trace(go.Scatter(y=labels, x=pct, mode="markers", name="P&L", text=text, hoverinfo="text+y",
                             marker=dict(symbol="diamond", size=13, color=colors)))
    if stops:
        fig.add_trace(go.Scatter(y=stop_labels, x=stops, mode="markers", name="Trailing stop", hoverinfo="x+y",
                                 marker=dict(symbol="line-ns-open", size=22, color=AMBER, line=dict(width=3))))
    return fig


def tsl_chart(df: pd.DataFrame, title: str = "Run P&L and trailing stop (₹)",
              events: pd.DataFrame | None = None) -> go.Figure:
    """df: ts_utc, total, tsl_peak, tsl_stop. ``events``: the run's risk events (ts_utc, event_type, value,
    threshold): each one with a value is drawn as a marker at the P&L it was decided on, and the P&L line is
    extended to it, so the chart shows the breach that caused the exit (snapshots are written every second and
    the breach tick usually falls after the last one). A short run's few points get markers."""
    fig = _fig(title, yaxis_title="₹", hovermode="x unified", yaxis_tickprefix="₹", yaxis_tickformat=",.0f")
    marks = (events[events["value"].notna()] if events is not None and not events.empty
             else pd.DataFrame(columns=["ts_utc", "event_type", "value", "threshold"]))
    if df.empty and marks.empty:
        fig.add_annotation(text="No snapshots for this run yet", showarrow=False)
        return fig
    line = df[["ts_utc", "total"]]
    if not marks.empty:
        line = pd.concat([line, marks[["ts_utc", "value"]].rename(columns={"value": "total"})], ignore_index=True)
    line = line.sort_values("ts_utc")
    mode = "lines+markers" if len(line) <= 30 else "lines"
    fig.add_trace(go.Scatter(x=to_ist(line["ts_utc"]), y=line["total"], name="P&L", mode=mode,
                             line=dict(color=BLUE, width=2), hovertemplate="₹%{y:,.2f}"))
    if not df.empty:
        x = to_ist(df["ts_utc"])
        fig.add_trace(go.Scatter(x=x, y=df["tsl_peak"], name="Peak", mode=mode, line=dict(color=GREEN, dash="dot"),
                                 hovertemplate="₹%{y:,.2f}"))
        fig.add_trace(go.Scatter(x=x, y=df["tsl_stop"], name="Stop", mode=mode, line=dict(color=RED, dash="dash"),
                                 hovertemplate="₹%{y:,.2f}"))
    if not marks.empty:
        fig.add_trace(go.Scatter(x=to_ist(marks["ts_utc"]), y=marks["value"], name="Risk event", mode="markers+text",
                                 marker=dict(color=RED, size=11, symbol="x"), text=list(marks["event_type"]),
                                 textposition="top center", hovertemplate="%{text}: ₹%{y:,.2f}"))
    return fig


def bucket_for_run(started, ended, now, max_points: int = 300) -> int:
    """Snapshot bucket (s) for one run's chart: 1 s for a run of a few minutes (a run that lived 3 s still gets its
    points), wider for a long one, at most ``max_points`` points."""
    if started is None or pd.isna(started):
        return 1
    end = ended if ended is not None and not pd.isna(ended) else now
    span = max(1.0, (pd.Timestamp(end) - pd.Timestamp(started)).total_seconds())
    return max(1, int(-(-span // max_points)))


def payoff_chart(spots: np.ndarray, expiry_pnl: np.ndarray, today_pnl: np.ndarray | None, spot: float,
                 breakevens: list[float] = (), max_loss: float | None = None, max_profit: float | None = None,
                 net_premium: float | None = None) -> go.Figure:
    """The payoff at expiry and today, with the run's max-loss / max-profit levels (where the risk manager would
    exit) and the basket's net credit (> 0: premium received) or debit in the title."""
    title = "Payoff (₹)"
    if net_premium is not None:
        title += f" · {net_premium_text(net_premium)}"
    fig = _fig(title, xaxis_title="Underlying", yaxis_title="₹", hovermode="x unified")
    if max_loss:
        fig.add_hline(y=-abs(max_loss), line=dict(color=RED, width=1, dash="dash"),
                      annotation_text=f"max loss ₹{abs(max_loss):,.0f}")
    if max_profit:
        fig.add_hline(y=abs(max_profit), line=dict(color=GREEN, width=1, dash="dash"),
                      annotation_text=f"max profit ₹{abs(max_profit):,.0f}")
    fig.add_trace(go.Scatter(x=spots, y=expiry_pnl, name="At expiry", line=dict(color=AMBER, width=2)))
    if today_pnl is not None:
        fig.add_trace(go.Scatter(x=spots, y=today_pnl, name="Today", line=dict(color=BLUE, dash="dash")))
    fig.add_hline(y=0, line=dict(color=GREY, width=1))
    fig.add_vline(x=spot, line=dict(color=GREY, dash="dot"), annotation_text=f"spot {spot:,.0f}")
    for b in breakevens:
        fig.add_vline(x=b, line=dict(color=GREEN, width=1, dash="dot"))
    return fig


def equity_curve(days: pd.DataFrame, title: str = "Equity curve (cumulative day P&L, ₹)") -> go.Figure:
    """days: ui.history.daily() (day, total, equity, drawdown). Equity line, day P&L bars, drawdown area."""
    fig = _fig(title, yaxis_title="₹", hovermode="x unified", barmode="overlay")
    if days.empty:
        fig.add_annotation(text="No day summaries yet", showarrow=False)
        return fig
    x = pd.to_datetime(days["day"])
    fig.add_trace(go.Bar(x=x, y=days["total"], name="Day P&L", opacity=0.5,
                         marker_color=[GREEN if v >= 0 else RED for v in days["total"]]))
    fig.add_trace(go.Scatter(x=x, y=days["drawdown"], name="Drawdown", fill="tozeroy", mode="lines",
                             line=dict(color=RED, width=1), fillcolor="rgba(231,76,60,0.2)"))
    fig.add_trace(go.Scatter(x=x, y=days["equity"], name="Equity", mode="lines+markers",
                             line=dict(color=BLUE, width=3)))
    return fig
