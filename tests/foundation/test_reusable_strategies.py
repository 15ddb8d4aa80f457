"""Reusable strategies (issue #15): relative expiries resolved at execute time on a seeded symbol master (a month
end, a holiday-shifted expiry), strikes by closest premium / closest delta from the chain's prices, LIMIT entry
prices, every numeric field of a definition refused instead of coerced (issue #16), clone and delete."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from db.clock import IST, now_ist, set_offset
from db.commands import CommandError
from db.expiry_rules import NoSuchExpiry, resolve
from db.models import Execution, Instrument, LatestPrice, OrderIntent, Strategy, StrategyRun, utcnow
from db.strategies import LegSpec, execute_strategy, resolve_legs, save_strategy
from db.strategy_admin import clone_strategy, delete_strategy, for_builder, saved_rows
from quant.black_scholes import bs_price, greeks, years_to_expiry
from tests.builders import make_account

# Tuesday weeklies around a month end; January's monthly moved from Tue 26-Jan-27 (Republic Day) to Mon 25-Jan.
LISTED = ["29-DEC-26", "05-JAN-27", "12-JAN-27", "19-JAN-27", "25-JAN-27", "02-FEB-27", "09-FEB-27", "23-FEB-27",
          "30-MAR-27"]
SPOT, VOL, STEP, LOT = 24000.0, 0.15, 100, 65


@pytest.mark.parametrize("today,expected", [
    # the monthly's own day, at a month end: it is this week's and this month's expiry
    (date(2026, 12, 29), dict(current_week="29-DEC-26", next_week="05-JAN-27", current_month="29-DEC-26",
                              next_month="25-JAN-27")),
    # the day after: December's monthly has passed, so the current month is January's (the shifted Monday)
    (date(2026, 12, 30), dict(current_week="05-JAN-27", next_week="12-JAN-27", current_month="25-JAN-27",
                              next_month="23-FEB-27")),
    # the week of the holiday: the Monday expiry is this week's, and January's monthly
    (date(2027, 1, 20), dict(current_week="25-JAN-27", next_week="02-FEB-27", current_month="25-JAN-27",
                             next_month="23-FEB-27")),
    # the holiday itself (Tuesday 26-Jan): January's expiry was yesterday
    (date(2027, 1, 26), dict(current_week="02-FEB-27", next_week="09-FEB-27", current_month="23-FEB-27",
                             next_month="30-MAR-27")),
])
def test_resolve_when_relative_modes_on_a_listed_calendar_then_the_expected_contracts(today, expected):
    shuffled = LISTED[::-1] + ["22-DEC-26"]  # order does not matter; a past expiry is never chosen
    assert {mode: resolve(mode, shuffled, today) for mode in expected} == expected


def test_resolve_when_the_list_has_nothing_that_far_then_no_such_expiry():
    with pytest.raises(NoSuchExpiry, match="next month"):
        resolve("next_month", ["29-DEC-26", "05-JAN-27"], date(2026, 12, 30))
    with pytest.raises(NoSuchExpiry, match="next week"):
        resolve("next_week", ["30-MAR-27"], date(2027, 3, 1))


def _symbol(expiry: str, strike: float, kind: str) -> str:
    return f"NIFTY{expiry.replace('-', '')}{int(strike)}{kind}"


def _seed_calendar(db, expiries=LISTED, strikes_each_side=8):
    rows = [Instrument(symbol="NIFTY", exchange="NSE_INDEX", name="NIFTY", instrumenttype="INDEX", lotsize=1)]
    for ex in expiries:
        for k in range(-strikes_each_side, strikes_each_side + 1):
            strike = SPOT + k * STEP
            for kind in ("CE", "PE"):
                rows.append(Instrument(symbol=_symbol(ex, strike, kind), exchange="NFO", name="NIFTY", expiry=ex,
                                       strike=strike, instrumenttype=kind, lotsize=LOT, freeze_qty=1800,
                                       tick_size=0.05))
    with db.write() as s:
        s.add_all(rows)
        s.merge(LatestPrice(symbol="NIFTY", exchange="NSE_INDEX", ltp=SPOT, tick_ts=utcnow()))


def _price_chain(db, expiry: str, kinds=("CE", "PE"), vol=VOL) -> dict[str, float]:
    """Black-Scholes prices at ``vol`` for every strike of ``expiry`` (as the service stores ticks)."""
    t = years_to_expiry(expiry, now_ist().astimezone(timezone.utc).replace(tzinfo=None))
    prices = {}
    with db.write() as s:
        for inst in s.scalars(select(Instrument).where(Instrument.expiry == expiry,
                                                       Instrument.instrumenttype.in_(kinds))).all():
            px = round(bs_price(SPOT, inst.strike, t, vol, inst.instrumenttype), 2)
            if px >= 0.05:
                prices[inst.symbol] = px
                s.merge(LatestPrice(symbol=inst.symbol, exchange="NFO", ltp=px, tick_ts=utcnow()))
    return prices


@pytest.fixture
def market_day():
    """The market's clock set to Wednesday 20-Jan-2027 10:00 IST (db.clock: what today_ist() answers)."""
    target = datetime(2027, 1, 20, 10, 0, tzinfo=IST)
    set_offset(target - datetime.now(IST))
    yield target
    set_offset(timedelta(0))


