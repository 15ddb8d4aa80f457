"""Position monitor: keeps open positions subscribed and batches prices / P&L into SQLite.

- ``refresh_subscriptions()`` (runner: every 1-2 s and after fills) subscribes consumer "positions" to exactly
  the symbols with an open position (positions.quantity != 0, executions entered/exiting) and drops the rest;
  consumer "underlyings" holds saved strategies' underlyings (LTP) so Execute can resolve ATM strikes.
- The market-data listener only stores the latest tick per symbol in memory (every subscribed symbol: positions,
  option chains, underlyings), so the tick path never touches the database.
- ``flush()`` (runner: every flush_interval_s) writes, in ONE transaction, latest_prices for the symbols that
  ticked, positions.ltp / unrealized_pnl / pnl for them, and every pnl_snapshot_s a pnl_snapshots row per
  account (run_id NULL) and per active/exiting strategy run.
  positions.quantity is signed (negative = short), so unrealized = (ltp - average_price) x quantity.
"""
from __future__ import annotations

import json
import threading
import time

from db.models import utcnow
from db.prices import (account_pnl_totals, held_symbols, holding_runs, insert_snapshots, legs_of_runs,
                       mark_positions, strategy_underlying_keys, upsert_prices)
from services.context import ServiceContext
from services.market_data import MarketDataManager
from services.pnl import Leg, fill_seen_at, run_pnl, utc_epoch

CONSUMER = "positions"
UNDERLYINGS = "underlyings"
Key = tuple[str, str]


def _best(depth: dict | None, side: str) -> float | None:
    levels = (depth or {}).get(side) or []
    return levels[0].get("price") if levels and isinstance(levels[0], dict) else None


def price_row(key: Key, data: dict, now) -> dict:
    depth = data.get("depth") if isinstance(data.get("depth"), dict) else None
    return dict(symbol=key[0], exchange=key[1], ltp=data["ltp"],
                bid=data.get("bid", _best(depth, "buy")), ask=data.get("ask", _best(depth, "sell")),
                volume=data.get("volume"), oi=data.get("oi"), depth_json=json.dumps(depth) if depth else "",
                tick_ts=now)


class PositionMonitor:
    def __init__(self, ctx: ServiceContext, md: MarketDataManager, mode: int = 2):
        self.ctx, self.md, self.mode = ctx, md, mode
        self.cfg = ctx.settings.service
        self._dirty: dict[Key, dict] = {}
        self._lock = threading.Lock()
        self._last_snapshot: float | None = None  # None: the first flush snapshots
        md.add_listener(self._on_tick)

    def _on_tick(self, symbol: str, exchange: str, data: dict) -> None:
        with self._lock:
            self._dirty[(symbol, exchange)] = data

    # ---- subscriptions ---------------------------------------------------------------------------------------
    def open_symbols(self) -> set[Key]:
        with self.ctx.db.read() as s:
            return held_symbols(s)

    def underlyings(self) -> set[Key]:
        """Underlyings of saved strategies: Execute resolves ATM from their latest_prices row."""
        with self.ctx.db.read() as s:
            return strategy_underlying_keys(s)

    def refresh_subscriptions(self) -> set[Key]:
        """Open positions under consumer "positions"; strategy underlyings (LTP) under "underlyings"."""
        keys = self.open_symbols()
        self._hold(CONSUMER, keys, self.mode)
        self._hold(UNDERLYINGS, self.underlyings(), 1)
        return keys

    def _hold(self, consumer: str, keys: set[Key], mode: int) -> None:
        held = self.md.held_by(consumer)
        if keys - held:
            self.md.subscribe(consumer, sorted(keys - held), mode)
        if held - keys:
            self.md.unsubscribe(consumer, sorted(held - keys), mode)

    # ---- batch writes ----------------------------------------------------------------------------------------
    def flush(self) -> int:
        """Write what changed since the last flush (and a P&L snapshot when due) in one transaction."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        last = self._last_snapshot
        snapshot_due = last is None or time.monotonic() - last >= self.cfg.pnl_snapshot_s
        if not dirty and not snapshot_due:
            return 0
        now = utcnow()
        if dirty:
            with self.ctx.db.write() as s:
                upsert_prices(s, [price_row(k, d, now) for k, d in dirty.items()])
                mark_positions(s, {k: d["ltp"] for k, d in dirty.items()}, now)
        if snapshot_due:
            self.snapshot_pnl()
        return len(dirty)

    def snapshot_pnl(self) -> int:
        """pnl_snapshots rows: one per account with positions, one per active/exiting strategy run. Computed on a
        read snapshot taken after the marks above committed, then inserted in a transaction of its own: with the
        reads and the P&L of every run inside the write transaction, the writer lock was held 20-100 ms a second
        on a day of a few hundred runs, and an order's claim or an exit waited behind it."""
        self._last_snapshot = time.monotonic()
        now = utcnow()
        with self.ctx.db.read() as s:
            rows = self._account_snapshots(s, now) + self._run_snapshots(s, now)
        if rows:
            with self.ctx.db.write() as s:
                insert_snapshots(s, rows)
        return len(rows)

    @staticmethod
    def _account_snapshots(s, now) -> list[dict]:
        totals = account_pnl_totals(s)
        return [dict(ts_utc=now, account_id=a, run_id=None, realized=r or 0.0, unrealized=u or 0.0,
                     total=(r or 0.0) + (u or 0.0), tsl_peak=None, tsl_stop=None) for a, r, u in totals]

    def _run_snapshots(self, s, now) -> list[dict]:
        runs = holding_runs(s)
        if not runs:
            return []
        legs: dict[int, list[Leg]] = {}
        clock_now, wall_now = self.md.clock(), time.time()
        for ex in legs_of_runs(s, [r.id for r in runs]):
            seen = fill_seen_at(ex.status, utc_epoch(ex.updated_at), clock_now, wall_now)
            legs.setdefault(ex.run_id, []).append(Leg.of(ex, seen))
        out = []
        for run in runs:
            pnl = run_pnl(legs.get(run.id, []), self.md.last_price)
            realized, unrealized = pnl if pnl is not None else (0.0, run.pnl)
            out.append(dict(ts_utc=now, account_id=run.account_id, run_id=run.id, realized=realized,
                            unrealized=unrealized, total=realized + unrealized, tsl_peak=run.tsl_peak,
                            tsl_stop=run.tsl_stop))
        return out
