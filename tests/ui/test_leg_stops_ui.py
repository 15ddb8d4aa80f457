"""AppTest: per-leg stop-loss / target / trailing / re-entry in the Strategies builder (validated, saved with the
legs) and the Risk Monitor's leg actions (Close leg, Roll) and Modify price, each a control command behind a
confirmation, with a message that stays on screen."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import ui_builders as b
from db.models import ControlCommand, Execution, OrderIntent, Strategy, StrategyLeg

ROOT = Path(__file__).resolve().parents[2]


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=30)


def count(db, model) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model))


def errors(at) -> list[str]:
    return [e.value for e in at.error]


@pytest.fixture
def builder(db):
    b.seed_account(db, "alpha")
    b.seed_heartbeat(db, "market_data", details={"connected": True})
    expiry = b.seed_instruments(db)
    b.seed_prices(db, expiry=expiry)
    return db


def _save(at, edits: dict) -> AppTest:
    at.session_state["strategies.legs"] = {"edited_rows": edits, "added_rows": [], "deleted_rows": []}
    at.run()
    at.text_input(key="strategies.name").input("Legs with stops")
    at.button(key="strategies.save").click().run()
    return at


@pytest.mark.parametrize("edits,msg", [
    ({0: {"sl_mode": "pct", "sl_value": 150.0}}, "Leg 1: a stop-loss of 150 % is out of range (must be below 100 %)"),
    ({1: {"sl_value": -5.0}}, "Leg 2: stop-loss must be a positive number"),
    ({0: {"tp_mode": "pct", "tp_value": 100.0}}, "Leg 1: a target of 100 % is out of range"),
    ({0: {"trail_points": -1.0}}, "Leg 1: trailing stop (points) must be a positive number"),
    ({0: {"reentry_count": 2}}, "Leg 1: re-entry follows the leg's stop"),
])
def test_builder_when_a_leg_stop_is_bad_then_a_clear_error_and_nothing_saved(builder, edits, msg):
    at = _save(page("strategies"), edits)
    assert any(msg in e for e in errors(at)), errors(at)
    assert count(builder, Strategy) == 0 and count(builder, StrategyLeg) == 0


def test_builder_options_when_compared_then_they_are_the_vocabulary_of_the_stored_rows():
    from db.vocab import ReentryMode, StopMode
    from ui.strategy_form import REENTRY_MODES, STOP_MODES
    assert set(STOP_MODES) == {m.value for m in StopMode} and set(REENTRY_MODES) == {m.value for m in ReentryMode}


def test_builder_when_leg_stops_are_set_then_saved_with_the_legs(builder):
    at = _save(page("strategies"), {0: {"sl_mode": "pct", "sl_value": 30.0, "reentry_count": 1, "reentry_mode": "atm",
                                        "reentry_wait": True}, 1: {"trail_points": 12.5, "tp_value": 40.0}})
    assert not errors(at), errors(at)
    with builder.read() as s:
        legs = list(s.scalars(select(StrategyLeg).order_by(StrategyLeg.leg_no)))
    assert [(x.sl_mode, x.sl_value, x.reentry_count, x.reentry_mode, x.reentry_wait) for x in legs] == [
        ("pct", 30.0, 1, "atm", True), ("", None, 0, "same", False)]
    assert (legs[1].tp_mode, legs[1].tp_value, legs[1].trail_points) == ("points", 40.0, 12.5)


@pytest.fixture
def live_run(db):
    a1 = b.seed_account(db, "alpha")
    b.seed_heartbeat(db, "market_data", details={"connected": True})
    expiry = b.seed_instruments(db)
    run = b.seed_run(db, a1, expiry=expiry)
    ce = b.option_symbol("NIFTY", expiry, 26000, "CE")
    with db.write() as s:
        s.add(Execution(run_id=run, account_id=a1, leg_no=1, symbol=ce, exchange="NFO", action="SELL", quantity=65,
                        product="NRML", status="entered", entry_price=100.0, sl_mode="pct", sl_value=30.0))
        s.add(OrderIntent(client_order_id="lim1", account_id=a1, symbol="RELIANCE", exchange="NSE", action="BUY",
                          requested_qty=2, pricetype="LIMIT", product="MIS", limit_price=1400.0, status="placed",
                          broker_order_id="B-LIM-1"))
    return db, run


def _commands(db, kind):
    with db.read() as s:
        return [json.loads(c.payload_json) for c in s.scalars(select(ControlCommand).where(ControlCommand.kind == kind))]


def test_risk_monitor_when_a_leg_is_closed_rolled_and_an_order_modified_then_commands_queued(live_run):
    db, run = live_run
    at = page("risk").run()
    at.session_state["risk.legs"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    assert at.button(key="risk.close_leg").disabled  # not confirmed yet
    at.checkbox(key=f"risk.leg_confirm.{run}.1").check().run()
    at.button(key="risk.close_leg").click().run()
    assert _commands(db, "close_leg") == [{"run_id": run, "leg_no": 1}]
    assert any("Close of leg 1 requested" in m.value for m in at.success)
    at.run()  # the message outlives a refresh
    assert any("Close of leg 1 requested" in m.value for m in at.success)
    at.selectbox(key="risk.roll_how").select("strikes away")
    at.number_input(key="risk.roll_value").set_value(2.0)
    at.checkbox(key=f"risk.leg_confirm.{run}.1").check().run()
    at.button(key="risk.roll_leg").click().run()
    assert _commands(db, "roll_leg") == [{"run_id": run, "leg_no": 1, "offset": 2}]

    at.session_state["risk.working"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    with db.read() as s:
        iid = s.scalar(select(OrderIntent.id).where(OrderIntent.client_order_id == "lim1"))
    at.number_input(key=f"risk.modify_price.{iid}").set_value(1410.0)
    at.checkbox(key=f"risk.modify_confirm.{iid}").check().run()
    at.button(key="risk.modify").click().run()
    assert _commands(db, "modify_order") == [{"intent_id": iid, "price": 1410.0}]
    at.number_input(key=f"risk.modify_price.{iid}").set_value(0.0)
    at.checkbox(key=f"risk.modify_confirm.{iid}").check().run()
    at.button(key="risk.modify").click().run()
    assert any("must be a positive amount" in e for e in errors(at)), errors(at)
    assert len(_commands(db, "modify_order")) == 1
