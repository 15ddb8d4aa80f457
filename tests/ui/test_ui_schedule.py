"""Strategies page, schedule of a saved strategy (AppTest, real SQLite): a bad time or account list is an error that
blocks the save (nothing written), a good one is stored, and "Today's schedule" shows each schedule's state and
what ran (issue #15, Time)."""
from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import ui_builders as b
from db.clock import today_ist
from db.models import StrategySchedule, TimedFire
from db.strategies import LegSpec, save_strategy
from db.vocab import TimedKind, TimedState

ROOT = Path(__file__).resolve().parents[2]
K = "strategies.sched"


def _world(db):
    a1, a2 = b.seed_account(db, "alpha"), b.seed_account(db, "beta")
    b.seed_heartbeat(db, "market_data", details={"connected": True})
    expiry = b.seed_instruments(db)
    b.seed_prices(db, expiry=expiry)
    sid = save_strategy(db, "nine twenty", "NIFTY", "NSE_INDEX", expiry, [LegSpec("CE", "SELL"), LegSpec("PE", "SELL")])
    return a1, a2, sid


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "strategies.py"), default_timeout=30)
    at.run()
    at.toggle(key="strategies.show_payoff").set_value(False)
    return at.run()


def _schedules(db) -> list[tuple]:
    with db.read() as s:
        return [(r.strategy_id, r.entry_at, r.exit_at, json.loads(r.accounts_json), r.enabled)
                for r in s.scalars(select(StrategySchedule))]


def _today(at):
    return next(d.value for d in at.dataframe if "state" in d.value.columns and "entry" in d.value.columns)


def test_schedule_when_input_is_bad_then_error_and_nothing_saved_and_when_good_then_saved_and_listed(db):
    a1, a2, sid = _world(db)
    at = _page()
    assert at.selectbox(key="strategies.manage_id").value == sid
    for entry, exit_, accounts, msg in (("09:10", "15:10", [a1], "Entry time 09:10 is outside market hours"),
                                        ("09:20", "09:20", [a1], "Exit time 09:20 must be after the entry time"),
                                        ("9.20", "", [a1], "Entry time must be a time of day HH:MM"),
                                        ("09:20", "", [], "A timed entry needs at least one account")):
        at.text_input(key=f"{K}_entry").input(entry)
        at.text_input(key=f"{K}_exit").input(exit_)
        at.multiselect(key=f"{K}_accounts").set_value(accounts)
        at.run()
        at.button(key=f"{K}_save").click().run()
        assert not at.exception, at.exception
        assert any(msg in e.value for e in at.error), [e.value for e in at.error]
        assert _schedules(db) == []

    at.text_input(key=f"{K}_entry").input("09:20")
    at.text_input(key=f"{K}_exit").input("15:10")
    at.multiselect(key=f"{K}_accounts").set_value([a1, a2])
    at.run()
    at.number_input(key=f"{K}_mult.{a2}").set_value(2)
    at.run()
    at.button(key=f"{K}_save").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Schedule saved: entry 09:20 · exit 15:10" in s.value for s in at.success)
    assert _schedules(db) == [(sid, "09:20", "15:10", [[a1, 1], [a2, 2]], True)]
    row = _today(at).iloc[0]
    assert (row["strategy"], row["entry"], row["exit"], row["accounts"]) == ("nine twenty", "09:20", "15:10",
                                                                             "alpha 1×, beta 2×")
    assert row["state"] in (TimedState.PENDING, TimedState.NEXT_DAY, TimedState.HOLIDAY)

    # a fresh page load shows the stored schedule in the form
    again = _page()
    assert again.text_input(key=f"{K}_entry").value == "09:20"
    assert again.multiselect(key=f"{K}_accounts").value == [a1, a2]
    assert again.number_input(key=f"{K}_mult.{a2}").value == 2


def test_todays_schedule_when_the_service_ran_the_entry_and_exit_then_state_runs_and_errors_shown(db):
    a1, a2, sid = _world(db)
    other = save_strategy(db, "late one", "NIFTY", "NSE_INDEX", "", [LegSpec("CE", "BUY")], expiry_mode="current_week")
    with db.write() as s:
        for strategy in (sid, other):
            s.add(StrategySchedule(strategy_id=strategy, entry_at="09:20", exit_at="15:10",
                                   accounts_json=json.dumps([[a1, 1]]), saved_at_ist="2020-01-01 09:00:00"))
        day = today_ist().isoformat()
        s.add(TimedFire(strategy_id=sid, day=day, kind=TimedKind.ENTRY.value, status=TimedState.ENTERED.value,
                        run_ids_json="[7, 8]"))
        s.add(TimedFire(strategy_id=sid, day=day, kind=TimedKind.EXIT.value, status=TimedState.EXITED.value,
                        run_ids_json="[7, 8]"))
        s.add(TimedFire(strategy_id=other, day=day, kind=TimedKind.ENTRY.value, status=TimedState.MISSED.value,
                        error="not entered: the service reached the 09:20 IST entry 300 s late"))
    at = _page()
    assert not at.exception, at.exception
    df = _today(at).set_index("strategy")
    assert (df.loc["nine twenty", "state"], df.loc["nine twenty", "run_ids"]) == (TimedState.EXITED, "7, 8")
    assert df.loc["late one", "state"] == TimedState.MISSED
    assert "300 s late" in df.loc["late one", "error"]
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(StrategySchedule)) == 2  # the page wrote nothing
