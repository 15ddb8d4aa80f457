"""Positions & Orders: intents, broker orders, trades, positions, holdings and funds across accounts."""
import streamlit as st

from db import repo
from db.commands import enqueue_control
from pages._common import USER_ERRORS, init_page
from db.order_fsm import OPEN, Status, values
from db.vocab import LIVE_STOP
from ui.actions import first, flash, selected_row, show_flash
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
CANCELLABLE_HERE = {Status.QUEUED.value, *values(OPEN)}  # queued: withdrawn here; working: cancelorder at the broker


def intent_action(row: dict) -> None:
    iid = int(row["id"])
    what = f"#{iid} {row['action']} {row['requested_qty']} {row['symbol']} ({row['status']})"
    can = row["status"] in CANCELLABLE_HERE
    left, right = st.columns([3, 1])
    left.markdown(f"**Order {what}**" + ("" if can else f" — a '{row['status']}' order cannot be cancelled"))
    if right.button("Cancel order", key=f"orders.cancel.{iid}", disabled=not can, type="primary"):
        try:
            cmd = enqueue_control(db, "cancel_intent", {"intent_id": iid})
            flash("orders", "success", f"Cancel requested for order {what} (command #{cmd}).")
        except USER_ERRORS as exc:
            flash("orders", "error", f"Order {what} not cancelled: {exc}")
        st.rerun()


def stop_action(row: dict) -> None:
    sid = int(row["id"])
    live = row.get("status") in {s.value for s in LIVE_STOP}
    left, right = st.columns([3, 1])
    left.markdown(f"**Stop #{sid} on {row.get('symbol', '')} ({row.get('status', '')})**"
                  + ("" if live else " — it has already acted or ended"))
    if right.button("Cancel stop", key=f"orders.stop_cancel.{sid}", disabled=not live,
                    help="The position stays open, unprotected by this stop"):
        try:
            cmd = enqueue_control(db, "cancel_stop", {"stop_id": sid})
            flash("orders", "success", f"Cancel requested for stop #{sid} (command #{cmd}).")
        except USER_ERRORS as exc:
            flash("orders", "error", f"Stop #{sid} not cancelled: {exc}")
        st.rerun()


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def books():
    show_flash("orders")
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
            st.caption("Select an order's row to cancel it.")
        elif row is not None:
            intent_action(row)
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
        stops = first(stops_view(repo.stops(db, acct)), ["status", "id", "symbol", "side", "quantity"])
        ev = table(stops, key="orders.stops", empty="No stop-loss or target set on a Quick Order.",
                   on_select="rerun", selection_mode="single-row")
        stop = selected_row(ev, stops)
        if stop is not None:
            stop_action(stop)
    with tabs[4]:
        table(repo.holdings(db, acct), key="orders.holdings", empty="No holdings.")
    with tabs[5]:
        table(repo.funds(db, acct), key="orders.funds", empty="No funds reported yet.")


books()
