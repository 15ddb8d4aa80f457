from datetime import timedelta

import pytest
from sqlalchemy import func, select

from db.commands import CommandError
from db.models import Execution, LatestPrice, OrderIntent, Strategy, StrategyRun
from db.strategies import LegSpec, execute_strategy, resolve_legs, save_strategy, split_qty
from tests.builders import make_account


@pytest.fixture
def expiry(seeded_db):
    with seeded_db.read() as s:
        from db.models import Instrument
        return s.scalar(select(Instrument.expiry).where(Instrument.instrumenttype == "CE").limit(1))


def test_resolve_when_spot_between_strikes_then_atm_is_nearest_and_offsets_step(seeded_db, expiry):
    sid = save_strategy(seeded_db, "strangle", "NIFTY", "NSE_INDEX", expiry, [
        LegSpec("CE", "SELL", 1, "ATM"), LegSpec("CE", "BUY", 1, "OTM", 2), LegSpec("PE", "BUY", 2, "ITM", 1),
        LegSpec("PE", "SELL", 1, "OTM", 3), LegSpec("FUT", "BUY", 1)])
    with seeded_db.read() as s:
        legs = resolve_legs(s, s.get(Strategy, sid), 24020.0)
    strikes = [leg.strike for leg in legs]
    assert strikes[:4] == [24000.0, 24100.0, 24050.0, 23850.0]  # CE OTM up; PE ITM up; PE OTM down
    assert [leg.quantity for leg in legs] == [65, 65, 130, 65, 65]
    assert legs[4].symbol.endswith("FUT") and legs[0].symbol.endswith("24000CE")


def test_split_qty_respects_freeze_and_lots():
    assert split_qty(1800, 1800, 65) == [1800]
    assert split_qty(65 * 30, 1800, 65) == [1755, 195]
    assert sum(split_qty(65 * 100, 1800, 65)) == 6500 and all(q % 65 == 0 for q in split_qty(6500, 1800, 65))


def test_execute_writes_runs_executions_and_queued_intents_buy_legs_first(seeded_db, expiry):
    a1, a2 = make_account(seeded_db, "a1"), make_account(seeded_db, "a2")
    sid = save_strategy(seeded_db, "ic", "NIFTY", "NSE_INDEX", expiry,
                        [LegSpec("CE", "SELL", 1), LegSpec("CE", "BUY", 1, "OTM", 4)], max_loss=5000)
    group, runs = execute_strategy(seeded_db, sid, [a1, a2])
    assert len(runs) == 2
    with seeded_db.read() as s:
        intents = s.scalars(select(OrderIntent).where(OrderIntent.account_id == a1)
                            .order_by(OrderIntent.priority)).all()
        assert [i.action for i in intents] == ["BUY", "SELL"]
        assert all(i.status == "queued" and i.purpose == "entry" for i in intents)
        assert s.scalar(select(func.count()).select_from(Execution)) == 4
        assert {r.max_loss for r in s.scalars(select(StrategyRun))} == {5000.0}


def test_execute_when_price_is_stale_then_refused_and_nothing_written(seeded_db, expiry):
    a1 = make_account(seeded_db)
    sid = save_strategy(seeded_db, "s", "NIFTY", "NSE_INDEX", expiry, [LegSpec("CE", "SELL", 1)])
    with seeded_db.write() as s:
        p = s.get(LatestPrice, ("NIFTY", "NSE_INDEX"))
        p.tick_ts = p.tick_ts - timedelta(hours=1)
    with pytest.raises(CommandError, match="No live price"):
        execute_strategy(seeded_db, sid, [a1])
    with seeded_db.read() as s:
        assert s.scalar(select(func.count()).select_from(OrderIntent)) == 0
        assert s.scalar(select(func.count()).select_from(StrategyRun)) == 0


@pytest.mark.parametrize("legs,kw,msg", [
    ([], {}, "1 to 20 legs"),
    ([LegSpec("XX", "SELL", 1)], {}, "CE, PE or FUT"),
    ([LegSpec("CE", "SELL", 0)], {}, "lots"),
    ([LegSpec("CE", "SELL", 1, "OTM", 0)], {}, "offset"),
    ([LegSpec("CE", "SELL", 1)], {"max_loss": -100}, "Max loss"),
    ([LegSpec("CE", "SELL", 1)], {"max_loss": "abc"}, "Max loss"),
])
def test_save_strategy_when_invalid_then_error_and_nothing_written(seeded_db, expiry, legs, kw, msg):
    with pytest.raises(CommandError, match=msg):
        save_strategy(seeded_db, "bad", "NIFTY", "NSE_INDEX", expiry, legs, **kw)
    with seeded_db.read() as s:
        assert s.scalar(select(func.count()).select_from(Strategy)) == 0
