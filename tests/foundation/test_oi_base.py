"""latest_prices keeps the day's first OI (oi_base) so the option chain can show the change in OI; a new IST day
starts a new base. Real SQLite file, the service's own upsert (db.prices.upsert_prices)."""
from datetime import timedelta

from db import clock
from db.models import LatestPrice, utcnow
from db.prices import upsert_prices


def _row(oi):
    return dict(symbol="NIFTY30DEC2626000CE", exchange="NFO", ltp=100.0, bid=None, ask=None, volume=10.0, oi=oi,
                depth_json="", tick_ts=utcnow())


def _get(db):
    with db.read() as s:
        p = s.get(LatestPrice, ("NIFTY30DEC2626000CE", "NFO"))
        return p.oi, p.oi_base


def test_upsert_when_oi_moves_then_base_is_the_days_first_oi_and_resets_next_day(db):
    with db.write() as s:
        upsert_prices(s, [_row(None)])  # an LTP-only tick: no OI yet, no base
    assert _get(db) == (None, None)
    for oi in (1000.0, 1300.0, 900.0):
        with db.write() as s:
            upsert_prices(s, [_row(oi)])
    assert _get(db) == (900.0, 1000.0)
    clock.set_offset(timedelta(days=1))
    try:
        with db.write() as s:
            upsert_prices(s, [_row(950.0)])
        assert _get(db) == (950.0, 950.0)
    finally:
        clock.set_offset(timedelta(0))
