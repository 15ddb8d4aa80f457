"""Strategies: leg builder, risk limits, payoff (expiry + today), save, execute on accounts, live intents."""
import pandas as pd
import streamlit as st

from db import repo
from db.commands import CommandError
from db.models import utcnow
from db.intents import new_client_order_id
from db.strategies import LegSpec, execute_strategy, save_strategy
from pages._common import ORDER_COLORS, USER_ERRORS, init_page
from ui import charts
from ui.black_scholes import implied_vol, years_to_expiry
from ui.format import table
from ui.payoff import DEFAULT_IV, breakevens, leg_value, payoff, spot_grid
from ui.widgets import status_chip

db, settings, health = init_page("Strategies", ":material/account_tree:")
ss = st.session_state
DEFAULT_LEGS = pd.DataFrame([
    dict(instrument="CE", action="SELL", strike_mode="ATM", offset=0, strike=None, lots=1),
    dict(instrument="PE", action="SELL", strike_mode="ATM", offset=0, strike=None, lots=1)])

unders = repo.option_underlyings(db)
if unders.empty:
    st.info("The symbol master has no options yet (the service loads it from OpenAlgo at start).")
    st.stop()

st.subheader("Builder")
c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
name = c1.text_input("Strategy name", key="strategies.name", placeholder="e.g. NIFTY short straddle")
underlying = c2.selectbox("Underlying", unders["name"].tolist(), key="strategies.underlying")
u = unders[unders["name"] == underlying].iloc[0]
expiry = c3.selectbox("Expiry", repo.expiries(db, underlying, u["opt_exchange"]), key="strategies.expiry")
product = c4.selectbox("Product", ["NRML", "MIS"], key="strategies.product")
legs_df = st.data_editor(
    DEFAULT_LEGS, num_rows="dynamic", key="strategies.legs", width="stretch", column_config={
        "instrument": st.column_config.SelectboxColumn("Instrument", options=["CE", "PE", "FUT"], required=True),
        "action": st.column_config.SelectboxColumn("Action", options=["BUY", "SELL"], required=True),
        "strike_mode": st.column_config.SelectboxColumn("Strike", options=["ATM", "ITM", "OTM", "STRIKE"],
                                                        required=True),
        "offset": st.column_config.NumberColumn("ITM/OTM steps", min_value=0, max_value=50, step=1),
        "strike": st.column_config.NumberColumn("Fixed strike", min_value=0.0),
        "lots": st.column_config.NumberColumn("Lots", min_value=1, max_value=500, step=1, required=True)})
r1, r2, r3 = st.columns(3)
max_loss = r1.number_input("Max loss (₹, 0 = none)", min_value=0.0, step=500.0, key="strategies.max_loss")
max_profit = r2.number_input("Max profit (₹, 0 = none)", min_value=0.0, step=500.0, key="strategies.max_profit")
trailing = r3.number_input("Trailing stop (₹ below peak, 0 = none)", min_value=0.0, step=250.0,
                           key="strategies.trailing_sl")


def leg_specs(df: pd.DataFrame) -> list[LegSpec]:
    specs = []
    for i, r in enumerate(df.dropna(how="all").itertuples(index=False), start=1):
        try:
            specs.append(LegSpec(instrument=str(r.instrument), action=str(r.action), lots=int(r.lots),
                                 strike_mode=str(r.strike_mode or "ATM"), offset=int(r.offset or 0),
                                 strike=float(r.strike) if pd.notna(r.strike) and r.strike else None))
        except (TypeError, ValueError):
            raise CommandError(f"Leg {i}: fill instrument, action, strike and a whole number of lots") from None
    return specs


def payoff_panel(specs: list[LegSpec]):
    legs = repo.preview_legs(db, underlying, u["exchange"], expiry, specs)
    spot, t = legs[0]["spot"], years_to_expiry(expiry, utcnow())
    for leg in legs:
        leg["premium"] = leg["ltp"] if leg["ltp"] else None
        if leg["kind"] != "FUT":
            leg["iv"] = implied_vol(leg["ltp"], spot, leg["strike"], t, leg["kind"]) if leg["ltp"] else None
            leg["iv"] = leg["iv"] or DEFAULT_IV
        if leg["premium"] is None:  # no tick yet: theoretical value so the chart is still meaningful
            leg["premium"] = spot if leg["kind"] == "FUT" else leg_value(leg, spot, t)
    grid = spot_grid(spot, legs)
    at_expiry, today = payoff(legs, grid), payoff(legs, grid, t)
    st.plotly_chart(charts.payoff_chart(grid, at_expiry, today, spot, breakevens(grid, at_expiry)),
                    key="strategies.payoff", width="stretch")
    show = pd.DataFrame(legs)[["action", "symbol", "quantity", "premium", "iv"]]
    show["iv"] = (show["iv"] * 100).round(2)
    table(show, key="strategies.resolved")
    st.caption(f"Max P&L in range ₹{at_expiry.max():,.0f} · min ₹{at_expiry.min():,.0f} at expiry")


b1, b2 = st.columns(2)
try:
    specs = leg_specs(legs_df)
except USER_ERRORS as exc:
    st.error(str(exc))
    specs = []
if b1.toggle("Show payoff", value=True, key="strategies.show_payoff") and specs:
    try:
        payoff_panel(specs)
    except USER_ERRORS as exc:
        st.warning(f"Payoff unavailable: {exc}")
if b2.button("Save strategy", key="strategies.save", type="primary"):
    try:
        sid = save_strategy(db, name, underlying, u["exchange"], expiry, specs, product=product,
                            max_loss=max_loss, max_profit=max_profit, trailing_sl=trailing)
        ss["strategies.exec_id"] = sid  # preselect it below
        st.success(f"Saved strategy '{name.strip()}' (id {sid}).")
    except USER_ERRORS as exc:
        st.error(str(exc))

st.divider()
st.subheader("Execute")
saved = repo.strategies(db)
accts = repo.accounts(db)
accts = accts[accts["is_active"].astype(bool)]
if saved.empty or accts.empty:
    st.caption("Save a strategy and add an active account to execute.")
else:
    table(saved, key="strategies.saved")
    labels = dict(zip(saved["id"].astype(int), saved["name"], strict=True))
    e1, e2 = st.columns(2)
    sid = e1.selectbox("Strategy", list(labels), format_func=labels.get, key="strategies.exec_id")
    names = dict(zip(accts["id"].astype(int), accts["name"], strict=True))
    chosen = e2.multiselect("Accounts", list(names), format_func=names.get, key="strategies.exec_accounts")
    if not health["orders_ok"]:
        st.warning("Execution is disabled while the background service is down.")
    # minted when the form renders, like Quick Order's client_order_id: a double click or a resubmitted form
    # carries the same key, and execute_strategy fans out once for it
    exec_key = ss.setdefault("strategies.exec_key", new_client_order_id())
    if st.button("Execute", key="strategies.execute", type="primary", disabled=not health["orders_ok"] or not chosen):
        try:
            group_id, run_ids = execute_strategy(db, int(sid), [int(a) for a in chosen], execute_key=exec_key,
                                                 market=settings.market)
            ss["strategies.last_runs"] = run_ids
            ss["strategies.exec_key"] = new_client_order_id()  # the next Execute is a new fan-out
            st.success(f"Queued {len(run_ids)} run(s) (group {group_id[:8]}).")
        except USER_ERRORS as exc:
            st.error(str(exc))


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
