"""Strategy runs as the risk manager reads and writes them (strategy_runs with their executions): plain sqlite3
statements, since the live set is re-read every second beside the market-data thread.

The run's move to 'exiting' is part of writing its exits (db/exits.py ``write_run_exit``); every other run status
is derived from its legs (db/executions.py ``refresh_run``).
"""
from __future__ import annotations

from db.order_fsm import sql_in
from db.rawsql import raw_cursor
from db.run_fsm import LIVE_RUN

LIVE_RUNS_SQL = ("SELECT r.id, r.account_id, r.max_loss, r.max_profit, r.trailing_sl, r.tsl_peak, r.tsl_stop, r.pnl, "
                 "s.name FROM strategy_runs r JOIN strategies s ON s.id = r.strategy_id "
                 f"WHERE r.status IN {sql_in(LIVE_RUN)} ORDER BY r.id")
# Then the leg's updated_at as UTC epoch seconds (when an entered leg's fill was recorded), then the leg's own
# stops (LEG_STOP_COLUMNS).
LEG_STOP_COLUMNS = ("sl_mode", "sl_value", "tp_mode", "tp_value", "trail_points", "leg_best")
LIVE_LEGS_SQL = ("SELECT e.run_id, e.id, e.leg_no, e.symbol, e.exchange, e.action, e.quantity, e.product, e.status, "
                 "e.entry_price, e.exit_price, (julianday(e.updated_at) - 2440587.5) * 86400.0, "
                 f"{', '.join('e.' + c for c in LEG_STOP_COLUMNS)} "
                 "FROM executions e JOIN strategy_runs r ON r.id = e.run_id "
                 f"WHERE r.status IN {sql_in(LIVE_RUN)} ORDER BY e.run_id, e.leg_no, e.id")
LEG_BEST_SQL = "UPDATE executions SET leg_best = ? WHERE id = ?"
PERSIST_SQL = ("UPDATE strategy_runs SET pnl = ?, tsl_peak = ?, tsl_stop = ? "
               f"WHERE id = ? AND status IN {sql_in(LIVE_RUN)}")


def live_runs(s) -> tuple[list[tuple], list[tuple]]:
    """(runs, legs) of every live run: run rows as LIVE_RUNS_SQL selects them, leg rows as LIVE_LEGS_SQL."""
    cur = raw_cursor(s)
    runs = cur.execute(LIVE_RUNS_SQL).fetchall()
    return runs, (cur.execute(LIVE_LEGS_SQL).fetchall() if runs else [])


def persist_pnl(s, rows: list[tuple]) -> None:
    """(pnl, tsl_peak, tsl_stop, run id) per run, in one executemany (the writer lock is held ~1 ms)."""
    raw_cursor(s).executemany(PERSIST_SQL, rows)


def persist_leg_best(s, rows: list[tuple]) -> None:
    """(best price since entry, execution id) per leg with a trailing stop: a restart keeps the trail."""
    raw_cursor(s).executemany(LEG_BEST_SQL, rows)
