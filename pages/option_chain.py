"""Option Chain: CE | strike | PE with LTP, bid/ask, OI, change in OI, volume, IV, delta and theta, ATM
highlighted, depth, click-to-trade."""
import streamlit as st
from streamlit.errors import StreamlitAPIException

from db import chain as chain_sessions
from db import repo
from db.models import utcnow
from db.vocab import ChainStatus
from pages._common import USER_ERRORS, init_page
from db.clock import today_ist
from ui.chain_grid import build_grid, display_grid, parse_depth, picked_contract
from ui.format import ist_str, rupees

db, settings, health = init_page("Option Chain", ":material/table_chart:")
ss = st.session_state
HEARTBEAT_EVERY_S = 20.0

unders = repo.option_underlyings(db)
if unders.empty:
    st.info("The symbol master has no options yet (the service loads it from OpenAlgo at start).")
    st.stop()
def new_underlying():
    """Another underlying opens on ITS nearest expiry, ATM: the expiry and strike selects are keyed by underlying
    (and expiry), so the previous one's expiry (a BANKNIFTY monthly that NIFTY also lists) and strike cannot carry
    over. One key for every underlying did not hold in the browser: its select kept showing the old expiry and
    sent it back with the next live refresh of the grid."""
    ss.pop("chain.pick", None)


c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
name = c1.selectbox("Underlying", unders["name"].tolist(), key="chain.underlying", on_change=new_underlying)
u = unders[unders["name"] == name].iloc[0]
exps = repo.expiries(db, name, u["opt_exchange"], since=today_ist())
if not exps:
    st.info(f"No option expiries for {name}.")
    st.stop()
expiry = c2.selectbox("Expiry", exps, key=f"chain.expiry.{name}")  # nearest first
each_side = c3.selectbox("Strikes ±", [5, 10, 15, 20], index=1, key="chain.each_side",
                         help="Strikes each side of ATM: the grid fits on screen with ATM in the middle")
auto = c4.toggle("Live", value=True, key="chain.auto")


def keep_session_alive(force: bool = False) -> dict | None:
    """One chain session per (underlying, expiry) per browser tab; heartbeat at most every 20 s."""
    try:
        return _keep_session_alive(force)
    except USER_ERRORS as exc:  # e.g. the symbol master was refreshed and this expiry is gone
        st.error(str(exc))
        return None


def _keep_session_alive(force: bool) -> dict | None:
    want = (name, expiry)
    now = utcnow().timestamp()
    if ss.get("chain.session_for") != want or not ss.get("chain.session_id"):
        ss["chain.session_id"] = chain_sessions.open_session(db, name, u["exchange"], expiry)
        ss["chain.session_for"], ss["chain.hb_at"] = want, now
    elif force or now - ss.get("chain.hb_at", 0) >= HEARTBEAT_EVERY_S:
        if not chain_sessions.heartbeat(db, ss["chain.session_id"]):
            ss["chain.session_id"] = chain_sessions.open_session(db, name, u["exchange"], expiry)
        ss["chain.hb_at"] = now
    return chain_sessions.get_session(db, ss["chain.session_id"])


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def chain_grid():
    sess = keep_session_alive()
    spot_row = repo.latest_price(db, name, u["exchange"])
    spot = float(spot_row["ltp"]) if spot_row else None
    df = repo.chain(db, name, u["opt_exchange"], expiry)
    grid, atm = build_grid(df, spot, expiry, utcnow(), min(int(each_side), settings.service.chain_strikes))
    ss["chain.atm"] = atm
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(f"{name} spot", rupees(spot) if spot else "—")
    m2.metric("ATM strike", f"{atm:,.0f}" if atm else "—")
    ce_oi, pe_oi = grid["CE_oi"].fillna(0).sum(), grid["PE_oi"].fillna(0).sum()
    m3.metric("PCR (OI)", f"{pe_oi / ce_oi:.2f}" if ce_oi else "—")
    m4.metric("Stream", (sess or {}).get("status", "—"))
    if sess and sess["status"] == ChainStatus.ERROR:
        st.error(f"The service could not stream this chain: {sess['message']}")
    elif df["ltp"].isna().all():
        st.info("Waiting for prices: the service subscribes this chain within a few seconds.")
    # every row fits (no scrolling), so the ATM row is always in view, in the middle
    ev = st.dataframe(display_grid(grid, atm, spot), hide_index=True, width="stretch",
                      height=35 * (len(grid) + 1) + 3, key="chain.grid", on_select="rerun",
                      selection_mode="single-cell")
    cells = list(getattr(ev.selection, "cells", []) or [])
    picked = picked_contract(grid, tuple(cells[0]) if cells else None)
    if picked and picked != ss.get("chain.picked_last"):
        ss["chain.picked_last"] = ss["chain.pick"] = picked
        st.rerun()  # the contract panel below follows the clicked cell
    st.caption("Click a CE or PE cell to trade that contract. Shaded: in the money. IV: Black-Scholes from LTP "
               "(r = 6.5%), expiry 15:30 IST; Δ and Θ (₹/day) per unit at that IV; OI chg: since the day's first "
               "OI the service saw. Updated " + ist_str(df["tick_ts"].max()) + " IST")


chain_grid()

st.subheader("Contract")
full = repo.chain(db, name, u["opt_exchange"], expiry)
strikes = sorted(full["strike"].unique().tolist())
atm = ss.get("chain.atm")
clicked = ss.pop("chain.pick", None)
STRIKE_KEY = f"chain.strike.{name}.{expiry}"  # per chain, as the expiry above
if clicked and clicked[0] in strikes:  # a clicked cell: set before the widgets exist
    ss[STRIKE_KEY], ss["chain.side"] = clicked
elif strikes and ss.get(STRIKE_KEY) not in strikes:  # a chain opened afresh: ATM
    ss[STRIKE_KEY] = atm if atm in strikes else strikes[0]
s1, s2, s3, s4 = st.columns([2, 1, 1, 1])
strike = s1.selectbox("Strike", strikes, key=STRIKE_KEY,
                      format_func=lambda k: f"{k:,.0f}{'  (ATM)' if k == atm else ''}")
side = s2.radio("Type", ["CE", "PE"], horizontal=True, key="chain.side")
pick = full[(full["strike"] == strike) & (full["kind"] == side)]
contract = pick.iloc[0].to_dict() if not pick.empty else None


def trade(action: str):
    ss["quick.prefill"] = dict(symbol=contract["symbol"], exchange=contract["exchange"], action=action,
                               quantity=int(contract["lotsize"]))
    try:
        st.switch_page("pages/quick_order.py")
    except StreamlitAPIException:  # page run on its own (tests): the prefill waits in session state
        st.info("Open Quick Order: the contract is pre-filled.")


if contract:
    if s3.button("Buy", key="chain.buy", type="primary", width="stretch"):
        trade("BUY")
    if s4.button("Sell", key="chain.sell", width="stretch"):
        trade("SELL")

    @st.fragment(run_every=settings.ui.refresh_s if auto else None)
    def depth():
        p = repo.latest_price(db, contract["symbol"], contract["exchange"])
        st.markdown(f"**{contract['symbol']}** · lot {int(contract['lotsize'])} · LTP "
                    f"{rupees(p['ltp']) if p else '—'}")
        bids, asks = parse_depth(p["depth_json"] if p else None)
        d1, d2 = st.columns(2)
        d1.caption("Bids")
        d1.dataframe(bids, hide_index=True, width="stretch", key="chain.depth.buy")
        d2.caption("Asks")
        d2.dataframe(asks, hide_index=True, width="stretch", key="chain.depth.sell")

    depth()
