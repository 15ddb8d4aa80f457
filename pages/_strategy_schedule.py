"""Strategies page: the schedule of a saved strategy (timed entry and exit, IST, on trading days; the accounts and
multipliers the entry executes on; on / off) and today's schedule with what ran. Not a page of its own. The service
carries the schedules out (services/timed.py); this only writes the schedule rows (db/schedules.py)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from db import repo
from db.clock import is_trading_day, today_ist
from db.schedules import remove_schedule, save_schedule, schedule_of, today_rows
from pages._common import USER_ERRORS
from ui.format import table

ss = st.session_state
K = "strategies.sched"


def _load(db, sid: int, account_ids: list[int]) -> None:
    """The stored schedule into the form's widgets, when another strategy is chosen (before they are drawn)."""
    if ss.get(f"{K}_for") == sid:
        return
    cur = schedule_of(db, sid) or dict(entry_at="", exit_at="", accounts=[], enabled=True)
    ss[f"{K}_entry"], ss[f"{K}_exit"], ss[f"{K}_enabled"] = cur["entry_at"], cur["exit_at"], cur["enabled"]
    ss[f"{K}_accounts"] = [a for a, _ in cur["accounts"] if a in account_ids]
    for a, m in cur["accounts"]:
        ss[f"{K}_mult.{a}"] = int(m)
    ss[f"{K}_for"] = sid


def _save(db, sid: int, chosen: list[int], market) -> None:
    accounts = [[a, ss.get(f"{K}_mult.{a}", 1)] for a in chosen]
    try:
        clean = save_schedule(db, sid, ss.get(f"{K}_entry", ""), ss.get(f"{K}_exit", ""), accounts,
                              bool(ss.get(f"{K}_enabled", True)), market=market)
        times = " · ".join(f"{w} {t}" for w, t in (("entry", clean["entry_at"]), ("exit", clean["exit_at"])) if t)
        ss[f"{K}_msg"] = ("success", f"Schedule saved: {times} IST on trading days"
                                     + ("" if clean["enabled"] else " (disabled)") + ".")
    except USER_ERRORS as exc:
        ss[f"{K}_msg"] = ("error", f"Schedule not saved: {exc}")


def _remove(db, sid: int) -> None:
    try:
        gone = remove_schedule(db, sid)
        ss[f"{K}_msg"] = ("success" if gone else "info", "Schedule removed." if gone else "No schedule to remove.")
        ss.pop(f"{K}_for", None)
    except USER_ERRORS as exc:
        ss[f"{K}_msg"] = ("error", str(exc))


def schedule_panel(db, market) -> None:
    """Edit the schedule of the strategy chosen in the saved panel; then today's schedule."""
    sid = ss.get("strategies.manage_id")
    accts = repo.accounts(db)
    accts = accts[accts["is_active"].astype(bool)]
    names = dict(zip(accts["id"].astype(int), accts["name"], strict=True))
    if sid is not None:
        _load(db, int(sid), list(names))
        st.markdown("**Schedule** (IST, trading days only; the entry executes like Execute, the exit is the "
                    "Risk Monitor's Exit now)")
        c1, c2, c3 = st.columns([1, 1, 3], vertical_alignment="bottom")
        c1.text_input("Entry time", key=f"{K}_entry", placeholder="09:20", help="HH:MM, 09:15-15:30; empty = none")
        c2.text_input("Exit time", key=f"{K}_exit", placeholder="15:10",
                      help="HH:MM, after the entry; exits every live run of the strategy started today")
        chosen = [int(a) for a in c3.multiselect("Entry accounts", list(names), format_func=names.get,
                                                 key=f"{K}_accounts")]
        if chosen:
            cols = st.columns(min(4, len(chosen)))
            for i, a in enumerate(chosen):
                ss.setdefault(f"{K}_mult.{a}", 1)
                cols[i % len(cols)].number_input(f"{names[a]}: lots ×", min_value=1, max_value=50, step=1,
                                                 key=f"{K}_mult.{a}")
        b1, b2, b3 = st.columns([1, 1, 2], vertical_alignment="bottom")
        b1.checkbox("Enabled", key=f"{K}_enabled")
        b2.button("Save schedule", key=f"{K}_save", on_click=_save, args=(db, int(sid), chosen, market))
        b3.button("Remove schedule", key=f"{K}_remove", on_click=_remove, args=(db, int(sid)))
        kind, msg = ss.pop(f"{K}_msg", (None, None))
        if kind:
            getattr(st, kind)(msg)
    today_panel(db)


@st.fragment(run_every=30.0)
def today_panel(db) -> None:
    day = today_ist()
    note = "" if is_trading_day(day) else ": not a trading day, nothing fires"
    st.markdown(f"**Today's schedule** ({day:%a %d %b %Y}{note})")
    table(pd.DataFrame(today_rows(db, day)), key="strategies.today_schedule", empty="No strategy has a schedule.")
