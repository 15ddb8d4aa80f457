"""Strategies page (AppTest, real SQLite): one margin check, one fan-out. A second click of Execute on the same
check (a double click, or a click before the first one's answer showed) sends nothing again; executing again takes
a new margin check (issue #15: found by tests/e2e/test_strategy_day_e2e.py, where two clicks 0.5 s apart put every
leg on every account twice)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import ui_builders as b
from db.models import OrderIntent, StrategyRun

ROOT = Path(__file__).resolve().parents[2]


def count(db, model) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.fixture
def world(db):
    a1 = b.seed_account(db, "alpha")
    b.seed_heartbeat(db, "market_data", details={"connected": True})
    expiry = b.seed_instruments(db)
    b.seed_prices(db, expiry=expiry)
    return dict(db=db, account=a1)


def check_margin(db, at) -> None:
    """Click Check margin and play the service: answer the queued margin_check with ample funds."""
    from db.commands import finish_control
    from db.margin import CheckResult, plan_of, record_checks
    from db.strategies import resolved_strategy
    at.button(key="strategies.check_margin").click().run()
    plan, cid = at.session_state["strategies.margin"]
    sid, mult = plan[0], dict(plan[1])
    _, legs = resolved_strategy(db, sid)
    with db.write() as s:
        record_checks(s, cid, sid, [CheckResult(a, m, plan_of(legs, m), 150_000.0, 1_000_000.0)
                                    for a, m in mult.items()])
        finish_control(s, cid, "done", "checked")
    at.run()


def test_execute_when_clicked_twice_on_one_margin_check_then_one_run_and_a_new_check_executes_again(world):
    db = world["db"]
    at = AppTest.from_file(str(ROOT / "pages" / "strategies.py"), default_timeout=30).run()
    at.text_input(key="strategies.name").input("Short straddle")
    at.button(key="strategies.save").click().run()
    at.multiselect(key="strategies.exec_accounts").set_value([world["account"]]).run()
    check_margin(db, at)

    at.button(key="strategies.execute").click().run()
    first = at.session_state["strategies.last_runs"]
    at.button(key="strategies.execute").click().run()  # the same check: the same execute key

    assert not at.exception and not [e.value for e in at.error], [e.value for e in at.error]
    assert (count(db, StrategyRun), count(db, OrderIntent)) == (1, 2)  # one straddle, not two
    assert at.session_state["strategies.last_runs"] == first
    assert any("Already executed on this margin check" in m.value and "nothing sent again" in m.value
               for m in at.success), [m.value for m in at.success]

    check_margin(db, at)  # a deliberate second execution: a new check (of the funds now left), a new fan-out
    at.button(key="strategies.execute").click().run()
    assert (count(db, StrategyRun), count(db, OrderIntent)) == (2, 4)
    assert any("Queued 1 run(s)" in m.value for m in at.success), [m.value for m in at.success]


def test_margin_table_when_checked_then_required_available_and_shortfall_are_rupees(world):
    at = AppTest.from_file(str(ROOT / "pages" / "strategies.py"), default_timeout=30).run()
    at.text_input(key="strategies.name").input("Short straddle")
    at.button(key="strategies.save").click().run()
    at.multiselect(key="strategies.exec_accounts").set_value([world["account"]]).run()
    check_margin(world["db"], at)

    grid = next(d for d in at.dataframe if "shortfall" in d.value.columns)
    formats = {c: json.loads(grid.proto.columns).get(c, {}).get("type_config", {}).get("format")
               for c in ("required", "available", "shortfall")}
    assert formats == dict.fromkeys(formats, "₹ %.2f"), formats  # money, like every other money column
    assert grid.value[["required", "available", "shortfall"]].iloc[0].tolist() == [150_000.0, 1_000_000.0, 0.0]