def test_execute_when_expiry_is_relative_then_resolved_on_the_day_it_executes(db, market_day):
    _seed_calendar(db)
    acct = make_account(db)
    sid = save_strategy(db, "weekly straddle", "NIFTY", "NSE_INDEX", "", [LegSpec("CE", "SELL"),
                        LegSpec("PE", "SELL")], expiry_mode="current_week")
    nxt = save_strategy(db, "next month", "NIFTY", "NSE_INDEX", "", [LegSpec("CE", "BUY")], expiry_mode="next_month")
    with db.read() as s:
        assert s.get(Strategy, sid).expiry == ""  # nothing fixed is stored: the date comes from the list each time
    _, runs = execute_strategy(db, sid, [acct])
    execute_strategy(db, nxt, [acct])
    set_offset(datetime(2027, 1, 27, 10, 0, tzinfo=IST) - datetime.now(IST))  # a week later: the next weekly
    _, later = execute_strategy(db, sid, [acct])
    with db.read() as s:
        syms = sorted(s.scalars(select(Execution.symbol).where(Execution.run_id == runs[0])))
        later_syms = sorted(s.scalars(select(Execution.symbol).where(Execution.run_id == later[0])))
        far = s.scalar(select(Execution.symbol).join(StrategyRun).where(StrategyRun.strategy_id == nxt))
    assert syms == [_symbol("25-JAN-27", SPOT, "CE"), _symbol("25-JAN-27", SPOT, "PE")]
    assert later_syms == [_symbol("02-FEB-27", SPOT, "CE"), _symbol("02-FEB-27", SPOT, "PE")]
    assert far == _symbol("23-FEB-27", SPOT, "CE")


def test_save_when_relative_expiry_has_no_listed_contract_then_refused(db, market_day):
    _seed_calendar(db, expiries=["25-JAN-27"])
    with pytest.raises(CommandError, match="next week"):
        save_strategy(db, "nope", "NIFTY", "NSE_INDEX", "", [LegSpec("CE", "SELL")], expiry_mode="next_week")
    with pytest.raises(CommandError, match="Expiry must be"):
        save_strategy(db, "nope", "NIFTY", "NSE_INDEX", "", [LegSpec("CE", "SELL")], expiry_mode="fortnight")
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Strategy)) == 0


def _resolve(db, legs, expiry="25-JAN-27"):
    sid = save_strategy(db, f"pick{len(legs)}-{legs[0].strike_mode}", "NIFTY", "NSE_INDEX", expiry, legs)
    with db.read() as s:
        return resolve_legs(s, s.get(Strategy, sid), SPOT)


def test_strike_when_premium_target_then_the_contract_priced_closest(db, market_day):
    _seed_calendar(db)
    prices = _price_chain(db, "25-JAN-27")
    legs = _resolve(db, [LegSpec("CE", "SELL", strike_mode="PREMIUM", target=50.0),
                         LegSpec("PE", "SELL", strike_mode="PREMIUM", target=50.0),
                         LegSpec("CE", "BUY", strike_mode="PREMIUM", target=10_000.0)])
    for leg, kind, target in zip(legs, ("CE", "PE", "CE"), (50.0, 50.0, 10_000.0), strict=True):
        same_kind = {sym: px for sym, px in prices.items() if sym.endswith(kind)}
        best = min(same_kind, key=lambda sym: abs(same_kind[sym] - target))
        assert leg.symbol == best, (leg.symbol, prices[leg.symbol], best, same_kind[best])
    assert legs[0].strike > SPOT and legs[1].strike < SPOT  # a cheap call is OTM above, a cheap put below
    assert legs[2].strike == SPOT - 8 * STEP  # nothing costs ₹10,000: the deepest ITM call is the closest


