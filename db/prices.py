"""Prices and P&L as the position monitor (services/positions.py) writes them: latest_prices, the positions'
mark-to-market, pnl_snapshots; and the reads that say what it subscribes (held symbols, strategy underlyings)
and what it snapshots (account totals, holding runs and their legs). The UI's reads are in db/repo.py.
positions.quantity is signed (negative = short), so unrealized = (ltp - average_price) x quantity."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import DateTime, bindparam, case, func, select, text
from sqlalchemy.dialects.sqlite import insert

from db.clock import today_ist
from db.models import Execution, LatestPrice, PnlSnapshot, Position, Strategy, StrategyRun, utcnow
from db.order_fsm import values
from db.run_fsm import ACTIVE_LEG, HOLDING_RUN

Key = tuple[str, str]
PRICE_COLUMNS = ("ltp", "bid", "ask", "volume", "oi", "depth_json", "tick_ts")
# Mark-to-market of every position in one symbol (executemany: one statement per flush).
POSITION_MARK = text(
    "UPDATE positions SET ltp = :ltp, "
    "unrealized_pnl = CASE WHEN quantity != 0 THEN (:ltp - average_price) * quantity ELSE 0.0 END, "
    "pnl = realized_pnl + CASE WHEN quantity != 0 THEN (:ltp - average_price) * quantity ELSE 0.0 END, "
    "updated_at = :now WHERE symbol = :sym AND exchange = :ex").bindparams(bindparam("now", type_=DateTime()))
LEG_COLUMNS = (Execution.id, Execution.run_id, Execution.leg_no, Execution.symbol, Execution.exchange,
               Execution.action, Execution.quantity, Execution.product, Execution.status, Execution.entry_price,
               Execution.exit_price, Execution.updated_at)


# ---- writes (one flush transaction) -------------------------------------------------------------------------------
def upsert_prices(s, rows: list[dict]) -> None:
    """Insert or update latest_prices rows (symbol, exchange + PRICE_COLUMNS) in one executemany. The first OI of
    an IST day is kept as ``oi_base`` (the option chain's change in OI), kept until the next day's first OI.
    Returns nothing."""
    if not rows:
        return
    day = today_ist().isoformat()
    rows = [{**r, "oi_base": r.get("oi"), "oi_base_day": day} for r in rows]
    stmt = insert(LatestPrice)
    same_day = (LatestPrice.oi_base_day == stmt.excluded.oi_base_day) & LatestPrice.oi_base.is_not(None)
    s.execute(stmt.on_conflict_do_update(index_elements=["symbol", "exchange"], set_={
        **{c: getattr(stmt.excluded, c) for c in PRICE_COLUMNS},
        "oi_base": case((same_day, LatestPrice.oi_base), else_=stmt.excluded.oi_base),
        "oi_base_day": case((same_day, LatestPrice.oi_base_day), else_=stmt.excluded.oi_base_day)}), rows)


def mark_positions(s, ltps: dict[Key, float], now: datetime) -> None:
    """One executemany UPDATE: ltp, unrealized and total P&L of every position in a ticked symbol. Returns
    nothing."""
    if not ltps:
        return
    s.execute(POSITION_MARK, [{"ltp": ltp, "sym": sym, "ex": ex, "now": now} for (sym, ex), ltp in ltps.items()])


def insert_snapshots(s, rows: list[dict]) -> None:
    """pnl_snapshots rows (full rows), in one executemany. Returns nothing."""
    if rows:
        s.execute(insert(PnlSnapshot.__table__), rows)


# ---- reads ------------------------------------------------------------------------------------------------------
def held_symbols(s) -> set[Key]:
    """(symbol, exchange) of every open position (quantity != 0) and every leg that holds units."""
    pos = s.execute(select(Position.symbol, Position.exchange).where(Position.quantity != 0)).all()
    legs = s.execute(select(Execution.symbol, Execution.exchange).where(Execution.status.in_(ACTIVE_LEG))).all()
    return {(sym, ex) for sym, ex in pos} | {(sym, ex) for sym, ex in legs}


def strategy_underlying_keys(s) -> set[Key]:
    """(underlying, exchange) of every saved strategy."""
    return {(u, e) for u, e in s.execute(select(Strategy.underlying, Strategy.exchange).distinct())}


def account_pnl_totals(s) -> list:
    """(account id, realized, unrealized) per account with positions: realized summed over every position,
    unrealized over the open ones. The sums are None when no row has a value."""
    return s.execute(select(
        Position.account_id, func.sum(Position.realized_pnl),
        func.sum(case((Position.quantity != 0, Position.unrealized_pnl), else_=0.0)))
        .group_by(Position.account_id)).all()


def holding_runs(s) -> list:
    """(id, account_id, pnl, tsl_peak, tsl_stop) rows of the runs that hold legs (active / exiting)."""
    return s.execute(select(StrategyRun.id, StrategyRun.account_id, StrategyRun.pnl, StrategyRun.tsl_peak,
                            StrategyRun.tsl_stop).where(StrategyRun.status.in_(values(HOLDING_RUN)))).all()


def legs_of_runs(s, run_ids: list[int]) -> list:
    """The executions of ``run_ids``, as rows with the LEG_COLUMNS attributes."""
    return s.execute(select(*LEG_COLUMNS).where(Execution.run_id.in_(run_ids))).all()


PRICE_MAX_AGE = timedelta(seconds=120)  # an older last price is not the market's price now


def fresh_ltp(s, symbol: str, exchange: str) -> float | None:
    """The instrument's last price if the service stored a valid one at most PRICE_MAX_AGE ago, else None."""
    p = s.get(LatestPrice, (symbol, exchange))
    if p is None or not p.ltp or p.ltp <= 0 or utcnow() - p.tick_ts > PRICE_MAX_AGE:
        return None
    return float(p.ltp)
