"""Unit tests of ui/ pure functions (Black-Scholes, IV, payoff, chain grid) and of db/repo + db/chain."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import ui_builders as b
from db import chain as chain_sessions
from db import repo
from db.models import OptionChainSession, utcnow
from ui.black_scholes import bs_price, implied_vol, years_to_expiry
from ui.chain_grid import atm_strike, build_grid, parse_depth
from ui.format import ist_str, rupees
from ui.payoff import breakevens, payoff


def test_bs_price_when_textbook_inputs_then_matches_known_value():
    # Hull: S=42, K=40, r=10%, sigma=20%, T=0.5 -> call 4.76, put 0.81
    assert bs_price(42, 40, 0.5, 0.2, "CE", r=0.10) == pytest.approx(4.759, abs=1e-3)
    assert bs_price(42, 40, 0.5, 0.2, "PE", r=0.10) == pytest.approx(0.809, abs=1e-3)


def test_bs_price_when_expired_then_intrinsic():
    assert bs_price(26100, 26000, 0, 0.2, "CE") == 100
    assert bs_price(26100, 26000, 0, 0.2, "PE") == 0


@pytest.mark.parametrize("kind,strike,vol", [("CE", 26000, 0.12), ("PE", 25500, 0.25), ("CE", 27000, 0.6),
                                             ("PE", 26500, 0.08)])
def test_implied_vol_when_price_from_known_vol_then_recovers_it(kind, strike, vol):
    t = 10 / 365
    price = bs_price(26000, strike, t, vol, kind)
    assert implied_vol(price, 26000, strike, t, kind) == pytest.approx(vol, abs=1e-4)


def test_implied_vol_when_price_below_intrinsic_or_missing_then_none():
    assert implied_vol(50, 26000, 25800, 0.05, "CE") is None  # intrinsic is 200+
    assert implied_vol(0, 26000, 26000, 0.05, "CE") is None
    assert implied_vol(float("nan"), 26000, 26000, 0.05, "CE") is None or True  # never raises
    assert implied_vol(100, 26000, 26000, 0, "CE") is None


def test_years_to_expiry_when_expiry_tomorrow_then_about_one_day():
    now = datetime(2025, 12, 29, 10, 0)  # 15:30 IST on the 30th = 10:00 UTC
    assert years_to_expiry("30-DEC-25", now) * 365 == pytest.approx(1.0)
    assert years_to_expiry("29-DEC-25", now) == 0.0
    assert years_to_expiry("garbage", now) == 0.0


def test_payoff_when_short_straddle_at_expiry_then_tent_shape():
    legs = [dict(kind="CE", action="SELL", strike=26000, quantity=65, premium=200),
            dict(kind="PE", action="SELL", strike=26000, quantity=65, premium=180)]
    spots = np.array([25000, 26000, 27000])
    pnl = payoff(legs, spots)
    assert pnl[1] == pytest.approx(380 * 65)
    assert pnl[0] == pytest.approx((380 - 1000) * 65) and pnl[2] == pytest.approx((380 - 1000) * 65)
    bes = breakevens(np.linspace(25000, 27000, 2001), payoff(legs, np.linspace(25000, 27000, 2001)))
    assert [round(x) for x in bes] == [25620, 26380]


def test_payoff_when_today_then_between_expiry_and_theoretical_for_long_call():
    legs = [dict(kind="CE", action="BUY", strike=26000, quantity=1, premium=0, iv=0.15)]
    today = payoff(legs, [26000], t_years=30 / 365)[0]
    assert today == pytest.approx(bs_price(26000, 26000, 30 / 365, 0.15, "CE"))
    assert today > payoff(legs, [26000])[0] == 0


def test_payoff_when_future_then_linear():
    legs = [dict(kind="FUT", action="SELL", strike=0, quantity=65, premium=26050)]
    assert list(payoff(legs, [26000, 26100])) == pytest.approx([50 * 65, -50 * 65])


def test_build_grid_when_chain_then_ce_strike_pe_with_atm_and_window():
    rows = []
    for k in range(25000, 27001, 100):
        for kind in ("CE", "PE"):
            rows.append(dict(symbol=f"X{k}{kind}", strike=float(k), kind=kind, ltp=bs_price(26040, k, 0.02, 0.2, kind),
                             bid=None, ask=None, oi=10.0))
    now = datetime(2025, 12, 23, 10, 0)
    grid, atm = build_grid(pd.DataFrame(rows), 26040.0, "30-DEC-25", now, strikes_each_side=3)
    assert atm == 26000.0
    assert grid["strike"].tolist() == [25700.0, 25800.0, 25900.0, 26000.0, 26100.0, 26200.0, 26300.0]
    assert list(grid.columns[:10]) == ["CE_oi", "CE_oi_chg", "CE_volume", "CE_iv", "CE_delta", "CE_theta", "CE_bid",
                                       "CE_ask", "CE_ltp", "strike"]
    assert grid["PE_iv"].dropna().between(19.0, 21.0).all()
    assert grid["CE_delta"].is_monotonic_decreasing and grid["PE_delta"].between(-1, 0).all()
    assert (grid["CE_theta"] < 0).all() and grid["CE_oi_chg"].isna().all()  # no day's base OI given


def test_atm_strike_when_no_spot_then_middle():
    assert atm_strike([100, 200, 300], None) == 200
    assert atm_strike([], 5) is None


def test_parse_depth_when_valid_or_garbage_then_frames():
    bids, asks = parse_depth(json.dumps({"buy": [{"price": 10, "quantity": 65, "orders": 2}], "sell": []}))
    assert bids.iloc[0].tolist() == [10, 65, 2] and asks.empty
    bids, asks = parse_depth("not json")
    assert bids.empty and list(bids.columns) == ["price", "quantity", "orders"]


def test_format_when_values_then_rupees_and_ist():
    assert rupees(-1234.5) == "-₹1,234.50" and rupees(10, signed=True) == "+₹10.00"
    assert ist_str(datetime(2025, 1, 1, 3, 45)) == "09:15:00"


def test_pnl_accounts_when_1s_snapshots_then_downsampled_to_last_of_bucket(db):
    a = b.seed_account(db, "alpha")
    start = utcnow().replace(microsecond=0) - timedelta(seconds=600)
    start -= timedelta(seconds=start.second % 60)
    b.seed_pnl(db, [a], 600, start=start)
    df = repo.pnl_accounts(db, start, 60)
    assert len(df) == 10
    # last row of the first bucket is the 60th snapshot (i = 59)
    assert df.iloc[0]["total"] == pytest.approx(1000 * math.sin(59 / 500) + a * 10)
    assert df["ts_utc"].is_monotonic_increasing


def test_pnl_history_when_read_as_the_day_goes_on_then_equals_the_full_query_and_keeps_settled_buckets(db, monkeypatch):
    from sqlalchemy import delete, update

    from db.models import Account, PnlSnapshot
    ids = [b.seed_account(db, n) for n in ("alpha", "beta")]
    base = datetime(2026, 12, 3, 4, 0, 7)  # not on a bucket boundary: the first bucket is a partial one
    clock = [base + timedelta(seconds=900)]
    monkeypatch.setattr(repo, "utcnow", lambda: clock[0])
    b.seed_pnl(db, ids, 900, start=base)
    hist = repo.PnlHistory(base, 30)
    first = hist.read(db)
    pd.testing.assert_frame_equal(first, repo.pnl_accounts(db, base, 30))
    assert len(first) == 2 * 31  # 900 s from :07 in 30 s buckets (epoch-aligned): 31 per account
    b.seed_pnl(db, ids, 300, start=base + timedelta(seconds=900))  # the next five minutes, then read again
    clock[0] = base + timedelta(seconds=1200)
    pd.testing.assert_frame_equal(hist.read(db), full := repo.pnl_accounts(db, base, 30))
    # what settled (ended > SETTLE_S ago) is served from memory: old rows deleted from the DB are still drawn
    with db.write() as s:
        s.execute(delete(PnlSnapshot).where(PnlSnapshot.ts_utc < base + timedelta(seconds=600)))
    pd.testing.assert_frame_equal(hist.read(db), full)
    # ... but names come from the accounts table at each read
    with db.write() as s:
        s.execute(update(Account).where(Account.id == ids[1]).values(name="beta2"))
    assert set(hist.read(db)["account"]) == {"alpha", "beta2"}
    # a table emptied under the app (a restored or reset file) is read again, not drawn from memory
    with db.write() as s:
        s.execute(delete(PnlSnapshot))
    b.seed_pnl(db, ids[:1], 60, start=base + timedelta(seconds=1140))
    pd.testing.assert_frame_equal(hist.read(db), again := repo.pnl_accounts(db, base, 30))
    assert len(again) == 3  # 04:19:07-04:20:06: three 30 s buckets, nothing of the old rows


def test_bucket_for_when_long_span_then_at_most_720_points():
    since = utcnow() - timedelta(hours=7)
    assert 7 * 3600 / repo.bucket_for(since) <= 720
    assert repo.bucket_for(since) == 60  # a round width from the ladder (35 s needed)
    assert repo.bucket_for(utcnow() - timedelta(seconds=30)) == 10


def test_pnl_first_when_snapshots_today_then_earliest_of_any_account_and_none_before(db):
    from db.accounts import add_account
    from db.models import PnlSnapshot
    now = utcnow()
    a, b = (add_account(db, n, "http://127.0.0.1:9", "ws://127.0.0.1:9", f"{'k' * 30}{n}") for n in ("aa", "bb"))
    assert repo.pnl_first(db, now - timedelta(hours=1)) is None
    with db.write() as s:
        s.add_all([PnlSnapshot(account_id=a, ts_utc=now - timedelta(minutes=3)),
                   PnlSnapshot(account_id=b, ts_utc=now - timedelta(minutes=5)),
                   PnlSnapshot(account_id=b, run_id=None, ts_utc=now - timedelta(hours=3)),  # before `since`
                   PnlSnapshot(account_id=a, ts_utc=now - timedelta(minutes=1))])
    first = repo.pnl_first(db, now - timedelta(hours=1))
    assert first == now - timedelta(minutes=5)
    assert repo.bucket_for(first) == 10  # five minutes of data: 10 s buckets, whatever the time of day


def test_chain_session_when_heartbeat_after_expiry_then_requested_again(db):
    from tests.builders import seed_instruments
    sid = chain_sessions.open_session(db, "NIFTY", "NSE_INDEX", seed_instruments(db))
    with db.write() as s:
        row = s.get(OptionChainSession, sid)
        row.status, row.last_heartbeat = "expired", utcnow() - timedelta(minutes=10)
    assert chain_sessions.heartbeat(db, sid)
    got = chain_sessions.get_session(db, sid)
    assert got["status"] == "requested" and utcnow() - got["last_heartbeat"] < timedelta(seconds=5)
    assert chain_sessions.heartbeat(db, "missing") is False


def test_service_state_when_beats_then_up_and_stale_components(db):
    assert repo.service_state(db, 10)["up"] is False
    b.seed_heartbeat(db, "dispatcher", age_s=1)
    b.seed_heartbeat(db, "poller", age_s=60)
    st = repo.service_state(db, 10)
    assert st["up"] is True and st["orders_ok"] is True and st["stale"] == ["poller"]


def test_search_instruments_when_prefix_then_matches_and_no_index(db):
    b.seed_instruments(db)
    df = repo.search_instruments(db, "nifty")
    assert len(df) > 0 and (df["exchange"] != "NSE_INDEX").all()
    assert repo.search_instruments(db, "REL")["symbol"].tolist() == ["RELIANCE"]
    assert repo.search_instruments(db, "%").empty


def test_service_state_when_dispatcher_stopped_then_up_but_orders_disabled(db):
    b.seed_heartbeat(db, "runner", age_s=1)
    with db.write() as s:
        from db.models import ServiceHeartbeat
        s.add(ServiceHeartbeat(component="dispatcher", status="stopped", last_beat=utcnow()))
    st = repo.service_state(db, 10)
    assert st["up"] is True and st["orders_ok"] is False and st["stale"] == ["dispatcher"]


def test_pnl_latest_when_several_snapshots_then_the_newest_per_account_and_run_rows_ignored(db):
    a, c, _idle = b.seed_account(db, "alpha"), b.seed_account(db, "charlie"), b.seed_account(db, "idle")
    b.seed_pnl(db, [a, c], 50)
    b.seed_pnl(db, [a], 5, run_id=None, start=utcnow() + timedelta(seconds=30))  # a newer tail for alpha only
    b.seed_pnl(db, [c], 3, run_id=b.seed_run(db, c), start=utcnow() + timedelta(seconds=60))  # run rows: not it
    df = repo.pnl_latest(db)
    assert list(df["account"]) == ["alpha", "charlie"]  # idle has no snapshot: not listed
    expect_a = 1000 * math.sin(4 / 500) + a * 10  # last point of alpha's newer 5-point series
    expect_c = 1000 * math.sin(49 / 500) + c * 10  # last account-level point of charlie
    assert df["total"].tolist() == pytest.approx([expect_a, expect_c])


def test_risk_distance_when_runs_then_pnl_and_stop_as_percent_of_the_way_to_their_limits():
    from ui.charts import risk_distance

    df = pd.DataFrame({"label": ["#1", "#2", "#3"], "pnl": [-250.0, 600.0, -5000.0],
                       "max_loss": [1000.0, 2000.0, 1000.0], "max_profit": [2000.0, None, 2000.0],
                       "tsl_stop": [None, 300.0, None]})
    fig = risk_distance(df)
    pnl = next(t for t in fig.data if t.name == "P&L")
    stop = next(t for t in fig.data if t.name == "Trailing stop")
    # -250 of a 1,000 max loss = -25 %; +600 with no max profit: limit = 2 x |pnl| = 1,200 -> 50 %;
    # -5,000 against 1,000 is past the limit: clipped to -120 %
    assert list(pnl.x) == [-25.0, 50.0, -120.0] and list(pnl.y) == ["#1", "#2", "#3"]
    assert list(stop.x) == [25.0] and list(stop.y) == ["#2"]  # 300 of 1,200
    assert "₹-250" in pnl.text[0]
    assert risk_distance(df.iloc[0:0]).layout.annotations[0].text == "No active strategy runs"
