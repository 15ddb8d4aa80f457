"""Accounts: add / edit / delete, API key entered once (never shown), test connection, feed order, active flag."""
import pandas as pd
import streamlit as st

from broker.client import OpenAlgoClient
from broker.errors import AuthError, BrokerError
from db import repo
from db.accounts import add_account, api_key_for, delete_account, set_status, update_account
from db.commands import enqueue_control
from db.clock import trading_day
from db.crypto import SecretError
from db.portfolio import day_pnl_by_account, get_portfolio_max_loss, set_portfolio_max_loss
from db.vocab import TradingState
from pages._common import USER_ERRORS, init_page
from ui.format import rupees, table

db, settings, health = init_page("Accounts", ":material/person:")


def ping(host_url: str, api_key: str) -> tuple[str, str, str]:
    """(status, message, broker) from OpenAlgo /api/v1/ping, 3 s timeout, no retries. Never echoes the key."""
    try:
        client = OpenAlgoClient(host_url, api_key, connect_timeout=3.0, read_timeout=3.0, retries=0,
                                sleep=lambda _s: None, name="test")
    except BrokerError as exc:
        return "unreachable", exc.message, ""
    try:
        data = client.ping()
        return "ok", str(data.get("message", "pong")), str(data.get("broker", ""))
    except AuthError as exc:
        return "invalid_key", exc.message, ""
    except BrokerError as exc:
        return "unreachable", exc.message, ""
    finally:
        client.close()


def notify_service():
    try:
        enqueue_control(db, "reload_accounts", {})
    except Exception:  # noqa: BLE001 - informative only; the service also reloads on its own schedule
        pass


def flash(msg: str, ok: bool = True):
    """A message for the next run, shown above the table (which that run draws with the new state)."""
    st.session_state["accounts.flash"] = (ok, msg)


flash_slot = st.empty()  # always present, so the elements below keep their place (and the tabs their selection)
if flashed := st.session_state.pop("accounts.flash", None):
    ok, msg = flashed
    (flash_slot.success if ok else flash_slot.error)(msg)

df = repo.accounts(db)
table(df.drop(columns=["ws_url", "day_peak", "day_peak_date"]), key="accounts.table",
      empty="No accounts yet: add one below.")

with st.container(border=True):  # the portfolio: every account together
    limit = get_portfolio_max_loss(db)
    by_account = day_pnl_by_account(db)
    total = sum(p for _, _, p in by_account)
    m1, m2 = st.columns(2)
    m1.metric("Portfolio day P&L (all accounts)", rupees(total, signed=True),
              help="Sum of every account's day P&L (its positions at the broker today, realised + unrealised)")
    m2.metric("Portfolio daily max loss", rupees(-limit) if limit else "none")
    st.caption("When the day P&L of all accounts together reaches the limit, every account is halted and "
               "flattened (one risk event, an alert); re-arm each account on its own afterwards.")
    with st.form("accounts.portfolio_form", clear_on_submit=True):
        new_limit = st.text_input("Portfolio daily max loss (₹, greater than 0)", key="accounts.portfolio.loss",
                                  placeholder=f"{limit:,.0f}" if limit else "e.g. 25000")
        if st.form_submit_button("Save portfolio limit", key="accounts.portfolio.submit"):
            try:
                saved = set_portfolio_max_loss(db, new_limit.replace(",", "").replace("₹", "").strip())
                flash(f"Portfolio daily max loss set to ₹{saved:,.0f}.")
                st.rerun()
            except USER_ERRORS as exc:
                st.error(str(exc))
    if limit:
        r1, r2 = st.columns([3, 1])
        sure_rm = r1.checkbox("Yes, remove the portfolio limit", key="accounts.portfolio.remove_confirm")
        if r2.button("Remove", key="accounts.portfolio.remove", disabled=not sure_rm):
            try:
                set_portfolio_max_loss(db, None)
                flash("Portfolio daily max loss removed: no limit on all accounts together.")
                st.rerun()
            except USER_ERRORS as exc:
                st.error(str(exc))
names = dict(zip(df["id"].astype(int), df["name"], strict=True))

tab_add, tab_edit = st.tabs(["Add account", "Edit / test / delete"])
with tab_add:
    with st.form("accounts.add_form", clear_on_submit=True):
        c1, c2 = st.columns(2)
        name = c1.text_input("Name", key="accounts.add.name", placeholder="e.g. zerodha-main")
        host = c1.text_input("OpenAlgo host URL", key="accounts.add.host", placeholder="http://127.0.0.1:5000")
        ws = c2.text_input("WebSocket URL", key="accounts.add.ws", placeholder="ws://127.0.0.1:8765")
        key = c2.text_input("API key", type="password", key="accounts.add.key",
                            help="Stored encrypted; it is never shown again.")
        primary = c1.checkbox("Primary feed account", key="accounts.add.primary")
        backup = c2.number_input("Backup order for the feed (0 = not a backup)", 0, 99, 0, key="accounts.add.backup")
        if st.form_submit_button("Add account", key="accounts.add.submit"):
            try:
                new_id = add_account(db, name, host, ws, key, is_primary=primary, backup_order=int(backup) or None)
                notify_service()
                flash(f"Account '{name.strip()}' added (id {new_id}). Use 'Test connection' to check it.")
                st.rerun()
            except USER_ERRORS as exc:
                st.error(str(exc))