def test_strike_when_delta_target_then_the_contract_whose_delta_is_closest(db, market_day):
    _seed_calendar(db)
    _price_chain(db, "25-JAN-27")
    legs = _resolve(db, [LegSpec("CE", "SELL", strike_mode="DELTA", target=0.30),
                         LegSpec("PE", "SELL", strike_mode="DELTA", target=0.30)])
    # the seeded prices are Black-Scholes at VOL: the delta at VOL is what the implied volatility gives back
    t = years_to_expiry("25-JAN-27", datetime(2027, 1, 20, 4, 30))
    for leg, kind in zip(legs, ("CE", "PE"), strict=True):
        strikes = [SPOT + k * STEP for k in range(-8, 9)]
        best = min(strikes, key=lambda k: abs(abs(greeks(SPOT, k, t, VOL, kind)["delta"]) - 0.30))
        assert leg.strike == best, (kind, leg.strike, best)
        assert abs(abs(greeks(SPOT, leg.strike, t, VOL, kind)["delta"]) - 0.30) < 0.1
    assert legs[0].strike > SPOT > legs[1].strike


def test_execute_when_the_chain_has_no_prices_then_clear_error_and_nothing_written(db, market_day):
    _seed_calendar(db)
    acct = make_account(db)
    sid = save_strategy(db, "by delta", "NIFTY", "NSE_INDEX", "", [LegSpec("CE", "SELL", strike_mode="DELTA",
                        target=0.3)], expiry_mode="current_week")
    with db.write() as s:  # prices of another expiry, and a stale one of this expiry: neither is the chain's now
        s.merge(LatestPrice(symbol=_symbol("02-FEB-27", SPOT, "CE"), exchange="NFO", ltp=200.0, tick_ts=utcnow()))
        s.merge(LatestPrice(symbol=_symbol("25-JAN-27", SPOT, "CE"), exchange="NFO", ltp=150.0,
                            tick_ts=utcnow() - timedelta(hours=1)))
    with pytest.raises(CommandError, match="no live prices for NIFTY 25-JAN-27: open its option chain or wait"):
        execute_strategy(db, sid, [acct])
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(StrategyRun)) == 0
        assert s.scalar(select(func.count()).select_from(OrderIntent)) == 0


def test_execute_when_leg_is_limit_then_intent_at_ltp_plus_offset_with_its_conversion(db, market_day):
    _seed_calendar(db)
    prices = _price_chain(db, "25-JAN-27")
    acct = make_account(db)
    sid = save_strategy(db, "limits", "NIFTY", "NSE_INDEX", "25-JAN-27", [
        LegSpec("CE", "SELL", entry_type="LIMIT", entry_offset=2.0, convert_after_s=5),
        LegSpec("PE", "BUY", entry_type="LIMIT", entry_offset=-10.0, entry_offset_pct=True),
        LegSpec("CE", "BUY", strike_mode="OTM", offset=2)])
    _, runs = execute_strategy(db, sid, [acct])
    with db.read() as s:
        rows = {i.symbol: i for i in s.scalars(select(OrderIntent).where(OrderIntent.run_id == runs[0]))}
    ce, pe = _symbol("25-JAN-27", SPOT, "CE"), _symbol("25-JAN-27", SPOT, "PE")
    assert (rows[ce].pricetype, rows[ce].limit_price, rows[ce].convert_after_s) == (
        "LIMIT", round(round((prices[ce] + 2.0) / 0.05) * 0.05, 2), 5)
    assert (rows[pe].pricetype, rows[pe].limit_price, rows[pe].convert_after_s) == (
        "LIMIT", round(round(prices[pe] * 0.9 / 0.05) * 0.05, 2), None)  # no conversion: stays LIMIT
    wing = rows[_symbol("25-JAN-27", SPOT + 2 * STEP, "CE")]
    assert (wing.pricetype, wing.limit_price, wing.convert_after_s) == ("MARKET", 0.0, None)


