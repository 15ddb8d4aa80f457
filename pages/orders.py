"""Positions & Orders: intents, broker orders, trades, positions, holdings and funds across accounts."""
import streamlit as st

from db import repo
from db.commands import enqueue_control
from pages._common import USER_ERRORS, init_page
from ui.format import table
from ui.stops import stops_view
from ui.widgets import account_picker

db, settings, health = init_page("Positions & Orders", ":material/receipt_long:")
names = repo.account_names(db)
acct = account_picker(names, key="orders.account_id")
auto = st.sidebar.toggle("Auto-refresh", value=True, key="orders.auto")

if st.sidebar.button("Refresh from broker", key="orders.refresh", disabled=not names):
    targets = [acct] if acct is not None else list(names)
    try:
        for a in targets:
            enqueue_control(db, "refresh_account", {"account_id": int(a)})
        st.sidebar.success(f"Refresh requested for {len(targets)} account(s).")
    except USER_ERRORS as exc:
        st.sidebar.error(str(exc))

if acct is not None:
    with st.sidebar.container(border=True):
        st.caption(f"Flatten {names.get(acct, acct)}: cancel its working orders, close every position it holds "
                   "at the broker, exit its strategy runs, then halt it.")
        sure = st.checkbox("Confirm flatten", key="orders.flatten_confirm")
        if st.button("Flatten this account", key="orders.flatten", disabled=not sure):
            try:
                cmd = enqueue_control(db, "flatten_account", {"account_id": int(acct)})
                st.sidebar.success(f"Flatten requested (command #{cmd}).")
            except USER_ERRORS as exc:
                st.sidebar.error(str(exc))


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def books():
    tabs = st.tabs(["Order intents", "Broker orders", "Trades", "Positions", "Holdings", "Funds"])
    with tabs[0]:
        df = repo.intents(db, acct)
        if not df.empty:
            statuses = sorted(df["status"].unique())
            pick = st.multiselect("Status", statuses, key="orders.status_filter")
            if pick:
                df = df[df["status"].isin(pick)]
        table(df, key="orders.intents", height=420, empty="No order intents yet.")
        with st.expander("Cancel a queued intent"):
            intent_id = st.number_input("Intent id", min_value=1, step=1, key="orders.cancel_id")
            if st.button("Request cancel", key="orders.cancel"):
                try:
                    enqueue_control(db, "cancel_intent", {"intent_id": int(intent_id)})
                    st.success(f"Cancel requested for intent {int(intent_id)}.")
                except USER_ERRORS as exc:
                    st.error(str(exc))
    with tabs[1]:
        table(repo.broker_orders(db, acct), key="orders.broker_orders", height=420,
              empty="No broker orders reported yet.")
    with tabs[2]:
        table(repo.trades(db, acct), key="orders.trades", height=420, empty="No trades yet.")
    with tabs[3]:
        df = repo.positions(db, acct)
        if not df.empty:
            st.metric("Positions P&L", f"₹{df['pnl'].sum():,.2f}")
        table(df, key="orders.positions", empty="No positions.")
        st.markdown("**Quick Order stop-loss / target**")
        table(stops_view(repo.stops(db, acct)), key="orders.stops",
              empty="No stop-loss or target set on a Quick Order.")
        with st.expander("Cancel a stop-loss / target (the position stays open)"):
            stop_id = st.number_input("Stop id", min_value=1, step=1, key="orders.stop_cancel_id")
            if st.button("Request cancel", key="orders.stop_cancel"):
                try:
                    enqueue_control(db, "cancel_stop", {"stop_id": int(stop_id)})
                    st.success(f"Cancel requested for stop {int(stop_id)}.")
                except USER_ERRORS as exc:
                    st.error(str(exc))
    with tabs[4]:
        table(repo.holdings(db, acct), key="orders.holdings", empty="No holdings.")
    with tabs[5]:
        table(repo.funds(db, acct), key="orders.funds", empty="No funds reported yet.")


books()
