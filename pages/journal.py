"""Order Journal: why did this happen. One strategy run's (or one order's) timeline from the audit rows: claimed,
sent, placed, filled; the risk event that caused an exit and the prices it was decided on."""
import streamlit as st

from db import history
from db import repo
from pages._common import init_page
from ui.format import ist_str, rupees, table
from ui.journal import decided_on, timeline

db, settings, health = init_page("Order Journal", ":material/timeline:")
mode = st.sidebar.radio("Look at", ["Strategy run", "Order"], key="journal.mode", horizontal=True)

run_id = intent_id = None
if mode == "Strategy run":
    runs = repo.runs(db, limit=500)
    if runs.empty:
        st.caption("No strategy runs yet.")
        st.stop()
    labels = {int(r.id): f"#{r.id} {r.strategy} · {r.account} ({r.status})" for r in runs.itertuples(index=False)}
    run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="journal.run_id")
    r = runs[runs["id"] == run_id].iloc[0]
    m = st.columns(4)
    m[0].metric("Status", r["status"])
    m[1].metric("P&L", rupees(r["pnl"], signed=True))
    m[2].metric("Started", ist_str(r["started_at"], "%d %b %H:%M:%S"))
    m[3].metric("Exit reason", r["exit_reason"] or "—")
else:
    intent_id = int(st.number_input("Order intent id", min_value=1, step=1, key="journal.intent_id"))
    found = repo.intent(db, intent_id)
    if found is None:
        st.caption(f"No order intent #{intent_id}.")
        st.stop()
    st.markdown(f"**#{intent_id}** {found['action']} {found['requested_qty']} {found['symbol']} "
                f"({found['exchange']}) · **{found['status']}** {found['status_reason']}")
    run_id = history.intent_run(db, intent_id)

risk = history.run_risk_events(db, run_id) if run_id is not None else []
if intent_id is not None:  # only the risk events that wrote this order
    coid = found["client_order_id"]
    risk = [ev for ev in risk if coid in map(str, ev["exit_order_ids"])]
events = history.order_timeline(db, run_id=run_id) if intent_id is None else \
    history.order_timeline(db, intent_id=intent_id)

for ev in (ev for ev in risk if ev["action"] == "exit"):
    with st.container(border=True):
        st.markdown(f"**Why it exited:** {ev['event_type']} at {ev['ts_ist'] or ist_str(ev['ts_utc'])} — "
                    f"P&L {rupees(ev['value'], signed=True)} against limit {rupees(ev['threshold'], signed=True)}")
        legs = decided_on(ev["decided_on"])
        table(legs, key=f"journal.decided_{ev['id']}",
              empty="The prices it was decided on were not recorded for this exit (written by an older release).")

st.markdown("**Timeline**")
table(timeline(events, risk), key="journal.timeline", height=480, empty="No order events recorded for this yet.")