@pytest.mark.parametrize("legs,kw,msg", [
    ([LegSpec("CE", "SELL", lots=0)], {}, r"Leg 1: lots must be a whole number from 1 to 500 \(got 0\)"),
    ([LegSpec("CE", "SELL", lots=100000)], {}, r"lots must be a whole number from 1 to 500 \(got 100000\)"),
    ([LegSpec("CE", "SELL", lots=2.5)], {}, r"lots must be a whole number .*\(got 2.5\)"),
    ([LegSpec("CE", "SELL"), LegSpec("PE", "SELL", lots=-1)], {}, "Leg 2: lots"),
    ([LegSpec("CE", "SELL", strike_mode="OTM", offset=2.5)], {}, "ITM/OTM offset"),
    ([LegSpec("CE", "SELL", strike_mode="PREMIUM")], {}, "target premium"),
    ([LegSpec("CE", "SELL", strike_mode="PREMIUM", target=-5)], {}, "target premium must be a positive"),
    ([LegSpec("CE", "SELL", strike_mode="DELTA", target=30)], {}, "target delta must be between 0 and 1"),
    ([LegSpec("CE", "SELL", strike_mode="STRIKE", strike=-24000)], {}, "fixed strike must be a positive"),
    ([LegSpec("CE", "SELL", entry_type="LIMIT", entry_offset=80, entry_offset_pct=True)], {}, "in % must be"),
    ([LegSpec("CE", "SELL", entry_type="LIMIT", convert_after_s=2.5)], {}, "convert to MARKET after"),
    ([LegSpec("CE", "SELL", entry_type="LIMIT", convert_after_s=-3)], {}, "convert to MARKET after"),
    ([LegSpec("CE", "SELL", entry_type="STOP")], {}, "entry must be MARKET or LIMIT"),
    ([LegSpec("CE", "SELL")], {"max_loss": -500}, r"Max loss must be a positive amount in rupees \(got -500\)"),
    ([LegSpec("CE", "SELL")], {"max_loss": 0}, "Max loss must be a positive amount"),
    ([LegSpec("CE", "SELL")], {"max_profit": -1}, "Max profit must be a positive amount"),
    ([LegSpec("CE", "SELL")], {"trailing_sl": 0.0}, "Trailing stop must be a positive amount"),
    ([LegSpec("CE", "SELL")], {"trailing_sl": True}, "Trailing stop must be a number"),
])
def test_save_when_a_number_is_out_of_range_then_refused_never_coerced(db, market_day, legs, kw, msg):
    _seed_calendar(db)
    with pytest.raises(CommandError, match=msg):
        save_strategy(db, "bad", "NIFTY", "NSE_INDEX", "25-JAN-27", legs, **kw)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Strategy)) == 0


def test_save_when_limits_empty_then_no_limit_and_a_whole_float_is_a_whole_number(db, market_day):
    _seed_calendar(db)
    sid = save_strategy(db, "ok", "NIFTY", "NSE_INDEX", "25-JAN-27", [LegSpec("CE", "SELL", lots=3.0)],
                        max_loss=None, max_profit="", trailing_sl=250)
    with db.read() as s:
        st = s.get(Strategy, sid)
        assert (st.max_loss, st.max_profit, st.trailing_sl, st.legs[0].lots) == (None, None, 250.0, 3)


def test_edit_when_saved_again_under_its_id_then_same_id_new_definition_and_live_runs_keep_theirs(db, market_day):
    _seed_calendar(db)
    acct = make_account(db)
    sid = save_strategy(db, "edit me", "NIFTY", "NSE_INDEX", "25-JAN-27", [LegSpec("CE", "SELL")], max_loss=500)
    _, runs = execute_strategy(db, sid, [acct])
    same = save_strategy(db, "edited", "NIFTY", "NSE_INDEX", "", [LegSpec("PE", "BUY", lots=2),
                         LegSpec("CE", "BUY", lots=2)], max_loss=900, expiry_mode="next_week", strategy_id=sid)
    assert same == sid
    loaded = for_builder(db, sid)
    assert (loaded["name"], loaded["expiry_mode"], loaded["max_loss"]) == ("edited", "next_week", 900.0)
    assert [(leg["instrument"], leg["lots"]) for leg in loaded["legs"]] == [("PE", 2), ("CE", 2)]
    with db.read() as s:
        assert s.get(StrategyRun, runs[0]).max_loss == 500.0  # the run copied its limit when it started
        assert s.scalar(select(func.count()).select_from(Strategy)) == 1
    other = save_strategy(db, "other", "NIFTY", "NSE_INDEX", "25-JAN-27", [LegSpec("CE", "SELL")])
    with pytest.raises(CommandError, match="already exists"):
        save_strategy(db, "other", "NIFTY", "NSE_INDEX", "25-JAN-27", [LegSpec("CE", "SELL")], strategy_id=sid)
    assert other != sid and for_builder(db, sid)["name"] == "edited"


