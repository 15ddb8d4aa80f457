"""Positions & Orders: intents, broker orders, trades, positions, holdings and funds across accounts; per row
Cancel / Modify (orders), Square off (positions), Cancel (Quick Order stops): pages/_row_actions.py."""
import streamlit as st

from db import repo
from db.commands import enqueue_control
from pages._common import USER_ERRORS, init_page
from pages._row_actions import intent_action, outcome_of, position_action, stop_action
from ui.actions import first, selected_row, show_flash
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


INTENT_FIRST = ["status", "purpose", "id", "account", "symbol", "action", "requested_qty", "broker_filled_qty",
                "pricetype", "limit_price", "status_reason"]


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def books():
    show_flash("orders", outcome_of(db))
    tabs = st.tabs(["Order intents", "Broker orders", "Trades", "Positions", "Holdings", "Funds"])
    with tabs[0]:
        df = first(repo.intents(db, acct), INTENT_FIRST)
        if not df.empty:
            statuses = sorted(df["status"].unique())
            pick = st.multiselect("Status", statuses, key="orders.status_filter")
            if pick:
                df = df[df["status"].isin(pick)].reset_index(drop=True)
        ev = table(df, key="orders.intents", height=420, empty="No order intents yet.", on_select="rerun",
                   selection_mode="single-row")
        row = selected_row(ev, df)
        if row is None and not df.empty:
            st.caption("Select an order's row to cancel it (or to modify a working LIMIT / SL order).")
        elif row is not None:
            intent_action(db, settings, row)
    with tabs[1]:
        table(repo.broker_orders(db, acct), key="orders.broker_orders", height=420,
              empty="No broker orders reported yet.")
    with tabs[2]:
        table(repo.trades(db, acct), key="orders.trades", height=420, empty="No trades yet.")
    with tabs[3]:
        df = repo.positions(db, acct)
        if not df.empty:
            st.metric("Positions P&L", f"₹{df['pnl'].sum():,.2f}")
        ev = table(df, key="orders.positions", empty="No positions.", on_select="rerun",
                   selection_mode="single-row")
        position = selected_row(ev, df)
        if position is None and not df.empty:
            st.caption("Select a position's row to square it off.")
        elif position is not None:
            position_action(db, position, health["up"])
        st.markdown("**Quick Order stop-loss / target**")
        stops = first(stops_view(repo.stops(db, acct)), ["status", "id", "symbol", "side", "quantity"])
        ev = table(stops, key="orders.stops", empty="No stop-loss or target set on a Quick Order.",
                   on_select="rerun", selection_mode="single-row")
        stop = selected_row(ev, stops)
        if stop is not None:
            stop_action(db, stop)
    with tabs[4]:
        table(repo.holdings(db, acct), key="orders.holdings", empty="No holdings.")
    with tabs[5]:
        table(repo.funds(db, acct), key="orders.funds", empty="No funds reported yet.")


books()
