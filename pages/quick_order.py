"""Quick Order: symbol search, validated fields, preview, then one submit = one intent (client_order_id)."""
import streamlit as st

from db import repo
from db.commands import (DERIVATIVE_EXCHANGES, NeedsConfirmation, OrderRequest, enqueue_order, guarded,
                         validate_order, validate_stops)
from db.intents import new_client_order_id
from db.order_fsm import Status
from db.stop_levels import StopSpec, levels
from pages._common import ORDER_COLORS, USER_ERRORS, init_page
from ui.format import rupees
from ui.stops import MODE_LABELS, preview_line
from ui.widgets import status_chip

db, settings, health = init_page("Quick Order", ":material/bolt:")
ss = st.session_state
PRICETYPES = ["MARKET", "LIMIT", "SL", "SL-M"]

# Click-to-trade from the option chain: {"symbol", "exchange", "action", "quantity"}.
if prefill := ss.pop("quick.prefill", None):
    ss["quick.search"] = prefill["symbol"]
    ss["quick.contract"] = f"{prefill['symbol']}|{prefill['exchange']}"
    ss["quick.action"] = prefill.get("action", "BUY")
    ss["quick.qty"] = int(prefill.get("quantity") or 1)
    ss.pop("quick.pending", None)
if "quick.coid" not in ss:  # created when the form renders; rotated only after a successful submit
    ss["quick.coid"] = new_client_order_id()
if msg := ss.pop("quick.flash", None):
    (st.success if msg[0] == "ok" else st.info)(msg[1])

accounts = repo.accounts(db)
accounts = accounts[accounts["is_active"].astype(bool)]
acct_names = dict(zip(accounts["id"].astype(int), accounts["name"], strict=True))
if not acct_names:
    st.warning("Add an active account on the Accounts page first.")
    st.stop()

def first_match(query: str) -> tuple[str, int] | None:
    """The search's first contract and its lot size."""
    hit = repo.search_instruments(db, query, limit=1)
    return None if hit.empty else (f"{hit['symbol'].iloc[0]}|{hit['exchange'].iloc[0]}",
                                   int(hit["lotsize"].iloc[0] or 1))


def new_search():
    """A new search is a new instrument: the contract picked for the previous one must not stay selected, nor its
    preview placeable (Place order would send it). The contract is SET to the new search's first match, not just
    dropped: a dropped value leaves the browser's select showing the old contract. The quantity starts again at
    one lot of it (65 NIFTY units are not 65 RELIANCE shares). The option chain's prefill sets the search and the
    contract together, before this runs."""
    ss.pop("quick.pending", None)
    if (first := first_match(ss.get("quick.search", ""))) is None:
        ss.pop("quick.contract", None)
    else:
        ss["quick.contract"], ss["quick.qty"] = first


def new_contract():
    ss.pop("quick.pending", None)  # the preview was of the contract picked before


query = st.text_input("Search symbol (name or symbol prefix)", key="quick.search", placeholder="NIFTY, RELIANCE…",
                      on_change=new_search)
matches = repo.search_instruments(db, query)
options = [f"{r.symbol}|{r.exchange}" for r in matches.itertuples(index=False)]
if ss.get("quick.contract") and ss["quick.contract"] not in options:
    sym, ex = ss["quick.contract"].split("|", 1)
    # kept only while it still answers the search (a prefilled contract beyond the search's first results)
    if query and sym.upper().startswith(query.strip().upper()) and repo.instrument(db, sym, ex):
        options.insert(0, ss["quick.contract"])
    elif options:
        ss["quick.contract"] = options[0]
    else:
        ss.pop("quick.contract", None)
if not options:
    st.caption("Type a symbol or underlying name to search the symbol master." if not query
               else f"No instrument starts with '{query}'.")
    st.stop()
choice = st.selectbox("Contract", options, key="quick.contract", format_func=lambda o: o.replace("|", " · "),
                      on_change=new_contract)
symbol, exchange = choice.split("|", 1)
inst = repo.instrument(db, symbol, exchange) or {}
lot, tick = int(inst.get("lotsize") or 1), float(inst.get("tick_size") or 0.05)
price_row = repo.latest_price(db, symbol, exchange)
st.caption(f"Lot size **{lot}** · tick {tick:g} · LTP **{rupees(price_row['ltp']) if price_row else '—'}**"
           + (f" · expiry {inst['expiry']}" if inst.get("expiry") else ""))

with st.form("quick.form"):
    c1, c2, c3 = st.columns(3)
    account_id = c1.selectbox("Account", list(acct_names), format_func=acct_names.get, key="quick.account")
    action = c2.radio("Action", ["BUY", "SELL"], horizontal=True, key="quick.action")
    ss.setdefault("quick.qty", lot)
    qty = c3.number_input(f"Quantity (multiple of {lot})", min_value=0, step=lot, key="quick.qty")
    products = ["NRML", "MIS"] if exchange in DERIVATIVE_EXCHANGES else ["MIS", "CNC"]
    pricetype = c1.selectbox("Price type", PRICETYPES, key="quick.pricetype")
    product = c2.selectbox("Product", products, key=f"quick.product.{'fo' if lot > 1 else 'eq'}")
    price = c3.number_input("Price (LIMIT / SL)", min_value=0.0, step=tick, format="%.2f", key="quick.price")
    trigger = c1.number_input("Trigger price (SL / SL-M)", min_value=0.0, step=tick, format="%.2f",
                              key="quick.trigger")
    # optional protection, watched by the service once the entry fills (empty = none)
    sl_value = c2.number_input("Stop-loss (optional)", value=None, step=1.0, key="quick.sl_value")
    sl_mode = c3.radio("Stop-loss in", list(MODE_LABELS), format_func=MODE_LABELS.get, horizontal=True,
                       key="quick.sl_mode")
    tp_value = c2.number_input("Target (optional)", value=None, step=1.0, key="quick.tp_value")
    tp_mode = c3.radio("Target in", list(MODE_LABELS), format_func=MODE_LABELS.get, horizontal=True,
                       key="quick.tp_mode")
    preview = st.form_submit_button("Preview order", key="quick.preview", disabled=not health["orders_ok"])
