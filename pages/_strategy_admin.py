"""Strategies page: the builder's session state (load a saved strategy into it, its legs table's version) and the
saved strategies panel (table with legs and size; edit, clone, delete). Not a page of its own (app.py lists the
pages)."""
from __future__ import annotations

import streamlit as st

from db.strategy_admin import clone_strategy, delete_strategy, for_builder, saved_rows
from pages._common import USER_ERRORS
from ui.format import table
from ui.strategy_form import default_legs, legs_frame, saved_frame

ss = st.session_state
LIMIT_KEYS = ("max_loss", "max_profit", "trailing_sl")


def legs_data():
    """The frame the legs editor starts from (defaults, or the strategy loaded for edit) and the editor's key:
    a new key whenever a strategy is loaded, so the grid shows it instead of the earlier edits."""
    if "strategies.legs_data" not in ss:
        ss["strategies.legs_data"] = default_legs()
    ver = ss.get("strategies.legs_ver", 0)
    return ss["strategies.legs_data"], "strategies.legs" if ver == 0 else f"strategies.legs_{ver}"


def keep_edits(edited) -> None:
    """The legs as edited so far, so a change of visible columns (a new editor) starts from them."""
    ss["strategies.legs_edited"] = edited


def _renew_editor(frame) -> None:
    ss["strategies.legs_data"] = frame
    ss["strategies.legs_ver"] = ss.get("strategies.legs_ver", 0) + 1


def on_more_columns() -> None:
    """Showing or hiding the extra leg columns draws a new grid: it starts from the legs as edited."""
    if "strategies.legs_edited" in ss:
        _renew_editor(ss["strategies.legs_edited"])


def load_for_edit(db, strategy_id: int) -> None:
    """on_click of Edit: the saved strategy's fields into the builder's widgets (before they are drawn)."""
    try:
        st_ = for_builder(db, strategy_id)
    except USER_ERRORS as exc:
        ss["strategies.admin_msg"] = ("error", str(exc))
        return
    ss["strategies.name"] = st_["name"]
    ss["strategies.underlying"] = st_["underlying"]
    ss["strategies.expiry"] = st_["expiry"] if st_["expiry_mode"] == "fixed" else st_["expiry_mode"]
    ss["strategies.product"] = st_["product"]
    for k in LIMIT_KEYS:
        ss[f"strategies.{k}"] = st_[k]
    ss["strategies.editing"] = (st_["id"], st_["name"])
    ss["strategies.edit_expiry"] = (st_["underlying"], st_["expiry"])
    more = any(leg["strike_mode"] in ("PREMIUM", "DELTA") or leg["entry_type"] == "LIMIT" for leg in st_["legs"])
    ss["strategies.more_columns"] = more or ss.get("strategies.more_columns", False)
    _renew_editor(legs_frame(st_["legs"]))
    ss["strategies.admin_msg"] = ("info", f"Editing '{st_['name']}': Save changes keeps its id.")


def stop_editing() -> None:
    ss.pop("strategies.editing", None)
    ss.pop("strategies.edit_expiry", None)


def _clone(db, strategy_id: int) -> None:
    try:
        new_id = clone_strategy(db, strategy_id, ss.get("strategies.clone_name", ""))
        ss["strategies.admin_msg"] = ("success", f"Cloned as '{ss['strategies.clone_name'].strip()}' (id {new_id}).")
    except USER_ERRORS as exc:
        ss["strategies.admin_msg"] = ("error", str(exc))


def _delete(db, strategy_id: int) -> None:
    if not ss.get("strategies.delete_confirm"):
        ss["strategies.admin_msg"] = ("error", "Tick 'Yes, delete it' to delete the strategy.")
        return
    try:
        name = delete_strategy(db, strategy_id)
        if ss.get("strategies.editing", (None,))[0] == strategy_id:
            stop_editing()
        ss["strategies.admin_msg"] = ("success", f"Deleted '{name}'. Its past runs keep their history.")
    except USER_ERRORS as exc:
        ss["strategies.admin_msg"] = ("error", str(exc))
    ss["strategies.delete_confirm"] = False


def saved_panel(db) -> None:
    """The saved strategies with their legs and size, and Edit / Clone / Delete of one of them."""
    rows = saved_rows(db)
    if not rows:
        return
    st.markdown("**Saved strategies**")
    table(saved_frame(rows), key="strategies.saved")
    names = {r["id"]: r["name"] for r in rows}
    m1, m2, m3, m4 = st.columns([3, 1, 3, 3], vertical_alignment="bottom")
    sid = m1.selectbox("Saved strategy", list(names), format_func=names.get, key="strategies.manage_id")
    m2.button("Edit", key="strategies.edit", on_click=load_for_edit, args=(db, sid))
    m3.text_input("Clone as", key="strategies.clone_name", placeholder="new name")
    m3.button("Clone", key="strategies.clone", on_click=_clone, args=(db, sid))
    m4.checkbox("Yes, delete it", key="strategies.delete_confirm")
    m4.button("Delete", key="strategies.delete", on_click=_delete, args=(db, sid))
    kind, msg = ss.pop("strategies.admin_msg", (None, None))
    if kind:
        getattr(st, kind)(msg)
