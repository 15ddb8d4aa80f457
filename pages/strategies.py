"""Strategies: leg builder, risk limits, payoff (expiry + today), save, schedule (timed entry / exit), execute on
accounts, live intents."""
import pandas as pd
import streamlit as st

from db import repo
from db.commands import enqueue_control
from db.intents import new_client_order_id
from db.margin import check_rows, command_state, refusal_text
from db.models import utcnow
from db.clock import today_ist
from db.expiry_rules import LABELS as EXPIRY_LABELS
from db.expiry_rules import NoSuchExpiry
from db.expiry_rules import resolve as resolve_expiry
from db.strategies import LegSpec, execute_plan, preview_execution, save_strategy
from db.strategy_specs import leg_from_row
from db.vocab import CommandStatus
from pages._common import ORDER_COLORS, USER_ERRORS, init_page
from pages._strategy_admin import keep_edits, legs_data, on_more_columns, saved_panel, stop_editing
from pages._strategy_schedule import schedule_panel
from ui import charts
from ui.black_scholes import implied_vol, years_to_expiry
from ui.format import table
from ui.payoff import DEFAULT_IV, breakevens, leg_value, net_premium, net_premium_text, payoff, spot_grid
from ui.strategy_form import (RELATIVE_EXPIRIES, column_order, expiry_dates, expiry_label, frame_rows,
                              leg_columns)
from ui.widgets import status_chip

db, settings, health = init_page("Strategies", ":material/account_tree:")
ss = st.session_state

unders = repo.option_underlyings(db)
if unders.empty:
    st.info("The symbol master has no options yet (the service loads it from OpenAlgo at start).")
    st.stop()

st.subheader("Builder")
c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
name = c1.text_input("Strategy name", key="strategies.name", placeholder="e.g. NIFTY short straddle")
underlying = c2.selectbox("Underlying", unders["name"].tolist(), key="strategies.underlying")
u = unders[unders["name"] == underlying].iloc[0]
listed = repo.expiries(db, underlying, u["opt_exchange"])
resolved = {}
for mode in RELATIVE_EXPIRIES:
    try:
        resolved[mode] = resolve_expiry(mode, listed, today_ist())
    except NoSuchExpiry:
        pass
# a strategy loaded for edit keeps showing its own date, even one no longer listed
kept = ss.get("strategies.edit_expiry", (None, None))
dates = expiry_dates(listed, today_ist(), kept[1] if kept[0] == underlying else None)
expiry_pick = c3.selectbox("Expiry", [*dates, *RELATIVE_EXPIRIES], key="strategies.expiry",
                           format_func=lambda v: expiry_label(v, resolved, EXPIRY_LABELS),
                           help="A date, or relative: resolved from the listed expiries each time it is executed")
expiry_mode = expiry_pick if expiry_pick in RELATIVE_EXPIRIES else "fixed"
expiry = "" if expiry_mode != "fixed" else expiry_pick
product = c4.selectbox("Product", ["NRML", "MIS"], key="strategies.product")
more = st.toggle("More leg settings: premium / delta target, LIMIT entry", key="strategies.more_columns",
                 on_change=on_more_columns)
data, editor_key = legs_data()
legs_df = st.data_editor(data, num_rows="dynamic", key=editor_key, width="stretch", column_config=leg_columns(),
                         column_order=column_order(more))
keep_edits(legs_df)
r1, r2, r3 = st.columns(3)
max_loss = r1.number_input("Max loss (₹, empty = none)", value=None, step=500.0, key="strategies.max_loss")
max_profit = r2.number_input("Max profit (₹, empty = none)", value=None, step=500.0, key="strategies.max_profit")
trailing = r3.number_input("Trailing stop (₹ below peak, empty = none)", value=None, step=250.0,
                           key="strategies.trailing_sl")


def leg_specs(df: pd.DataFrame) -> list[LegSpec]:
    return [leg_from_row(i, row) for i, row in enumerate(frame_rows(df), start=1)]


