"""History figures from day summaries (DataFrame in, numbers / frames out; no Streamlit, no DB).

Input: the rows of db.history.day_summaries (day, account, strategy, realized, unrealized, total, trades, wins,
losses, ...). Account rows (strategy '') are what the equity curve and the day statistics sum; strategy rows make
the per-strategy breakdown.
"""
from __future__ import annotations

import pandas as pd

from ui.format import TIME_COLS, localize

DAILY_COLS = ["day", "total", "equity", "peak", "drawdown"]


def daily(summaries: pd.DataFrame) -> pd.DataFrame:
    """One row per day over the account rows: the day's total, the cumulative equity, its running peak and the
    drawdown from that peak (<= 0)."""
    acct = summaries[summaries["strategy"] == ""] if not summaries.empty else summaries
    if acct.empty:
        return pd.DataFrame(columns=DAILY_COLS)
    out = acct.groupby("day", as_index=False)["total"].sum().sort_values("day").reset_index(drop=True)
    out["equity"] = out["total"].cumsum()
    out["peak"] = out["equity"].cummax().clip(lower=0.0)  # starting capital is the zero line
    out["drawdown"] = out["equity"] - out["peak"]
    return out[DAILY_COLS]


def stats(days: pd.DataFrame) -> dict:
    """Headline numbers of a daily() frame: net, days, winning days %, best / worst day, max drawdown."""
    if days.empty:
        return dict(net=0.0, days=0, win_days=0, loss_days=0, win_rate=None, best=None, worst=None,
                    best_day=None, worst_day=None, max_drawdown=0.0)
    wins, losses = int((days["total"] > 0).sum()), int((days["total"] < 0).sum())
    best, worst = days.loc[days["total"].idxmax()], days.loc[days["total"].idxmin()]
    return dict(net=float(days["total"].sum()), days=len(days), win_days=wins, loss_days=losses,
                win_rate=wins / (wins + losses) * 100.0 if wins + losses else None,
                best=float(best["total"]), best_day=best["day"], worst=float(worst["total"]),
                worst_day=worst["day"], max_drawdown=float(days["drawdown"].min()))


BREAKDOWN_COLS = ["strategy", "days", "runs", "wins", "losses", "win_rate", "realized", "unrealized", "total"]


def by_strategy(summaries: pd.DataFrame) -> pd.DataFrame:
    """Per strategy over the strategy rows: days traded, runs, wins / losses, win rate % (of finished runs with a
    result), realised, unrealised and total P&L; best strategy first."""
    rows = summaries[summaries["strategy"] != ""] if not summaries.empty else summaries
    if rows.empty:
        return pd.DataFrame(columns=BREAKDOWN_COLS)
    g = rows.groupby("strategy", as_index=False).agg(
        days=("day", "nunique"), runs=("trades", "sum"), wins=("wins", "sum"), losses=("losses", "sum"),
        realized=("realized", "sum"), unrealized=("unrealized", "sum"), total=("total", "sum"))
    decided = g["wins"] + g["losses"]
    g["win_rate"] = (g["wins"] / decided.where(decided > 0) * 100.0).round(1)
    return g.sort_values("total", ascending=False).reset_index(drop=True)[BREAKDOWN_COLS]


def csv_bytes(df: pd.DataFrame) -> bytes:
    """A frame as UTF-8 CSV (with a BOM, so a spreadsheet reads ₹ and names right); times in IST, their columns
    named so (``created_at`` -> ``created_at_ist``)."""
    out = localize(df).rename(columns={c: c.removesuffix("_utc") + "_ist" for c in df.columns if c in TIME_COLS})
    return out.to_csv(index=False).encode("utf-8-sig")
