"""Builder functions that seed a real database for UI tests (accounts, instruments, prices, intents, P&L...)."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

from sqlalchemy import insert

from db import Database
from db.accounts import add_account
from db.models import (BrokerOrder, Funds, Instrument, LatestPrice, OrderIntent, PnlSnapshot, Position,
                       RiskEvent, ServiceHeartbeat, ServiceLog, Strategy, StrategyRun, utcnow)
from ui.black_scholes import bs_price, years_to_expiry

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
API_KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"


def expiry_in(days: int = 9) -> str:
    d = (utcnow() + timedelta(days=days)).date()
    return f"{d.day:02d}-{MONTHS[d.month - 1]}-{d.year % 100:02d}"


def seed_account(db: Database, name: str = "main", **kw) -> int:
    return add_account(db, name, "http://127.0.0.1:5000", "ws://127.0.0.1:8765", API_KEY, **kw)


def seed_heartbeat(db: Database, component: str = "runner", age_s: float = 0.0, details: dict | None = None):
    with db.write() as s:
        s.merge(ServiceHeartbeat(component=component, pid=123, status="ok", details_json=json.dumps(details or {}),
                                 last_beat=utcnow() - timedelta(seconds=age_s)))


def option_symbol(name: str, expiry: str, strike: float, kind: str) -> str:
    return f"{name}{expiry.replace('-', '')}{int(strike)}{kind}"


def seed_instruments(db: Database, name: str = "NIFTY", spot: float = 26000.0, step: int = 50, each_side: int = 10,
                     lot: int = 65, expiry: str | None = None) -> str:
    """Index + one future + CE/PE chain for one expiry + an equity (RELIANCE). Returns the expiry."""
    expiry = expiry or expiry_in()
    rows = [dict(symbol=name, exchange="NSE_INDEX", name=name, instrumenttype="INDEX", lotsize=1),
            dict(symbol=f"{name}{expiry.replace('-', '')}FUT", exchange="NFO", name=name, expiry=expiry,
                 instrumenttype="FUT", lotsize=lot, freeze_qty=1800),
            dict(symbol="RELIANCE", exchange="NSE", name="RELIANCE", instrumenttype="EQ", lotsize=1)]
    atm = round(spot / step) * step
    for i in range(-each_side, each_side + 1):
        k = atm + i * step
        for kind in ("CE", "PE"):
            rows.append(dict(symbol=option_symbol(name, expiry, k, kind), exchange="NFO", name=name, expiry=expiry,
                             strike=float(k), instrumenttype=kind, lotsize=lot, freeze_qty=1800))
    with db.write() as s:
        s.execute(insert(Instrument), [{"tick_size": 0.05, "strike": 0.0, "expiry": "", **r} for r in rows])
    return expiry


def seed_prices(db: Database, name: str = "NIFTY", spot: float = 26000.0, expiry: str | None = None,
                vol: float = 0.14, age_s: float = 0.0):
    """Index LTP + Black-Scholes option prices at ``vol`` with a 5-level depth; RELIANCE at 1500."""
    ts = utcnow() - timedelta(seconds=age_s)
    rows = [dict(symbol=name, exchange="NSE_INDEX", ltp=spot, depth_json="", tick_ts=ts),
            dict(symbol="RELIANCE", exchange="NSE", ltp=1500.0, bid=1499.9, ask=1500.1, depth_json="", tick_ts=ts)]
    with db.read() as s:
        opts = s.query(Instrument).filter(Instrument.name == name, Instrument.instrumenttype.in_(["CE", "PE"])).all()
        t = years_to_expiry(opts[0].expiry, utcnow()) if opts else 0
        for o in opts:
            p = round(max(0.05, bs_price(spot, o.strike, t, vol, o.instrumenttype)), 2)
            depth = {"buy": [{"price": round(p - 0.05 * (i + 1), 2), "quantity": 65 * (i + 1), "orders": i + 1}
                             for i in range(5)],
                     "sell": [{"price": round(p + 0.05 * (i + 1), 2), "quantity": 65 * (i + 1), "orders": i + 1}
                              for i in range(5)]}
            rows.append(dict(symbol=o.symbol, exchange=o.exchange, ltp=p, bid=p - 0.05, ask=p + 0.05, oi=1000.0,
                             volume=500.0, depth_json=json.dumps(depth), tick_ts=ts))
    with db.write() as s:
        for r in rows:
            s.merge(LatestPrice(**r))


def seed_pnl(db: Database, account_ids: list[int], points: int, step_s: float = 1.0, run_id: int | None = None,
             start: datetime | None = None):
    """``points`` snapshots per account, ``step_s`` apart, ending now (bulk insert)."""
    end = utcnow()
    start = start or end - timedelta(seconds=points * step_s)
    batch = []
    for acct in account_ids:
        for i in range(points):
            total = 1000 * math.sin(i / 500) + acct * 10
            row = dict(ts_utc=start + timedelta(seconds=i * step_s), account_id=acct, run_id=run_id,
                       realized=total / 3, unrealized=total * 2 / 3, total=total)
            if run_id is not None:
                row.update(tsl_peak=max(total, 500.0), tsl_stop=max(total, 500.0) - 300)
            batch.append(row)
    with db.write() as s:
        s.execute(insert(PnlSnapshot), batch)


def seed_intents(db: Database, account_ids: list[int], n: int, symbol: str = "RELIANCE"):
    statuses = ["queued", "placed", "filled", "rejected", "cancelled"]
    rows = [dict(client_order_id=f"seed{i:06d}", account_id=account_ids[i % len(account_ids)], symbol=symbol,
                 exchange="NSE", action="BUY" if i % 2 else "SELL", requested_qty=1 + i % 10, pricetype="MARKET",
                 product="MIS", status=statuses[i % 5], status_reason="seeded",
                 broker_order_id=None if i % 5 == 0 else f"B{i}") for i in range(n)]
    orders = [dict(account_id=r["account_id"], broker_order_id=r["broker_order_id"], symbol=symbol, exchange="NSE",
                   action=r["action"], quantity=r["requested_qty"], order_status="complete")
              for r in rows if r["broker_order_id"]]
    with db.write() as s:
        s.execute(insert(OrderIntent), rows)
        if orders:
            s.execute(insert(BrokerOrder), orders)


def seed_books(db: Database, account_id: int):
    with db.write() as s:
        s.merge(Funds(account_id=account_id, available_cash=500000.0, used_margin=120000.0, realized_pnl=100.0,
                      unrealized_pnl=-50.0))
        s.add(Position(account_id=account_id, symbol="RELIANCE", exchange="NSE", product="MIS", quantity=10,
                       average_price=1490.0, ltp=1500.0, unrealized_pnl=100.0, pnl=100.0))


def seed_run(db: Database, account_id: int, name: str = "Straddle", expiry: str | None = None, pnl: float = -500.0,
             status: str = "active") -> int:
    with db.write() as s:
        st = s.query(Strategy).filter_by(name=name).one_or_none()
        if st is None:
            st = Strategy(name=name, underlying="NIFTY", exchange="NSE_INDEX", expiry=expiry or expiry_in(),
                          max_loss=5000.0, max_profit=8000.0, trailing_sl=1500.0)
            s.add(st)
            s.flush()
        run = StrategyRun(strategy_id=st.id, account_id=account_id, group_id="g1", status=status, pnl=pnl,
                          max_loss=5000.0, max_profit=8000.0, trailing_sl=1500.0, tsl_peak=800.0, tsl_stop=-700.0)
        s.add(run)
        s.flush()
        s.add(RiskEvent(run_id=run.id, account_id=account_id, event_type="trailing_sl", threshold=-700.0,
                        value=-710.0, action="exit_run", exit_order_ids=json.dumps(["coid1", "B99"]),
                        message="trailing stop hit"))
        return run.id


def seed_log(db: Database, message: str = "feed reconnect failed", level: str = "ERROR"):
    with db.write() as s:
        s.add(ServiceLog(component="market_data", level=level, message=message))


def seed_day_summaries(db: Database, account_ids: list[int], days: int = 10, strategies=("Straddle", "Iron")):
    """``days`` weekdays of summaries ending yesterday: per account a row (alternating wins and losses, the third
    day the best) and one per strategy."""
    from db.models import DaySummary
    out, d = [], utcnow().date() - timedelta(days=1)
    while len(out) < days:
        if d.weekday() < 5:
            out.append(d)
        d -= timedelta(days=1)
    rows = []
    for i, day in enumerate(sorted(out)):
        for acct in account_ids:
            total = 5000.0 if i == 2 else (1000.0 if i % 2 else -600.0)
            rows.append(dict(day=day.isoformat(), account_id=acct, strategy="", realized=total, unrealized=0.0,
                             total=total, trades=4, wins=2 if total > 0 else 1, losses=1, closed=True))
            for j, name in enumerate(strategies):
                pnl = total / len(strategies) + j * 10
                rows.append(dict(day=day.isoformat(), account_id=acct, strategy=name, realized=pnl, unrealized=0.0,
                                 total=pnl, trades=1, wins=1 if pnl > 0 else 0, losses=0 if pnl > 0 else 1,
                                 closed=True))
    with db.write() as s:
        s.execute(insert(DaySummary), rows)
    return sorted(out)


def seed_exit_story(db: Database, run_id: int, account_id: int) -> tuple[int, int]:
    """A run's entry and exit orders with their audit rows (claimed, sent, placed, filled) and the max-loss risk
    event that caused the exit, with the prices it was decided on. Returns (entry intent id, exit intent id)."""
    from db.models import OrderEvent
    t0 = utcnow() - timedelta(minutes=30)
    with db.write() as s:
        ids = []
        for n, (purpose, action, coid) in enumerate((("entry", "SELL", "story-entry"), ("exit", "BUY", "story-exit"))):
            intent = OrderIntent(client_order_id=coid, account_id=account_id, run_id=run_id, purpose=purpose,
                                 source="strategy" if purpose == "entry" else "risk", symbol="NIFTY26000CE",
                                 exchange="NFO", action=action, requested_qty=65, status="filled",
                                 broker_order_id=f"SB{n}", broker_filled_qty=65, broker_avg_price=100.0 + 16 * n)
            s.add(intent)
            s.flush()
            ids.append(intent.id)
            base = t0 + timedelta(minutes=20 * n)
            for k, (frm, to, src) in enumerate((("queued", "claimed", "dispatcher"), ("claimed", "sent", "dispatcher"),
                                                ("sent", "placed", "dispatcher"), ("placed", "filled", "poller"))):
                s.add(OrderEvent(intent_id=intent.id, from_status=frm, to_status=to, source=src,
                                 reason=f"broker order SB{n}" if to == "placed" else "",
                                 ts_utc=base + timedelta(milliseconds=40 * k)))
        s.add(RiskEvent(run_id=run_id, account_id=account_id, event_type="max_loss", threshold=-1000.0, value=-1040.0,
                        action="exit", exit_order_ids=json.dumps(["story-exit"]), message="Straddle: max_loss exit",
                        ts_utc=t0 + timedelta(minutes=20) - timedelta(milliseconds=5), ts_ist="10:12:00 IST",
                        decided_on=json.dumps([["NIFTY26000CE", "SELL", 65, 100.0, 116.0, 0.2, 116.0]])))
    return ids[0], ids[1]
