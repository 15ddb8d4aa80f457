"""Dashboard: P&L today (total + per account), per-strategy bars, margin, risk distance of active runs."""
import pandas as pd
import streamlit as st

from db import repo
from db.order_fsm import values
from db.run_fsm import UNFINISHED_RUN
from pages._common import init_page
from ui import charts
from config import parse_watchlist
from ui.widgets import pnl_metrics, watchlist_metrics

db, settings, health = init_page("Dashboard", ":material/monitoring:")
REFRESH = settings.ui.refresh_s
auto = st.sidebar.toggle("Auto-refresh", value=True, key="dashboard.auto")
DB_PATH = str(db.path)
RISK_ROWS = 20


@st.cache_resource(max_entries=4, show_spinner=False)
def pnl_history(path: str, since: str, bucket: int) -> repo.PnlHistory:
    """One in-memory history per (DB, day, bucket width), shared by every session and extended on each read."""
    return repo.PnlHistory(pd.Timestamp(since).to_pydatetime(), bucket)


WATCH = parse_watchlist(settings.service.watchlist)


@st.fragment(run_every=REFRESH if auto else None)
def pnl_today():
    """Tiles, the P&L chart and the strategy bars from ONE read of the latest snapshots: the chart's last point is
    the tiles' value and the bars add up to the Total tile, at every refresh."""
    watchlist_metrics(repo.watchlist(db, WATCH))
    latest = repo.pnl_latest(db)
    pnl_metrics(latest)
    since = repo.today_start_utc()
    # buckets sized to the span of today's data, not to the hours since midnight: a session that began a few
    # minutes ago is drawn in 10 s buckets
    bucket = repo.bucket_for(repo.pnl_first(db, since) or since)
    # the history is kept per bucket width; the latest snapshot of each account is appended, so the line ends at now
    df = charts.with_latest(pnl_history(DB_PATH, since.isoformat(), bucket).read(db), latest)
    st.plotly_chart(charts.pnl_lines(df), key="dashboard.pnl_chart", width="stretch")
    st.caption(f"{len(df):,} points · {bucket}s buckets (last snapshot of each bucket, then the latest)")
    runs = repo.runs(db)
    today = runs[runs["started_at"] >= pd.Timestamp(since)] if not runs.empty else runs
    left, right = st.columns(2)
    left.plotly_chart(charts.strategy_bars(charts.pnl_by_strategy(today, latest)), key="dashboard.strategy_bars",
                      width="stretch")
    right.plotly_chart(charts.margin_bars(repo.funds(db)), key="dashboard.margin", width="stretch")
    return runs


@st.fragment(run_every=REFRESH if auto else None)
def risk_distance():
    runs = repo.runs(db)
    active = runs[runs["status"].isin(values(UNFINISHED_RUN))] if not runs.empty else runs
    st.subheader("Risk distance (active runs)")
    if active.empty:
        st.caption("No active strategy runs.")
        return
    shown = active.head(RISK_ROWS).assign(label=lambda d: [f"#{r.id} {r.strategy} · {r.account}"
                                                           for r in d.itertuples(index=False)])
    st.plotly_chart(charts.risk_distance(shown), key="dashboard.risk_distance", width="stretch")
    if len(active) > RISK_ROWS:
        st.caption(f"{len(active) - RISK_ROWS} more active runs: see Risk Monitor.")


pnl_today()
risk_distance()
