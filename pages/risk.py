"""Risk Monitor: per strategy run thresholds, P&L, trailing stop over time, risk events, Exit now; the account and
portfolio limits' events."""
import pandas as pd
import streamlit as st

from db import repo
from db.commands import enqueue_control
from db.models import utcnow
from db.run_fsm import UNFINISHED_RUN
from pages._common import USER_ERRORS, init_page
from ui import charts
from ui.format import rupees, table
from ui.greeks import GREEKS, leg_greeks, net

db, settings, health = init_page("Risk Monitor", ":material/shield:")
ss = st.session_state
auto = st.sidebar.toggle("Auto-refresh", value=True, key="risk.auto")
show_all = st.sidebar.toggle("Include finished runs", value=False, key="risk.show_all")


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def runs_table():
    df = repo.runs(db, active_only=not show_all)
    table(df.drop(columns=["group_id"]), key="risk.runs", empty="No strategy runs" +
          ("." if show_all else " in progress."))


runs_table()


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def account_events():
    with st.expander("Account and portfolio events (daily limits, trailing stops, flattens, halts)", expanded=True):
        table(repo.account_risk_events(db, limit=100), key="risk.account_events",
              empty="No account or portfolio events.")


account_events()


def _greeks_table(df: pd.DataFrame, cols: list[str], key: str) -> None:
    shown = df[cols + GREEKS].copy()
    shown[GREEKS] = shown[GREEKS].round({"delta": 2, "gamma": 4, "theta": 0, "vega": 0})
    table(shown, key=key)


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def greeks_panel():
    st.markdown("**Greeks** of the legs held (Black-Scholes at each leg's implied volatility; Δ in units of the "
                "underlying, Θ ₹/day, Vega ₹ per 1 % vol)")
    g = leg_greeks(repo.held_legs(db), utcnow())
    ss["risk.greeks"] = g
    if g.empty:
        st.caption("No legs held.")
        return
    tot = net(g).iloc[0]
    m = st.columns(4)
    for col, name, label, fmt in zip(m, GREEKS, ["Net Δ", "Net Γ", "Net Θ (₹/day)", "Net Vega (₹/1%)"],
                                     ["{:,.1f}", "{:,.4f}", "{:,.0f}", "{:,.0f}"], strict=True):
        col.metric(label, fmt.format(tot[name]))
    if tot["unpriced"]:
        st.warning(f"{int(tot['unpriced'])} leg(s) without a price yet: left out of the sums.")
    a, b = st.columns(2)
    with a:
        _greeks_table(net(g, ["account"]), ["account"], "risk.greeks_accounts")
    with b:
        _greeks_table(net(g, ["run_id", "strategy", "account"]), ["run_id", "strategy", "account"], "risk.greeks_runs")


greeks_panel()
all_runs = repo.runs(db, active_only=not show_all)
if all_runs.empty:
    st.stop()
labels = {int(r.id): f"#{r.id} {r.strategy} · {r.account} ({r.status})" for r in all_runs.itertuples(index=False)}
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="risk.run_id")


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def run_detail():
    run = repo.runs(db)
    run = run[run["id"] == run_id]
    if run.empty:
        st.caption("Run not found.")
        return
    r = run.iloc[0]
    m = st.columns(5)
    m[0].metric("P&L", rupees(r["pnl"], signed=True))
    m[1].metric("Max loss", rupees(-r["max_loss"]) if pd.notna(r["max_loss"]) else "—")
    m[2].metric("Max profit", rupees(r["max_profit"]) if pd.notna(r["max_profit"]) else "—")
    m[3].metric("TSL peak", rupees(r["tsl_peak"]) if pd.notna(r["tsl_peak"]) else "—")
    m[4].metric("TSL stop", rupees(r["tsl_stop"]) if pd.notna(r["tsl_stop"]) else "—")
    if r["exit_reason"]:
        st.warning(f"Exit reason: {r['exit_reason']}")
    legs = ss.get("risk.greeks")
    if legs is not None and not legs.empty and (legs["run_id"] == run_id).any():
        st.markdown("**Legs** (position greeks)")
        _greeks_table(legs[legs["run_id"] == run_id].assign(iv=lambda d: d["iv"].round(2)),
                      ["leg_no", "symbol", "action", "quantity", "ltp", "iv"], "risk.greeks_legs")
    st.plotly_chart(charts.tsl_chart(repo.pnl_run(db, run_id)), key="risk.tsl_chart", width="stretch")
    st.markdown("**Risk events**")
    table(repo.risk_events(db, run_id), key="risk.events", empty="No risk events for this run.")


run_detail()

status = all_runs.loc[all_runs["id"] == run_id, "status"].iloc[0]
exitable = status in UNFINISHED_RUN
with st.container(border=True):
    st.markdown("**Exit now** closes every leg of this run at market (reduce-only).")
    sure = st.checkbox("Confirm exit", key="risk.exit_confirm", disabled=not exitable)
    if st.button("Exit now", key="risk.exit", type="primary", disabled=not (exitable and sure)):
        try:
            cmd = enqueue_control(db, "exit_run", {"run_id": int(run_id)})
            st.success(f"Exit requested (command #{cmd}); the risk manager will place the exit orders.")
        except USER_ERRORS as exc:
            st.error(str(exc))
    if not health["up"]:
        st.caption("The service is down: the exit will run when it restarts.")
