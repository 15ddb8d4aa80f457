"""Risk Monitor: per strategy run thresholds, P&L, trailing stop over time, risk events, Exit now; the account and
portfolio limits' events."""
import pandas as pd
import streamlit as st

from db import repo
from db.commands import enqueue_control
from db.models import utcnow
from db.leg_exits import run_legs, working_priced_orders
from db.order_fsm import values
from db.run_fsm import LIVE_RUN, UNFINISHED_RUN
from pages._common import USER_ERRORS, init_page
from ui import charts
from ui.actions import flash, selected_row, show_flash
from ui.format import rupees, table
from ui.greeks import GREEKS, leg_greeks, net

db, settings, health = init_page("Risk Monitor", ":material/shield:")
ss = st.session_state
auto = st.sidebar.toggle("Auto-refresh", value=True, key="risk.auto")
SCOPES = {"today": "Today's runs (live and finished)", "live": "Runs in progress", "all": "All runs"}
scope = st.sidebar.radio("Show", list(SCOPES), format_func=SCOPES.get, key="risk.scope")


def scoped_runs() -> pd.DataFrame:
    """The runs the sidebar asks for: by default every run still in progress plus every run started today (so a
    run the risk manager exited a minute ago is still listed, with its reason)."""
    df = repo.runs(db, active_only=scope == "live")
    if scope == "today" and not df.empty:
        today = pd.Timestamp(repo.today_start_utc())
        df = df[df["status"].isin(values(UNFINISHED_RUN)) | (df["started_at"] >= today)
                | (df["exited_at"] >= today)]
    return df.reset_index(drop=True)


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def runs_table():
    df = scoped_runs()
    table(df.drop(columns=["group_id"]), key="risk.runs", empty={"today": "No strategy runs today.",
                                                                   "live": "No strategy runs in progress.",
                                                                   "all": "No strategy runs."}[scope])


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
all_runs = scoped_runs()
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
    events = repo.risk_events(db, run_id)
    bucket = charts.bucket_for_run(r["started_at"], r["exited_at"], utcnow())
    st.plotly_chart(charts.tsl_chart(repo.pnl_run(db, run_id, bucket), events=events), key="risk.tsl_chart",
                    width="stretch")
    st.markdown("**Risk events**")
    table(events, key="risk.events", empty="No risk events for this run.")


run_detail()

status = all_runs.loc[all_runs["id"] == run_id, "status"].iloc[0]
exitable = status in UNFINISHED_RUN


def _ask(kind: str, payload: dict, done: str) -> None:
    """Queue a control command; the outcome stays on screen (flash) across refreshes."""
    try:
        cmd = enqueue_control(db, kind, payload)
        flash("risk", "success", f"{done} (command #{cmd}); the service carries it out.")
    except USER_ERRORS as exc:
        flash("risk", "error", f"{done.split(' requested')[0]} refused: {exc}")
    st.rerun()


def leg_actions(run_id: int, live: bool) -> None:
    """Per leg of the run: Close leg (at market, the other legs stay) and Roll (close, then open another strike /
    expiry, BUY orders first), each behind a confirmation."""
    legs = pd.DataFrame(run_legs(db, run_id))
    st.markdown("**Leg actions** (select a leg)")
    ev = table(legs, key="risk.legs", empty="No legs.", on_select="rerun", selection_mode="single-row")
    row = selected_row(ev, legs)
    if row is None:
        return
    leg_no, held = int(row["leg_no"]), live and int(row["held"]) > 0
    with st.container(border=True):
        st.markdown(f"**Leg {leg_no}: {row['action']} {row['held']} {row['symbol']}** ({row['state']})"
                    + ("" if held else " — nothing held in a live run: no action"))
        sure = st.checkbox("Confirm the leg action", key=f"risk.leg_confirm.{run_id}.{leg_no}", disabled=not held)
        c1, c2, c3, c4 = st.columns([1, 1, 1, 1])
        if c1.button("Close leg", key="risk.close_leg", disabled=not (held and sure), type="primary"):
            _ask("close_leg", {"run_id": run_id, "leg_no": leg_no}, f"Close of leg {leg_no} requested")
        how = c2.selectbox("Roll to", ["strikes away", "strike"], key="risk.roll_how")
        value = c3.number_input("Strikes (+ higher) / strike", value=1.0, step=1.0, key="risk.roll_value")
        expiry = c4.text_input("Expiry (DD-MMM-YY, empty = same)", key="risk.roll_expiry")
        if st.button("Roll…", key="risk.roll_leg", disabled=not (held and sure)):
            payload = {"run_id": run_id, "leg_no": leg_no}
            if how == "strike":
                payload["strike"] = float(value)
            else:
                payload["offset"] = int(value) if float(value).is_integer() else value
            if expiry.strip():
                payload["expiry"] = expiry.strip()
            _ask("roll_leg", payload, f"Roll of leg {leg_no} requested")


def order_actions() -> None:
    """LIMIT / SL orders working at the broker: a new price (modifyorder), behind a confirmation."""
    orders = pd.DataFrame(working_priced_orders(db))
    st.markdown("**Working LIMIT / SL orders** (select one to modify its price)")
    ev = table(orders, key="risk.working", empty="No LIMIT or SL order is working at a broker.", on_select="rerun",
               selection_mode="single-row")
    row = selected_row(ev, orders)
    if row is None:
        return
    iid = int(row["id"])
    with st.container(border=True):
        st.markdown(f"**Order #{iid}: {row['action']} {row['qty']} {row['symbol']} {row['pricetype']} "
                    f"@ {row['price']:g}**")
        c1, c2 = st.columns(2)
        price = c1.number_input("New price", min_value=0.0, value=float(row["price"]), step=0.05,
                                key=f"risk.modify_price.{iid}")
        sure = c2.checkbox("Confirm the new price", key=f"risk.modify_confirm.{iid}")
        if st.button("Modify price", key="risk.modify", disabled=not sure):
            _ask("modify_order", {"intent_id": iid, "price": float(price)}, f"Price change of order #{iid} requested")


show_flash("risk")
leg_actions(int(run_id), status in LIVE_RUN)
order_actions()
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
