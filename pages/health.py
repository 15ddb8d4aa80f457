"""Service Health: heartbeats per component, market-data feed details, queue depths, recent errors."""
import json

import pandas as pd
import streamlit as st

from db import repo
from pages._common import init_page
from ui.format import age_str, table

db, settings, health = init_page("Service Health", ":material/health_and_safety:")
auto = st.sidebar.toggle("Auto-refresh", value=True, key="health.auto")
STALE = settings.ui.service_stale_s


def details(raw: str) -> dict:
    try:
        v = json.loads(raw or "{}")
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def components():
    hb = repo.heartbeats(db)
    if hb.empty:
        st.error("No component has ever written a heartbeat: start the service (python -m services.runner).")
    else:
        hb["state"] = ["● ok" if a <= STALE and s == "ok" else ("✕ stale" if a > STALE else f"▲ {s}")
                       for a, s in zip(hb["age_s"], hb["status"], strict=True)]
        hb["age"] = [age_str(a) for a in hb["age_s"]]
        table(hb[["component", "state", "age", "status", "pid", "last_beat", "details_json"]], key="health.beats")
        md = hb[hb["component"] == "market_data"]
        if not md.empty:
            d = details(md.iloc[0]["details_json"])
            c = st.columns(5)
            c[0].metric("Feed", "connected" if d.get("connected") else "disconnected")
            c[1].metric("Feed account", str(d.get("account", "—")))
            c[2].metric("Subscriptions", d.get("subscriptions", "—"))
            tick = d.get("last_tick_age_s")
            c[3].metric("Last tick", age_str(tick) + " ago" if tick is not None else "—")
            c[4].metric("Reconnects", d.get("reconnects", "—"))
    intents, cmds = repo.queue_depths(db)
    left, right = st.columns(2)
    left.markdown("**Order intents by status**")
    with left:
        table(intents, key="health.intents", empty="No intents.")
    right.markdown("**Control commands**")
    with right:
        table(cmds, key="health.commands", empty="No control commands.")


components()


@st.fragment(run_every=settings.ui.refresh_s if auto else None)
def brokers():
    st.subheader("Broker gateways")
    st.caption(f"What the service last saw of each account (it pings every {settings.service.account_ping_s:g} s); "
               "calls, error rate and latency over the last 15 minutes.")
    bh = repo.broker_health(db)
    if not bh.empty:
        bh["error_rate"] = [f"{r:.0%}" if r == r and r is not None else "—" for r in bh["error_rate"]]
        for c in ("p50_ms", "p99_ms"):
            bh[c] = [f"{v:,.1f}" if v == v and v is not None else "—" for v in bh[c]]
    table(bh, key="health.brokers", empty="No accounts yet.")
    with st.expander("Recent broker calls"):
        table(repo.broker_calls(db), key="health.calls", empty="No broker calls recorded yet.")


brokers()
st.subheader("Alerts")
table(repo.alerts(db), key="health.alerts", height=240,
      empty="No alerts. Alerts also go to the targets in APP__ALERTS__URLS (Telegram, Discord, e-mail, webhooks).")
st.subheader("Recent warnings and errors")
level = st.radio("Level", ["WARNING", "ERROR"], horizontal=True, key="health.level")
log = repo.service_log(db, 200, level)
table(log, key="health.log", height=400, empty="No warnings or errors logged.")
with st.expander("Recent control commands"):
    table(repo.control_commands(db), key="health.recent_commands")
if not log.empty:
    st.caption(f"{len(log)} rows · newest {log['ts_utc'].max() if not pd.isna(log['ts_utc'].max()) else '—'} UTC")