with tab_edit:
    if not names:
        st.caption("No accounts yet.")
    else:
        acct_id = st.selectbox("Account", list(names), format_func=names.get, key="accounts.edit.id")
        row = df[df["id"] == acct_id].iloc[0]
        st.caption(f"Status: **{row['status']}** {row['status_message'] or ''}")
        b1, b2 = st.columns(2)
        if b1.button("Test connection", key="accounts.test"):
            try:
                status, message, broker = ping(row["host_url"], api_key_for(db, int(acct_id)))
            except SecretError as exc:
                status, message, broker = "invalid_key", f"stored key unreadable: {exc}; enter it again", ""
            set_status(db, int(acct_id), status, message, broker or None)
            flash(f"Connected: broker {broker} ({message})" if status == "ok" else f"{status}: {message}",
                  ok=status == "ok")
            st.rerun()  # redraw the table with the new status and broker
        if b2.button("Refresh from broker", key="accounts.refresh"):
            try:
                enqueue_control(db, "refresh_account", {"account_id": int(acct_id)})
                st.success("Refresh requested.")
            except USER_ERRORS as exc:
                st.error(str(exc))
        with st.container(border=True):
            state = row["trading_state"]
            st.markdown(f"**Trading:** {state}" + (f" — {row['trading_reason']}" if row["trading_reason"] else ""))
            st.caption("Halted or reducing: new entries are denied with this reason; exits are always sent.")
            t1, t2, t3, t4 = st.columns([2, 1, 1, 1])
            sure = t1.checkbox("Confirm", key=f"accounts.trading.confirm.{acct_id}")
            for col, kind, label, target in ((t2, "halt_account", "Halt", TradingState.HALTED),
                                             (t3, "reduce_account", "Exits only", TradingState.REDUCING),
                                             (t4, "rearm_account", "Re-arm", TradingState.ACTIVE)):
                if col.button(label, key=f"accounts.trading.{kind}", disabled=not sure or state == target):
                    try:
                        cmd = enqueue_control(db, kind, {"account_id": int(acct_id)})
                        flash(f"{label} requested for '{names[acct_id]}' (command #{cmd}).")
                        st.rerun()
                    except USER_ERRORS as exc:
                        st.error(str(exc))
        with st.form("accounts.edit_form", clear_on_submit=True):
            host = st.text_input("OpenAlgo host URL", value=row["host_url"], key=f"accounts.edit.host.{acct_id}")
            ws = st.text_input("WebSocket URL", value=row["ws_url"], key=f"accounts.edit.ws.{acct_id}")
            key = st.text_input("New API key (leave empty to keep the current one)", type="password",
                                key="accounts.edit.key")
            c1, c2, c3 = st.columns(3)
            primary = c1.checkbox("Primary feed account", value=bool(row["is_primary"]),
                                  key=f"accounts.edit.primary.{acct_id}")
            cur_backup = 0 if pd.isna(row["backup_order"]) else int(row["backup_order"])
            backup = c2.number_input("Backup order (0 = none)", 0, 99, cur_backup,
                                     key=f"accounts.edit.backup.{acct_id}")
            active = c3.checkbox("Active", value=bool(row["is_active"]), key=f"accounts.edit.active.{acct_id}")
            l1, l2, l3 = st.columns(3)
            cur_loss = 0.0 if pd.isna(row["daily_max_loss"]) else float(row["daily_max_loss"])
            cur_profit = 0.0 if pd.isna(row["daily_max_profit"]) else float(row["daily_max_profit"])
            cur_trail = 0.0 if pd.isna(row["daily_trailing"]) else float(row["daily_trailing"])
            day_loss = l1.number_input("Daily max loss (₹, 0 = none)", value=cur_loss, step=500.0,
                                       key=f"accounts.edit.day_loss.{acct_id}",
                                       help="On the account's day P&L: flatten and halt when it is reached")
            day_profit = l2.number_input("Daily max profit (₹, 0 = none)", value=cur_profit, step=500.0,
                                         key=f"accounts.edit.day_profit.{acct_id}",
                                         help="Lock the day's profit in: flatten and halt when it is reached")
            day_trail = l3.number_input("Daily trailing (₹, 0 = none)", value=cur_trail, step=500.0,
                                        key=f"accounts.edit.day_trail.{acct_id}",
                                        help="Once the day P&L has been above 0, flatten and halt when it falls "
                                             "this much below the day's peak")
            peak = row["day_peak"] if row["day_peak_date"] == trading_day().isoformat() else None
            if cur_trail and peak is not None and not pd.isna(peak) and peak > 0:
                st.caption(f"Today's day P&L peak {rupees(peak)}: trailing floor {rupees(peak - cur_trail)}")
            if st.form_submit_button("Save changes", key="accounts.edit.submit"):
                try:
                    update_account(db, int(acct_id), host_url=host, ws_url=ws, api_key=key or None,
                                   is_primary=primary or None, backup_order=int(backup) or None, is_active=active,
                                   daily_max_loss=day_loss, daily_max_profit=day_profit, daily_trailing=day_trail)
                    notify_service()
                    flash(f"Account '{names[acct_id]}' saved.")
                    st.rerun()
                except USER_ERRORS as exc:
                    st.error(str(exc))
        with st.expander("Delete account"):
            sure = st.checkbox(f"Yes, delete '{names[acct_id]}'", key="accounts.delete.confirm")
            if st.button("Delete", key="accounts.delete", disabled=not sure, type="primary"):
                try:
                    delete_account(db, int(acct_id))
                    notify_service()
                    flash(f"Account '{names[acct_id]}' deleted.")
                    st.rerun()
                except USER_ERRORS as exc:
                    st.error(str(exc))