if not health["orders_ok"]:
    st.warning("Order entry is disabled while the background service is down.")

if preview:
    req = OrderRequest(account_id=int(account_id), symbol=symbol, exchange=exchange, action=action, quantity=qty,
                       pricetype=pricetype, product=product, price=price, trigger_price=trigger)
    try:
        with db.read() as s:
            fields = validate_order(s, req, settings.market)
            problems = []
            ltp = price_row["ltp"] if price_row else None
            spec = validate_stops(StopSpec(sl_mode, sl_value, tp_mode, tp_value), fields["action"], ltp)
            try:
                guarded(s, fields, settings.orders, confirmed=False)
            except NeedsConfirmation as exc:  # shown on the ticket; Place order waits for the second confirmation
                problems = exc.problems
        stops = None
        if spec:
            sl, tp = levels(spec, fields["action"], ltp) if ltp else (None, None)
            stops = dict(spec=spec.__dict__, line=preview_line(fields["action"], ltp, (spec.sl_mode, spec.sl_value, sl),
                                                               (spec.tp_mode, spec.tp_value, tp)))
        ss["quick.pending"] = dict(req=req.__dict__, fields=fields, coid=ss["quick.coid"], problems=problems,
                                   stops=stops)
    except USER_ERRORS as exc:
        ss.pop("quick.pending", None)
        st.error(str(exc))

pending = ss.get("quick.pending")
if pending and (pending["req"]["symbol"], pending["req"]["exchange"]) != (symbol, exchange):
    ss.pop("quick.pending", None)  # a preview is only ever of the contract on screen
    pending = None
if pending:
    f = pending["fields"]
    with st.container(border=True):
        st.markdown(f"**{f['action']} {f['requested_qty']} × {f['symbol']}** ({f['exchange']}, {f['product']}, "
                    f"{f['pricetype']}{' @ ' + rupees(f['limit_price']) if f['limit_price'] else ''}"
                    f"{', trigger ' + rupees(f['trigger_price']) if f['trigger_price'] else ''}) "
                    f"on **{acct_names.get(f['account_id'], f['account_id'])}**")
        if pending.get("stops"):
            st.markdown(pending["stops"]["line"])
        st.caption(f"client_order_id `{pending['coid']}`")
        problems = pending.get("problems") or []
        confirmed = False
        if problems:
            st.warning("Check this order before placing it:\n\n" + "\n".join(f"- {p}" for p in problems))
            confirmed = st.checkbox("I have checked it: place it anyway", key="quick.confirm_guard")
        b1, b2 = st.columns(2)
        submit = b1.button("Place order", type="primary", key="quick.submit",
                           disabled=not health["orders_ok"] or (bool(problems) and not confirmed))
        if b2.button("Edit", key="quick.edit"):
            ss.pop("quick.pending", None)
            st.rerun()
    if submit:
        try:
            stops = pending.get("stops")
            intent_id, created = enqueue_order(db, OrderRequest(**pending["req"]), pending["coid"],
                                               confirmed=confirmed, guards=settings.orders,
                                               stops=StopSpec(**stops["spec"]) if stops else None,
                                               market=settings.market)
        except USER_ERRORS as exc:
            st.error(str(exc))
        else:
            # Record the outcome before any other Streamlit call: a second click re-runs with the same id.
            ss["quick.last_intent"] = intent_id
            ss.pop("quick.pending", None)
            ss.pop("quick.confirm_guard", None)  # the next unusual order is confirmed afresh
            ss["quick.coid"] = new_client_order_id()
            ss["quick.flash"] = ("ok", f"Order queued as intent #{intent_id}.") if created else \
                ("info", f"Already submitted as intent #{intent_id}; not sent again.")
            st.rerun()


@st.fragment(run_every=settings.ui.refresh_s)
def last_intent_status():
    intent_id = ss.get("quick.last_intent")
    if not intent_id:
        return
    i = repo.intent(db, intent_id)
    if i:
        st.markdown(f"Last order #{i['id']}: {i['action']} {i['requested_qty']} {i['symbol']} → "
                    f"{status_chip(i['status'], ORDER_COLORS)} {i['status_reason'] or ''}"
                    + (f" · broker id `{i['broker_order_id']}`" if i["broker_order_id"] else "")
                    + (f" · filled {i['broker_filled_qty']} @ {rupees(i['broker_avg_price'])}"
                       if i["broker_filled_qty"] else ""))
        if i["status"] in (Status.REJECTED, Status.DENIED):  # why, in words a trader reads at a glance
            who = "The broker rejected it" if i["status"] == Status.REJECTED else "Not sent"
            st.error(f"{who}: {i['status_reason'] or 'no reason given'}")


last_intent_status()
