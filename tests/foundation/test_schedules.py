"""Timed strategies' schedules (db/schedules.py): the validation the page shares, storage, the once-per-day entry
latch written with the runs in one transaction, and the day's state. The service's timing runs against the real
service and simulator in tests/reliability/test_timed_strategies_e2e.py."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from config import MarketSettings
from db import clock
from db.accounts import set_trading_state
from db.commands import CommandError
from db.models import Instrument, OrderIntent, StrategyRun, StrategySchedule, TimedFire
from db.schedules import (begin_exit, check_schedule, day_schedules, enter_once, finish_exit, live_runs_started_on,
                          remove_schedule, save_schedule, schedule_of, today_rows)
from db.strategies import LegSpec, save_strategy
from db.vocab import TimedKind, TimedState, TradingState
from tests.builders import KEY_A, make_account
from tests.market_clock import offset_to


@pytest.mark.parametrize("entry, exit_, accounts, message", [
    ("09:14", "", [[1, 1]], "Entry time 09:14 is outside market hours"),
    ("15:31", "", [[1, 1]], "outside market hours"),
    ("", "08:00", [], "Exit time 08:00 is outside market hours"),
    ("9.20", "", [[1, 1]], "Entry time must be a time of day HH:MM"),
    ("25:00", "", [[1, 1]], "HH:MM"),
    (920, "", [[1, 1]], "HH:MM"),
    ("10:00", "10:00", [[1, 1]], "Exit time 10:00 must be after the entry time 10:00"),
    ("11:00", "10:00", [[1, 1]], "must be after the entry time"),
    ("09:20", "", [], "A timed entry needs at least one account"),
    ("", "", [], "Give an entry time, an exit time or both"),
    ("09:20", "15:10", [[1, 0]], "Multiplier for account 1 must be a whole number from 1 to 50"),
    ("09:20", "15:10", [[1, 2.5]], "Multiplier for account 1"),
    ("09:20", "15:10", [[1, 51]], "Multiplier for account 1"),
    ("09:20", "15:10", [[1, 1], [1, 2]], "An account is listed twice"),
    ("09:20", "15:10", [["1", 1]], "Unknown account '1'"),
    ("09:20", "15:10", [[True, 1]], "Unknown account"),
    ("09:20", "15:10", [1], "Accounts must be [account_id, multiplier] pairs"),
    ("09:20", "15:10", "1", "Accounts must be a list"),
])
def test_check_schedule_when_input_is_bad_then_a_clear_error(entry, exit_, accounts, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace("[", r"\[")):
        check_schedule(entry, exit_, accounts)


def test_check_schedule_when_input_is_good_then_normalised():
    assert check_schedule(" 9:20 ", "15:10", [[1, 1], [2, 2.0], [3, 3]]) == dict(
        entry_at="09:20", exit_at="15:10", accounts=[[1, 1], [2, 2], [3, 3]], enabled=True)
    assert check_schedule("", "15:30", [])["exit_at"] == "15:30"  # an exit alone needs no account
    assert check_schedule("09:15", None, [[4, 1]], enabled=False)["enabled"] is False


def schedule_expiry(db) -> str:
    with db.read() as s:
        return s.scalar(select(Instrument.expiry).where(Instrument.instrumenttype == "CE"))


def _strategy(db, name="timed straddle") -> int:
    return save_strategy(db, name, "NIFTY", "NSE_INDEX", schedule_expiry(db),
                         [LegSpec("CE", "SELL"), LegSpec("PE", "SELL")])


def _at(ist: str) -> None:
    clock.set_offset(timedelta(seconds=offset_to(ist)))


def test_save_schedule_when_bad_or_unknown_then_nothing_written_and_when_good_then_stored(seeded_db):
    db = seeded_db
    a = make_account(db, "t-a")
    sid = _strategy(db)
    for args in (("09:20", "09:10", [[a, 1]]), ("09:20", "", [[a + 50, 1]])):
        with pytest.raises(CommandError):
            save_schedule(db, sid, *args)
    with pytest.raises(CommandError, match="Unknown strategy"):
        save_schedule(db, sid + 9, "09:20", "", [[a, 1]])
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(StrategySchedule)) == 0
    mis = save_strategy(db, "mis straddle", "NIFTY", "NSE_INDEX", schedule_expiry(db),
                        [LegSpec("CE", "SELL")], product="MIS")
    with pytest.raises(CommandError, match=r"Entry time 15:15 is not before the cut-off for new MIS entries \(15:15"):
        save_schedule(db, mis, "15:15", "15:25", [[a, 1]])
    with pytest.raises(CommandError, match=r"cut-off for new NRML entries \(14:00"):
        save_schedule(db, sid, "14:30", "", [[a, 1]], market=MarketSettings(entries_until="14:00"))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(StrategySchedule)) == 0
    save_schedule(db, mis, "15:14", "15:25", [[a, 1]])  # before the cut-off; the exit may come after it
    save_schedule(db, sid, "09:20", "15:10", [[a, 2]])
    save_schedule(db, sid, "09:25", "15:10", [[a, 3]])  # replaces it
    assert schedule_of(db, sid) == dict(entry_at="09:25", exit_at="15:10", accounts=[[a, 3]], enabled=True)
    assert remove_schedule(db, sid) and schedule_of(db, sid) is None


def test_enter_once_when_called_twice_then_one_latch_row_and_one_set_of_runs_written_with_it(seeded_db):
    db = seeded_db
    day = "2026-12-01"
    _at(f"{day} 09:00:00")
    a, b = make_account(db, "t-a"), make_account(db, "t-b", key=KEY_A[::-1])
    sid = _strategy(db)
    save_schedule(db, sid, "09:20", "15:10", [[a, 1], [b, 2]])
    _at(f"{day} 09:20:00")
    with db.read() as s:
        [sched] = day_schedules(s, date.fromisoformat(day))
    with db.write() as s:
        state, runs, _, written = enter_once(s, sched, day, MarketSettings())
    assert state == TimedState.ENTERED and len(runs) == 2 and written
    with db.write() as s:  # a second call (a restart, a racing check): the row is there, nothing more
        again = enter_once(s, sched, day, MarketSettings())
    assert again == (TimedState.ENTERED, runs, "", False)
    with db.read() as s:
        assert [r.multiplier for r in s.scalars(select(StrategyRun).order_by(StrategyRun.id))] == [1, 2]
        assert s.scalar(select(func.count()).select_from(OrderIntent)) == 4
        assert s.scalar(select(func.count()).select_from(TimedFire)) == 1
    with db.read() as s:
        assert live_runs_started_on(s, sid, date.fromisoformat(day)) == runs
        assert live_runs_started_on(s, sid, date.fromisoformat(day) + timedelta(days=1)) == []
    [row] = today_rows(db, date.fromisoformat(day))
    assert row["state"] == TimedState.ENTERED and row["run_ids"] == ", ".join(map(str, runs))
    assert row["accounts"] == "t-a 1×, t-b 2×" and (row["entry"], row["exit"]) == ("09:20", "15:10")


def test_enter_once_when_an_account_is_halted_then_failed_row_with_the_reason_and_no_run(seeded_db):
    db = seeded_db
    day = "2026-12-01"
    _at(f"{day} 09:00:00")
    a = make_account(db, "t-a")
    sid = _strategy(db)
    save_schedule(db, sid, "09:20", "", [[a, 1]])
    with db.write() as s:
        set_trading_state(s, a, TradingState.HALTED, "halted by the trader", "ui")
    with db.read() as s:
        [sched] = day_schedules(s, date.fromisoformat(day))
    with db.write() as s:
        state, runs, text, _ = enter_once(s, sched, day, MarketSettings())
    assert (state, runs) == (TimedState.FAILED, []) and "is halted: halted by the trader" in text
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(StrategyRun)) == 0
        assert s.scalar(select(TimedFire.error)) == text


def test_missed_and_exit_latch_and_states_of_the_day(seeded_db):
    db = seeded_db
    day = date(2026, 12, 1)
    _at(f"{day} 09:00:00")
    a = make_account(db, "t-a")
    sid, later = _strategy(db), _strategy(db, "saved late")
    save_schedule(db, sid, "09:20", "15:10", [[a, 1]])
    _at(f"{day} 10:00:00")
    save_schedule(db, later, "09:30", "", [[a, 1]])  # saved after its time: from the next trading day
    with db.read() as s:
        first, second = sorted(day_schedules(s, day), key=lambda d: d.strategy_id)
    assert first.due(first.entry_at, day) and not second.due(second.entry_at, day)
    assert {r["strategy"]: r["state"] for r in today_rows(db, day)} == {
        "timed straddle": TimedState.PENDING, "saved late": TimedState.NEXT_DAY}
    with db.write() as s:
        *_, written = enter_once(s, first, day.isoformat(), MarketSettings(), missed="not entered: late")
    assert written
    assert {r["strategy"]: (r["state"], r["error"]) for r in today_rows(db, day)}["timed straddle"] == \
        (TimedState.MISSED, "not entered: late")
    with db.write() as s:
        assert begin_exit(s, sid, day.isoformat()) == TimedState.EXITING
        assert begin_exit(s, sid, day.isoformat()) == TimedState.EXITING  # a restart mid-way: exit again
        finish_exit(s, sid, day.isoformat(), [])
    with db.write() as s:
        assert begin_exit(s, sid, day.isoformat()) == TimedState.EXITED
        kinds = sorted(s.scalars(select(TimedFire.kind).where(TimedFire.strategy_id == sid)))
    assert kinds == [TimedKind.ENTRY, TimedKind.EXIT]
    holiday = date(2026, 10, 2)
    assert {r["strategy"]: r["state"] for r in today_rows(db, holiday)}["timed straddle"] == TimedState.HOLIDAY
    save_schedule(db, sid, "09:20", "15:10", [[a, 1]], enabled=False)
    assert {r["strategy"]: r["state"] for r in today_rows(db, holiday)}["timed straddle"] == TimedState.DISABLED
    assert json.loads(json.dumps(today_rows(db, day)))  # plain values for the page's table


def test_enter_once_when_one_account_is_short_of_margin_then_it_gets_no_run_and_the_others_enter(seeded_db):
    from db.margin import CheckResult
    from db.models import AuditLog
    db = seeded_db
    day = "2026-12-01"
    _at(f"{day} 09:00:00")
    a, b = make_account(db, "t-a"), make_account(db, "t-poor", key=KEY_A[::-1])
    sid = _strategy(db)
    save_schedule(db, sid, "09:20", "", [[a, 1], [b, 1]])
    with db.read() as s:
        [sched] = day_schedules(s, date.fromisoformat(day))
    answers = [CheckResult(a, 1, [], required=150_000.0, available=1e9),
               CheckResult(b, 1, [], required=150_000.0, available=50_000.0)]
    with db.write() as s:
        state, runs, text, _ = enter_once(s, sched, day, MarketSettings(), answers)
    assert state == TimedState.ENTERED and len(runs) == 1
    assert f"account {b} refused: needs ₹150,000 margin, has ₹50,000 available: short by ₹100,000" == text
    with db.read() as s:
        assert [r.account_id for r in s.scalars(select(StrategyRun))] == [a]
        assert s.scalar(select(AuditLog.actor).where(AuditLog.action == "margin_refused")) == "service"