def payoff_panel(specs: list[LegSpec]):
    legs = repo.preview_legs(db, underlying, u["exchange"], expiry, specs, expiry_mode)
    spot, t = legs[0]["spot"], years_to_expiry(legs[0]["expiry"], utcnow())
    for leg in legs:
        leg["premium"] = leg["ltp"] if leg["ltp"] else None
        if leg["kind"] != "FUT":
            leg["iv"] = implied_vol(leg["ltp"], spot, leg["strike"], t, leg["kind"]) if leg["ltp"] else None
            leg["iv"] = leg["iv"] or DEFAULT_IV
        if leg["premium"] is None:  # no tick yet: theoretical value so the chart is still meaningful
            leg["premium"] = spot if leg["kind"] == "FUT" else leg_value(leg, spot, t)
    grid = spot_grid(spot, legs)
    at_expiry, today = payoff(legs, grid), payoff(legs, grid, t)
    net = net_premium(legs)
    st.plotly_chart(charts.payoff_chart(grid, at_expiry, today, spot, breakevens(grid, at_expiry), max_loss=max_loss,
                                        max_profit=max_profit, net_premium=net),
                    key="strategies.payoff", width="stretch")
    show = pd.DataFrame(legs)[["action", "symbol", "quantity", "premium", "iv", "pricetype", "limit_price"]]
    show["iv"] = (show["iv"] * 100).round(2)
    show["limit_price"] = show["limit_price"].where(show["pricetype"] == "LIMIT")
    table(show, key="strategies.resolved")
    st.caption(f"Max P&L in range ₹{at_expiry.max():,.0f} · min ₹{at_expiry.min():,.0f} at expiry "
               f"({legs[0]['expiry']}) · {net_premium_text(net)} · margin: "
               "Check margin below (the broker's figure per account)")


b1, b2 = st.columns(2)
leg_error = ""
try:
    specs = leg_specs(legs_df)
except USER_ERRORS as exc:
    leg_error, specs = str(exc), []
    st.error(leg_error)
if b1.toggle("Show payoff", value=True, key="strategies.show_payoff") and specs:
    try:
        payoff_panel(specs)
    except USER_ERRORS as exc:
        st.warning(f"Payoff unavailable: {exc}")
editing = ss.get("strategies.editing")
if editing:
    b2.caption(f"Editing '{editing[1]}' (id {editing[0]})")
    b2.button("Stop editing (save as new)", key="strategies.stop_edit", on_click=stop_editing)
if b2.button("Save changes" if editing else "Save strategy", key="strategies.save", type="primary"):
    if leg_error:
        st.error(leg_error)  # nothing is saved while a leg is unreadable
    else:
        try:
            sid = save_strategy(db, name, underlying, u["exchange"], expiry, specs, product=product,
                                max_loss=max_loss, max_profit=max_profit, trailing_sl=trailing,
                                expiry_mode=expiry_mode, strategy_id=editing[0] if editing else None)
            ss["strategies.exec_id"] = sid  # preselect it below
            st.success(f"Saved strategy '{name.strip()}' (id {sid}).")
        except USER_ERRORS as exc:
            st.error(str(exc))

st.divider()
saved_panel(db)
schedule_panel(db, settings.market)
st.subheader("Execute")
saved = repo.strategies(db)
accts = repo.accounts(db)
accts = accts[accts["is_active"].astype(bool)]


def multipliers_for(chosen: list[int], names: dict[int, str]) -> dict[int, int]:
    """One lots multiplier per chosen account (1x, 2x, ...): each leg's lots times it, for that account."""
    cols = st.columns(min(4, max(1, len(chosen))))
    return {a: int(cols[i % len(cols)].number_input(f"{names[a]}: lots ×", min_value=1, max_value=50, step=1,
                                                    value=1, key=f"strategies.mult.{a}"))
            for i, a in enumerate(chosen)}


def preview_table(sid: int, mult: dict[int, int], names: dict[int, str]) -> bool:
    """What Execute would send per account (quantities after the multiplier and freeze splitting)."""
    try:
        rows = preview_execution(db, sid, mult)
    except USER_ERRORS as exc:
        st.error(str(exc))
        return False
    df = pd.DataFrame(rows)
    df.insert(0, "account", df.pop("account_id").map(names))
    table(df, key="strategies.preview")
    return True


