"""API & Webhooks: keys of the local API (shown once, stored hashed, revocable), webhook rules (token shown once),
and the log of every alert the rules received with what it did."""
import streamlit as st

from db import repo
from db.api_keys import create_key, list_keys, revoke_key
from db.webhooks import RuleKind, create_rule, list_alerts, list_rules, revoke_rule
from pages._common import USER_ERRORS, init_page
from ui.format import table

db, settings, health = init_page("API & Webhooks", ":material/api:")
ss = st.session_state
base_url = f"http://{settings.api.host}:{settings.api.port}"
st.caption(f"The local API runs as `python -m api` on {base_url} (documentation at {base_url}/docs). It writes the "
           "same command rows as these pages; only the background service talks to the broker.")


def show_once(slot: str, title: str, secret: str, note: str) -> None:
    """A new key or token, on this run only: it is not stored anywhere it could be shown again."""
    with st.container(border=True):
        st.success(title)
        st.code(secret, language=None)
        st.caption(note)
    ss.pop(slot, None)


st.subheader("API keys")
if new := ss.get("api.new_key"):
    show_once("api.new_key", f"Key '{new[0]}' created. Copy it now: it is shown only this once.", new[1],
              "Send it as the X-API-KEY header. Only its argon2 hash is kept.")
keys = list_keys(db)
table(keys, key="api.keys", empty="No API keys yet.")
k1, k2 = st.columns(2)
with k1.form("api.key_form", clear_on_submit=True):
    key_name = st.text_input("Key name", key="api.key_name", placeholder="e.g. amibroker")
    if st.form_submit_button("Create key", key="api.create_key", type="primary"):
        try:
            _, secret = create_key(db, key_name)
            ss["api.new_key"] = (key_name.strip(), secret)
            st.rerun()
        except USER_ERRORS as exc:
            st.error(str(exc))
live_keys = keys[keys["revoked_at"].isna()] if not keys.empty else keys
if not live_keys.empty:  # drawn only with keys to choose from, so its choice is never empty
    with k2.container(border=True):
        labels = {int(r.id): f"#{r.id} {r.name} ({r.prefix}…)" for r in live_keys.itertuples(index=False)}
        pick = st.selectbox("Key to revoke", list(labels), format_func=labels.get, key="api.revoke_id")
        sure = st.checkbox("Confirm revoke", key="api.revoke_confirm")
        if st.button("Revoke key", key="api.revoke", disabled=not sure):
            try:
                revoke_key(db, int(pick))
                st.rerun()
            except USER_ERRORS as exc:
                st.error(str(exc))

st.divider()
st.subheader("Webhook rules")
if new := ss.get("api.new_rule"):
    show_once("api.new_rule", f"Rule '{new[0]}' created. Copy its URL now: the token is shown only this once.",
              f"{base_url}/webhook/{new[1]}", "Paste it as the alert's webhook URL (TradingView, Chartink).")
rules = list_rules(db)
table(rules, key="api.rules", empty="No webhook rules yet.")
strategies = repo.strategies(db)
accounts = repo.accounts(db)
accounts = accounts[accounts["is_active"].astype(bool)]
acct_names = dict(zip(accounts["id"].astype(int), accounts["name"], strict=True))
strat_names = dict(zip(strategies["id"].astype(int), strategies["name"], strict=True))
with st.expander("New rule", expanded=rules.empty):
    kind = st.radio("Alert kind", [k.value for k in RuleKind], horizontal=True, key="api.rule_kind",
                    format_func={RuleKind.STRATEGY.value: "Strategy (enter / exit)",
                                 RuleKind.SYMBOLS.value: "Symbol list (Chartink)"}.get)
    r1, r2 = st.columns(2)
    rule_name = r1.text_input("Rule name", key="api.rule_name", placeholder="e.g. TV NIFTY straddle")
    rule_accounts = r2.multiselect("Accounts", list(acct_names), format_func=acct_names.get, key="api.rule_accounts")
    opts: dict = {}
    if kind == RuleKind.STRATEGY:
        c1, c2 = st.columns(2)
        opts["strategy_id"] = c1.selectbox("Strategy", list(strat_names), format_func=strat_names.get,
                                           key="api.rule_strategy")
        opts["default_action"] = c2.selectbox("When the alert has no action", ["", "enter", "exit"],
                                              format_func=lambda a: a or "refuse it", key="api.rule_default")
        st.caption('Alert body: {"strategy": "<name>", "action": "enter"} or "exit" (exits its live runs).')
    else:
        c1, c2, c3, c4 = st.columns(4)
        opts["order_action"] = c1.selectbox("Side", ["BUY", "SELL"], key="api.rule_side")
        opts["quantity"] = c2.number_input("Quantity per symbol", min_value=1, step=1, key="api.rule_qty")
        opts["exchange"] = c3.selectbox("Exchange", ["NSE", "BSE"], key="api.rule_exchange")
        opts["product"] = c4.selectbox("Product", ["MIS", "CNC"], key="api.rule_product")
        st.caption("Each symbol in the alert's 'stocks' list becomes one MARKET order of this size on each account.")
    if st.button("Create rule", key="api.create_rule", type="primary"):
        try:
            _, token = create_rule(db, rule_name, kind, [int(a) for a in rule_accounts], **opts)
            ss["api.new_rule"] = (rule_name.strip(), token)
            st.rerun()
        except USER_ERRORS as exc:
            st.error(str(exc))
live_rules = rules[rules["revoked_at"].isna()] if not rules.empty else rules
if not live_rules.empty:
    labels = {int(r.id): f"#{r.id} {r.name} ({r.token_prefix}…)" for r in live_rules.itertuples(index=False)}
    c1, c2 = st.columns([3, 1])
    pick = c1.selectbox("Rule to revoke", list(labels), format_func=labels.get, key="api.rule_revoke_id")
    sure = c2.checkbox("Confirm", key="api.rule_revoke_confirm")
    if c2.button("Revoke rule", key="api.rule_revoke", disabled=not sure):
        try:
            revoke_rule(db, int(pick))
            st.rerun()
        except USER_ERRORS as exc:
            st.error(str(exc))

st.divider()
st.subheader("Alert log")
auto = st.sidebar.toggle("Auto-refresh", value=True, key="api.auto")


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def alert_log():
    table(list_alerts(db), key="api.alerts", height=360, empty="No alerts received yet.")


alert_log()
