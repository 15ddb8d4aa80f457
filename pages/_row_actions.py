"""Positions & Orders row actions: Cancel / Modify on an order's row, Square off on a position's row, Cancel on a
Quick Order stop's row. Each asks for a confirmation, queues one control command and keeps its message on screen
(ui.actions.flash) across the page's auto-refresh, following the command to its result."""
from __future__ import annotations

import streamlit as st

from db import repo
from db.commands import NeedsConfirmation, enqueue_control
from db.leg_exits import MODIFIABLE
from db.order_fsm import OPEN, Status, values
from db.row_actions import check_modify
from db.vocab import LIVE_STOP, CommandStatus
from pages._common import USER_ERRORS
from ui.actions import flash

CANCELLABLE_HERE = {Status.QUEUED.value, *values(OPEN)}  # queued: withdrawn here; working: cancelorder at the broker
KEY = "orders"


def outcome_of(db):
    """The (kind, text) a command's message gets once the service has carried it out (ui.actions.show_flash)."""
    def outcome(command_id: int):
        now = repo.command_outcome(db, command_id)
        if now is None:
            return None
        status, result = now
        if status == CommandStatus.DONE:
            return "success", f"Done: {result}"
        if status == CommandStatus.FAILED:
            return "error", f"Failed: {result}"
        return None  # still queued: the request's own message
    return outcome


def _ask(db, kind: str, payload: dict, ok: str, refused: str) -> None:
    """Queue the command; the message (``ok`` + the command's id, or ``refused`` + why) stays on screen."""
    try:
        cmd = enqueue_control(db, kind, payload)
        flash(KEY, "success", f"{ok} (command #{cmd}).", cmd)
    except USER_ERRORS as exc:
        flash(KEY, "error", f"{refused}: {exc}")
    st.rerun()


def _int(v) -> int:
    return int(v) if v == v and v is not None else 0  # NaN (no fill yet) counts as 0


def intent_action(db, settings, row: dict) -> None:
    """Cancel, and for a LIMIT / SL order working at the broker Modify (a new price; a Quick Order's quantity)."""
    iid = int(row["id"])
    what = f"#{iid} {row['action']} {row['requested_qty']} {row['symbol']} ({row['status']})"
    can = row["status"] in CANCELLABLE_HERE
    left, right = st.columns([3, 1])
    left.markdown(f"**Order {what}**" + ("" if can else f" — a '{row['status']}' order cannot be cancelled"))
    if right.button("Cancel order", key=f"orders.cancel.{iid}", disabled=not can, type="primary"):
        _ask(db, "cancel_intent", {"intent_id": iid}, f"Cancel requested for order {what}",
             f"Order {what} not cancelled")
    if row["status"] in values(OPEN) and row.get("pricetype") in MODIFIABLE and row.get("broker_order_id"):
        modify_form(db, settings, row, iid, what)


def modify_form(db, settings, row: dict, iid: int, what: str) -> None:
    manual = row.get("purpose") == "manual"
    with st.container(border=True):
        st.markdown(f"**Modify {row['pricetype']} order {what}** at the broker"
                    + ("" if manual else " (a strategy or exit order: the price only)"))
        c1, c2, c3 = st.columns([1, 1, 1])
        price = c1.number_input("New price", value=float(row.get("limit_price") or 0.0), step=0.05, format="%.2f",
                                key=f"orders.modify_price.{iid}")
        qty = c2.number_input("Quantity", value=int(row["requested_qty"]), step=1, disabled=not manual,
                              min_value=0, key=f"orders.modify_qty.{iid}")
        sure = c3.checkbox("Confirm the change", key=f"orders.modify_confirm.{iid}")
        # a change the fat-finger band held: confirmed a second time, for that very price and quantity only
        held = st.session_state.get(f"orders.modify_held.{iid}")
        again = False
        if held is not None and held[0] == (float(price), int(qty)):
            st.warning(f"Confirm this change: {held[1]}")
            again = st.checkbox("Yes, send it anyway", key=f"orders.modify_force.{iid}")
        if not st.button("Modify order", key=f"orders.modify.{iid}", disabled=not sure):
            return
        payload = {"intent_id": iid, "price": float(price)}
        if manual and int(qty) != int(row["requested_qty"]):
            payload["quantity"] = int(qty)
        try:
            check_modify(db, payload, settings.orders, confirmed=bool(again))
        except NeedsConfirmation as exc:
            # drawn again with the second confirmation, which names the problems
            st.session_state[f"orders.modify_held.{iid}"] = ((float(price), int(qty)), "; ".join(exc.problems))
            st.rerun()
        except USER_ERRORS as exc:
            st.error(f"Order #{iid} not modified: {exc}")
            return
        st.session_state.pop(f"orders.modify_held.{iid}", None)
        change = f"{price:g}" + (f" × {payload['quantity']}" if "quantity" in payload else "")
        _ask(db, "modify_order", payload, f"Modify requested for order #{iid} to {change}",
             f"Order #{iid} not modified")


def position_action(db, row: dict, service_up: bool) -> None:
    """Square off one position: the service closes what the broker reports when it acts (a strategy leg's units
    through the leg's exit)."""
    qty = _int(row.get("quantity"))
    sym, exch, prod = row["symbol"], row["exchange"], row["product"]
    pid = f"{int(row['account_id'])}.{sym}.{exch}.{prod}"
    with st.container(border=True):
        st.markdown(f"**Position {row.get('account', '')} · {sym} {exch} {prod}: {qty:+d}**"
                    + ("" if qty else " — flat here (the service still checks the broker)"))
        st.caption("Square off closes at market the quantity the broker reports when the service acts (it may differ "
                   "from this row); a strategy leg on it exits through its leg (the run goes on with its other legs).")
        left, right = st.columns([3, 1])
        sure = left.checkbox(f"Confirm square-off of {sym} {prod}", key=f"orders.sqoff_confirm.{pid}")
        if right.button("Square off", key=f"orders.sqoff.{pid}", disabled=not sure, type="primary"):
            _ask(db, "square_off_position", {"account_id": int(row["account_id"]), "symbol": sym, "exchange": exch,
                                             "product": prod}, f"Square-off requested for {sym} {exch} {prod}",
                 f"{sym} {exch} {prod} not squared off")
        if not service_up:
            st.caption("The service is down: the square-off runs when it is back.")


def stop_action(db, row: dict) -> None:
    sid = int(row["id"])
    live = row.get("status") in {s.value for s in LIVE_STOP}
    left, right = st.columns([3, 1])
    left.markdown(f"**Stop #{sid} on {row.get('symbol', '')} ({row.get('status', '')})**"
                  + ("" if live else " — it has already acted or ended"))
    if right.button("Cancel stop", key=f"orders.stop_cancel.{sid}", disabled=not live,
                    help="The position stays open, unprotected by this stop"):
        _ask(db, "cancel_stop", {"stop_id": sid}, f"Cancel requested for stop #{sid}", f"Stop #{sid} not cancelled")
