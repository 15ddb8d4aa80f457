"""History: day summaries over many days (equity curve, drawdown, win rate, best / worst day, per strategy) and
CSV exports of orders, trades and day summaries."""
from datetime import timedelta

import streamlit as st

from db import history
from db import repo
from db.clock import today_ist
from db.commands import enqueue_control
from pages._common import USER_ERRORS, init_page
from ui import charts
from ui.format import rupees, table
from ui.history import by_strategy, csv_bytes, daily, stats
from ui.widgets import account_picker

db, settings, health = init_page("History", ":material/history:")
names = repo.account_names(db)
acct = account_picker(names, key="history.account_id")
today = today_ist()
picked = st.sidebar.date_input("Days", value=(today - timedelta(days=90), today), max_value=today,
                               key="history.days")
if isinstance(picked, tuple):  # a range still being picked has one end only
    start, end = (picked[0], picked[-1]) if picked else (today, today)
else:
    start = end = picked

with st.sidebar.container(border=True):
    st.caption("The service writes each trading day's summary after the close "
               f"({settings.service.day_summary_at} IST). Summarise today now to see the day so far.")
    if st.button("Summarise today", key="history.summarise"):
        try:
            cmd = enqueue_control(db, "summarise_day", {})
            st.success(f"Summary requested (command #{cmd}).")
        except USER_ERRORS as exc:
            st.error(str(exc))
    if not health["up"]:
        st.caption("The service is down: the summary is written when it restarts.")

rows = history.day_summaries(db, acct, since=start)
rows = rows[rows["day"] <= end.isoformat()]
days = daily(rows)
s = stats(days)
m = st.columns(6)
m[0].metric("Net P&L", rupees(s["net"], signed=True), f"{s['days']} day(s)", delta_color="off")
m[1].metric("Winning days", "—" if s["win_rate"] is None else f"{s['win_rate']:.0f} %",
            f"{s['win_days']} won · {s['loss_days']} lost", delta_color="off")
m[2].metric("Best day", rupees(s["best"], signed=True), s["best_day"] or "—", delta_color="off")
m[3].metric("Worst day", rupees(s["worst"], signed=True), s["worst_day"] or "—", delta_color="off")
m[4].metric("Max drawdown", rupees(s["max_drawdown"]))
m[5].metric("Trades", f"{int(rows.loc[rows['strategy'] == '', 'trades'].sum()):,}", "broker fills",
            delta_color="off")
st.plotly_chart(charts.equity_curve(days), key="history.equity", width="stretch")

left, right = st.columns([3, 2])
with left:
    st.markdown("**Per strategy**")
    breakdown = by_strategy(rows)
    table(breakdown, key="history.by_strategy", empty="No strategy runs in these days.",
          column_config={"win_rate": st.column_config.NumberColumn("win rate", format="%.1f %%")})
with right:
    st.plotly_chart(charts.strategy_bars(breakdown.rename(columns={"total": "pnl"})), key="history.strategy_bars",
                    width="stretch")

st.markdown("**Day summaries**")
table(rows, key="history.days_table", empty="No day summaries in these days yet.")

st.markdown("**Export (CSV)**")
stem = f"{start}_{end}" + (f"_{names.get(acct, acct)}" if acct is not None else "")
c = st.columns(3)
c[0].download_button("Orders", csv_bytes(history.orders_between(db, start, end, acct)), f"orders_{stem}.csv",
                     "text/csv", key="history.csv_orders")
c[1].download_button("Trades", csv_bytes(history.trades_between(db, start, end, acct)), f"trades_{stem}.csv",
                     "text/csv", key="history.csv_trades")
c[2].download_button("Day summaries", csv_bytes(rows), f"day_summaries_{stem}.csv", "text/csv",
                     key="history.csv_days")