def test_clone_and_delete_when_a_run_is_live_then_delete_refused_with_reason_until_it_ends(db, market_day):
    _seed_calendar(db)
    acct = make_account(db)
    sid = save_strategy(db, "iron fly", "NIFTY", "NSE_INDEX", "", [
        LegSpec("CE", "SELL"), LegSpec("PE", "SELL"), LegSpec("CE", "BUY", 2, "OTM", 3)],
        expiry_mode="current_month", max_loss=2000)
    copy = clone_strategy(db, sid, "iron fly copy")
    rows = {r["name"]: r for r in saved_rows(db)}
    assert rows["iron fly"]["legs"] == "SELL 1×CE ATM · SELL 1×PE ATM · BUY 2×CE OTM3"
    assert (rows["iron fly"]["size"], rows["iron fly"]["expiry"]) == (4, "Current month")
    assert rows["iron fly copy"]["legs"] == rows["iron fly"]["legs"] and copy != sid
    with pytest.raises(CommandError, match="already exists"):
        clone_strategy(db, sid, "iron fly copy")
    _, runs = execute_strategy(db, sid, [acct])
    with pytest.raises(CommandError, match=rf"Cannot delete 'iron fly': 1 run\(s\) of it still live \(#{runs[0]}\)"):
        delete_strategy(db, sid)
    assert "iron fly" in {r["name"] for r in saved_rows(db)}
    with db.write() as s:
        s.get(StrategyRun, runs[0]).status = "exited"
    assert delete_strategy(db, sid) == "iron fly"
    assert {r["name"] for r in saved_rows(db)} == {"iron fly copy"}
    with pytest.raises(CommandError, match="was deleted"):
        execute_strategy(db, sid, [acct])
    with db.read() as s:
        assert s.get(StrategyRun, runs[0]).strategy_id == sid  # the past run still names its strategy
    again = save_strategy(db, "iron fly", "NIFTY", "NSE_INDEX", "25-JAN-27", [LegSpec("CE", "SELL")])
    assert again not in (sid, copy)  # the name is free again


def test_migration_when_a_v11_database_is_upgraded_then_saved_strategies_stay_fixed_and_market(tmp_path):
    """A database from before reusable strategies: its strategies keep their fixed date and MARKET entries."""
    import sqlite3

    from db import Database
    from db.migrations import LATEST, migrate
    path = tmp_path / "old.db"
    Database(path, key_file=tmp_path / "k")  # created at the latest version, then taken back to version 11
    con = sqlite3.connect(path)
    for index in ("ix_order_intents_queue", "ix_order_intents_updated_at", "ix_order_intents_account_status",
                  "ix_order_intents_modifying"):  # versions 16 and 17
        con.execute(f"DROP INDEX {index}")
    for table, cols in (("strategies", ("expiry_mode", "deleted_at")),
                        ("strategy_legs", ("target", "entry_type", "entry_offset", "entry_offset_pct",
                                           "convert_after_s")),
                        ("order_intents", ("convert_after_s", "convert_state"))):
        for col in cols:
            con.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
    con.execute("DELETE FROM schema_version WHERE version > 11")
    con.execute("INSERT INTO strategies (name, underlying, exchange, expiry, product, created_at) "
                "VALUES ('old', 'NIFTY', 'NSE_INDEX', '25-JAN-27', 'NRML', '2026-12-01')")
    con.execute("INSERT INTO strategy_legs (strategy_id, leg_no, instrument, action, strike_mode, offset, lots, "
                "sl_mode, tp_mode, reentry_count, reentry_mode, reentry_wait) "
                "VALUES (1, 1, 'CE', 'SELL', 'ATM', 0, 1, '', '', 0, 'same', 0)")
    con.commit()
    con.close()
    db = Database(path, key_file=tmp_path / "k")
    assert migrate(db.store) == LATEST
    with db.read() as s:
        st = s.get(Strategy, 1)
        assert (st.expiry_mode, st.deleted_at, st.legs[0].entry_type, st.legs[0].convert_after_s) == (
            "fixed", None, "MARKET", 0)