@st.fragment(run_every=settings.ui.refresh_s)
def margin_and_execute(sid: int, mult: dict[int, int], names: dict[int, str]):
    """The margin check of this exact plan (the service asks each account's broker), then Execute."""
    plan = [sid, sorted(mult.items())]
    check = ss.get("strategies.margin")
    cid = check[1] if check and check[0] == plan else None
    if st.button("Check margin", key="strategies.check_margin", disabled=not health["orders_ok"]):
        try:
            cid = enqueue_control(db, "margin_check",
                                  {"strategy_id": sid, "accounts": [[a, m] for a, m in mult.items()]})
            ss["strategies.margin"] = (plan, cid)
            # one margin check, one fan-out: the Execute key is minted with the check, not renewed after Execute.
            # Renewed there, a second click landing after the first one's execute_plan (two clicks 0.5 s apart in
            # tests/e2e/test_strategy_day_e2e.py) carried a new key and sent every leg on every account again, past
            # a check that had priced one basket against the funds before the first. Now it returns the runs the
            # first wrote; executing again takes a new check.
            ss["strategies.exec_key"] = new_client_order_id()
        except USER_ERRORS as exc:
            st.error(str(exc))
    state, result = command_state(db, cid) if cid else ("", "")
    if state == CommandStatus.QUEUED:
        st.info("Checking margin with each account's broker…")
    elif state == CommandStatus.FAILED:
        st.error(f"Margin check failed: {result}")
    elif state == CommandStatus.DONE:
        df = pd.DataFrame(check_rows(db, cid))
        df.insert(0, "account", df.pop("account_id").map(names))
        table(df.drop(columns=["checked_at"]), key="strategies.margin_table")
        for r in df.itertuples():
            if r.error:
                st.warning(f"{r.account}: margin not priced ({r.error}); the broker's own check applies")
            elif r.shortfall > 0:
                st.error(f"{r.account} will be refused: {refusal_text(r.required, r.available)}")
    else:
        st.caption("Check margin to see what each account needs before Execute.")
    # minted with the margin check (above), like Quick Order's client_order_id with its preview: a double click
    # or a resubmitted form carries the same key, and execute_plan fans out once for it
    exec_key = ss.setdefault("strategies.exec_key", new_client_order_id())
    ready = health["orders_ok"] and state == CommandStatus.DONE
    if st.button("Execute", key="strategies.execute", type="primary", disabled=not ready):
        try:
            res = execute_plan(db, sid, list(mult), execute_key=exec_key, multipliers=mult, margin_check_id=cid,
                               margin_max_age_s=settings.ui.margin_check_max_age_s, market=settings.market)
            ss["strategies.last_runs"] = res.run_ids
            if ss.get("strategies.executed_key") == exec_key:  # this check's fan-out was done: nothing written
                done = (f"Already executed on this margin check (group {res.group_id[:8]}): nothing sent again. "
                        "Check margin again to execute again.")
                refused = ss.get("strategies.last_result", ("", []))[1]
            else:
                done = f"Queued {len(res.run_ids)} run(s) (group {res.group_id[:8]})."
                refused = [f"Refused {names[a]}: {why}. No order was sent for it." for a, why in res.refused.items()]
            ss["strategies.executed_key"] = exec_key
            # kept for the fragment's later runs: a refusal must stay on screen, not flash for one refresh
            ss["strategies.last_result"] = (done, refused)
        except USER_ERRORS as exc:
            st.error(str(exc))
    done, refusals = ss.get("strategies.last_result", (None, []))
    if done:
        st.success(done)
    for msg in refusals:
        st.error(msg)


if saved.empty or accts.empty:
    st.caption("Save a strategy and add an active account to execute.")
else:
    labels = dict(zip(saved["id"].astype(int), saved["name"], strict=True))
    e1, e2 = st.columns(2)
    sid = e1.selectbox("Strategy", list(labels), format_func=labels.get, key="strategies.exec_id")
    names = dict(zip(accts["id"].astype(int), accts["name"], strict=True))
    chosen = e2.multiselect("Accounts", list(names), format_func=names.get, key="strategies.exec_accounts")
    if not health["orders_ok"]:
        st.warning("Execution is disabled while the background service is down.")
    if chosen:
        mult = multipliers_for([int(a) for a in chosen], names)
        if preview_table(int(sid), mult, names):
            margin_and_execute(int(sid), mult, names)


@st.fragment(run_every=settings.ui.refresh_s)
def run_states():
    run_ids = ss.get("strategies.last_runs")
    if not run_ids:
        return
    df = repo.run_intents(db, run_ids)
    st.markdown("**Last execution:** " + " ".join(status_chip(s, ORDER_COLORS) + f" {n}" for s, n in
                                                    df["status"].value_counts().items()))
    table(df, key="strategies.run_intents")


run_states()
