"""The square-off job's day logic in-process (services/square_off.py, db/square_offs.py): when a daily limit's halt
is lifted, and the once-per-day latch. The square-off itself runs against the simulator in
tests/reliability/test_square_off_e2e.py."""
from __future__ import annotations

from datetime import timedelta

from config import Settings
from db import clock
from db.accounts import set_trading_state
from db.models import Account
from db.square_offs import begin_square_off, finish_square_off, square_off_status
from db.vocab import SquareOffStatus, TradingState
from services.context import ServiceContext
from services.square_off import SquareOffs
from tests.builders import KEY_A, make_account
from tests.market_clock import offset_to


def _at(ist: str) -> None:
    clock.set_offset(timedelta(seconds=offset_to(ist)))


def _state(db, acct) -> tuple[str, str]:
    with db.read() as s:
        a = s.get(Account, acct)
        return a.trading_state, a.trading_reason


def test_rearm_when_a_limit_halt_meets_a_holiday_pre_open_and_09_00_then_lifted_only_at_09_00_of_a_trading_day(db):
    limit, manual = make_account(db, "lim"), make_account(db, "man", key=KEY_A[::-1])
    with db.write() as s:
        set_trading_state(s, limit, TradingState.HALTED, "daily max loss ₹100 at 2026-10-01 10:42:01 IST", "service",
                          until="2026-10-01")
        set_trading_state(s, manual, TradingState.HALTED, "halted by the trader", "ui", until="")
    ctx = ServiceContext(db, Settings())
    job = SquareOffs(ctx, flattener=None)
    try:
        for ist in ("2026-10-01 23:59:00", "2026-10-02 10:00:00",  # the same day; then a holiday
                    "2026-10-05 00:00:05", "2026-10-05 08:59:59"):  # the next trading day, before 09:00
            _at(ist)
            job.run_once()
            assert _state(db, limit)[0] == TradingState.HALTED, ist
        _at("2026-10-05 09:00:01")
        job.run_once()
        state, reason = _state(db, limit)
        assert state == TradingState.ACTIVE and reason.startswith("re-armed on the next trading day 2026-10-05")
        assert _state(db, manual)[0] == TradingState.HALTED
        job.run_once()  # nothing more to do
        assert _state(db, limit)[0] == TradingState.ACTIVE
    finally:
        ctx.close()


def test_square_off_latch_when_begun_twice_then_running_until_finished_then_finished_for_good(db):
    with db.write() as s:
        assert begin_square_off(s, "2026-12-01", "MIS") == SquareOffStatus.RUNNING
        assert begin_square_off(s, "2026-12-01", "MIS") == SquareOffStatus.RUNNING  # a restart mid-way: run again
        finish_square_off(s, "2026-12-01", "MIS", SquareOffStatus.DONE, "closed 2/2")
    with db.write() as s:
        assert begin_square_off(s, "2026-12-01", "MIS") == SquareOffStatus.DONE
        assert begin_square_off(s, "2026-12-01", "NRML") == SquareOffStatus.RUNNING  # its own row
        assert square_off_status(s, "2026-12-02", "MIS") is None
