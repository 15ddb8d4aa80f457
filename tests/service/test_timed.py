"""The timed strategies' job in-process (services/timed.py) with the real MarginChecker against a broker address
nobody listens on (loopback, refused): brokers slow to answer the margin question must not carry an entry past
its grace window. The entry's timing against the real service and simulator: tests/reliability/
test_timed_strategies_e2e.py."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import func, select

from config import BrokerSettings, MarketSettings, Settings
from db import clock
from db.accounts import add_account
from db.models import Instrument, OrderIntent, StrategyRun, TimedFire
from db.schedules import save_schedule
from db.strategies import LegSpec, save_strategy
from db.vocab import TimedState
from services.context import ServiceContext
from services.margin_check import MarginChecker
from services.timed import TimedStrategies
from simulator.testing import free_port
from tests.builders import KEY_A
from tests.harness import wait_for
from tests.market_clock import offset_to


class Alerts:
    def __init__(self):
        self.raised: list[tuple[str, str]] = []

    def alert(self, kind, message, subject=""):
        self.raised.append((kind, message))
        return True


def test_timed_entry_when_the_margin_answers_take_it_past_the_grace_then_missed_in_the_write_and_nothing_queued(
        seeded_db):
    db = seeded_db
    day = "2026-12-01"  # a Tuesday, a trading day
    clock.set_offset(timedelta(seconds=offset_to(f"{day} 09:00:00")))
    dead = f"http://127.0.0.1:{free_port()}"  # connection refused: every margin read retries with backoff
    acct = add_account(db, "slow", dead, "ws://127.0.0.1:1", KEY_A, is_primary=True)
    with db.read() as s:
        expiry = s.scalar(select(Instrument.expiry).where(Instrument.instrumenttype == "CE"))
    sid = save_strategy(db, "slow margin", "NIFTY", "NSE_INDEX", expiry, [LegSpec("CE", "SELL"), LegSpec("PE", "SELL")])
    save_schedule(db, sid, "09:20", "", [[acct, 1]])
    settings = replace(Settings(), broker=replace(BrokerSettings(), read_retries=2, backoff_base_s=1.0,
                                                  connect_timeout_s=0.5),
                       market=replace(MarketSettings(), timed_entry_grace_s=1.0))
    ctx = ServiceContext(db, settings)
    alerts = Alerts()
    job = TimedStrategies(ctx, lambda: None, MarginChecker(ctx).answers, alerts)
    try:
        clock.set_offset(timedelta(seconds=offset_to(f"{day} 09:20:00")))
        job.run_once()  # due, 0 s late: the entry starts; its margin reads take about 3 s (1 s + 2 s backoff)
        assert wait_for(lambda: _fire(db, sid) is not None, 30)
        row = _fire(db, sid)
        assert row.status == TimedState.MISSED, row.error
        assert row.error.startswith("not entered: writing the 09:20 IST entry") and "(grace 1 s)" in row.error
        with db.read() as s:
            assert s.scalar(select(func.count()).select_from(StrategyRun)) == 0
            assert s.scalar(select(func.count()).select_from(OrderIntent)) == 0
        assert [k for k, _ in alerts.raised] == ["timed_entry_missed"]
        job.run_once()  # the row is there: nothing more, no second alert
        assert len(alerts.raised) == 1
    finally:
        ctx.close()


def _fire(db, sid) -> TimedFire | None:
    with db.read() as s:
        return s.scalar(select(TimedFire).where(TimedFire.strategy_id == sid))
