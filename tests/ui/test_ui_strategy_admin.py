"""Strategies page (AppTest, real SQLite): every bad number in the builder is an error that blocks Save (issue #16:
no silent coercion), and saved strategies are edited under their id, cloned and deleted (refused while a run of
them is live), with their legs and size in the saved table (issue #15)."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import ui_builders as b
from db.models import Strategy, StrategyRun
from ui.strategy_form import LEG_DEFAULTS, legs_frame

ROOT = Path(__file__).resolve().parents[2]


def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / "strategies.py"), default_timeout=30)


def strategies(db) -> list[tuple]:
    with db.read() as s:
        return [(st.id, st.name, st.max_loss, st.deleted_at is not None, [(leg.instrument, leg.lots)
                 for leg in st.legs]) for st in s.scalars(select(Strategy).order_by(Strategy.id))]


def errors(at) -> list[str]:
    return [e.value for e in at.error]


@pytest.fixture
def world(db):
    a1 = b.seed_account(db, "alpha")
    b.seed_heartbeat(db, "market_data", details={"connected": True})
    expiry = b.seed_instruments(db)
    b.seed_prices(db, expiry=expiry)
    return dict(db=db, account=a1, expiry=expiry)


def _builder(legs: list[dict] | None = None, **numbers) -> AppTest:
    at = page()
    if legs is not None:  # what the legs table holds (typed in the grid, or loaded from a saved strategy)
        at.session_state["strategies.legs_data"] = legs_frame([dict(LEG_DEFAULTS, **leg) for leg in legs])
    at.run()
    at.toggle(key="strategies.show_payoff").set_value(False)
    at.text_input(key="strategies.name").input("typed")
    for key, value in numbers.items():
        at.number_input(key=f"strategies.{key}").set_value(value)
    return at.run()


@pytest.mark.parametrize("legs,numbers,msg", [
    (None, dict(max_loss=-500.0), "Max loss must be a positive amount in rupees (got -500)"),
    (None, dict(max_loss=0.0), "Max loss must be a positive amount"),
    (None, dict(max_profit=-1.0), "Max profit must be a positive amount"),
    (None, dict(trailing_sl=0.0), "Trailing stop must be a positive amount"),
    ([dict(lots=0)], {}, "Leg 1: lots must be a whole number from 1 to 500 (got 0)"),
    ([dict(lots=100000)], {}, "Leg 1: lots must be a whole number from 1 to 500 (got 100000)"),
    ([dict(lots=1), dict(instrument="PE", lots=2.5)], {}, "Leg 2: lots must be a whole number from 1 to 500 (got 2.5)"),
    ([dict(strike_mode="OTM", offset=1.5)], {}, "ITM/OTM offset"),
    ([dict(strike_mode="DELTA", target=30)], {}, "target delta must be between 0 and 1"),
    ([dict(strike_mode="PREMIUM", target=None)], {}, "target premium"),
    ([dict(entry_type="LIMIT", convert_after_s=2.5)], {}, "convert to MARKET after"),
])
def test_builder_when_a_number_is_bad_then_its_error_and_nothing_saved(world, legs, numbers, msg):
    at = _builder(legs, **numbers)
    at.button(key="strategies.save").click().run()
    assert not at.exception, at.exception
    assert any(msg in e for e in errors(at)), errors(at)
    assert strategies(world["db"]) == []


def test_builder_when_limits_empty_then_saved_without_limits(world):
    at = _builder([dict(lots=2), dict(instrument="PE", lots=2)])
    at.button(key="strategies.save").click().run()
    assert not errors(at), errors(at)
    assert strategies(world["db"]) == [(1, "typed", None, False, [("CE", 2), ("PE", 2)])]


def test_edit_clone_delete_when_run_live_then_delete_refused_with_reason(world):
    db = world["db"]
    at = _builder([dict(lots=1), dict(instrument="PE", lots=3)], max_loss=700.0)
    at.selectbox(key="strategies.expiry").set_value("current_week")
    at.button(key="strategies.save").click().run()
    assert not errors(at), errors(at)
    saved = next(d.value for d in at.dataframe if "legs" in d.value.columns and "size" in d.value.columns)
    row = saved[saved["name"] == "typed"].iloc[0]
    assert (row["legs"], row["size"]) == ("SELL 1×CE ATM · SELL 3×PE ATM", 4)
    assert row["expiry"] == "Current week"
    sid = strategies(db)[0][0]

    # Edit: the saved strategy in the builder, saved back under its id with a new max loss
    at.selectbox(key="strategies.manage_id").set_value(sid)
    at.button(key="strategies.edit").click().run()
    assert at.text_input(key="strategies.name").value == "typed"
    assert at.number_input(key="strategies.max_loss").value == 700.0
    assert at.selectbox(key="strategies.expiry").value == "current_week"
    at.number_input(key="strategies.max_loss").set_value(900.0)
    at.button(key="strategies.save").click().run()
    assert not errors(at), errors(at)
    assert strategies(db) == [(sid, "typed", 900.0, False, [("CE", 1), ("PE", 3)])]

    # Clone under a new name; a taken name is refused
    at.text_input(key="strategies.clone_name").input("typed copy")
    at.button(key="strategies.clone").click().run()
    assert [s[1] for s in strategies(db)] == ["typed", "typed copy"]
    at.text_input(key="strategies.clone_name").input("typed copy")
    at.button(key="strategies.clone").click().run()
    assert any("already exists" in e for e in errors(at)), errors(at)

    # Delete while a run of it is live: refused, with the reason; once the run ended: deleted
    run = b.seed_run(db, world["account"], name="typed")
    at.selectbox(key="strategies.manage_id").set_value(sid)
    at.checkbox(key="strategies.delete_confirm").check()
    at.button(key="strategies.delete").click().run()
    assert any(f"Cannot delete 'typed': 1 run(s) of it still live (#{run})" in e for e in errors(at)), errors(at)
    assert not strategies(db)[0][3]
    with db.write() as s:
        s.get(StrategyRun, run).status = "exited"
    at.selectbox(key="strategies.manage_id").set_value(sid)
    at.checkbox(key="strategies.delete_confirm").check()
    at.button(key="strategies.delete").click().run()
    assert not errors(at), errors(at)
    assert [(s[0], s[3]) for s in strategies(db)] == [(sid, True), (sid + 1, False)]
    assert at.selectbox(key="strategies.manage_id").options == ["typed copy"]
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(StrategyRun).where(StrategyRun.strategy_id == sid)) == 1
