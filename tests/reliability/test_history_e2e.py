"""History and journal against the real service process (``python -m services``) and the simulator: a run entered,
exited by its max loss, then ``summarise_day`` (the History page's button) writes the day's summary, and the
order journal tells the run's story from the audit rows (claimed, sent, placed, filled) with the risk event and
the prices the exit was decided on."""
from __future__ import annotations

import pytest
from sqlalchemy import select, update

from datetime import datetime, timedelta

from db.clock import IST
from db.commands import enqueue_control
from db.history import day_summaries, order_timeline, run_risk_events, trading_day_of
from db.models import ControlCommand, OrderIntent, StrategyRun
from db.vocab import CommandStatus
from simulator.testing import SimProcess
from tests.builders import seed_instruments
from tests.harness import queue_runs
from tests.market_clock import offset_to
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_orders import sim_account

SYMBOL, QTY = "SBIN", 10


def _run(db, run_id) -> StrategyRun:
    with db.read() as s:
        return s.get(StrategyRun, run_id)


def _cmd(db, cid) -> ControlCommand:
    with db.read() as s:
        return s.get(ControlCommand, cid)


@pytest.mark.timeout(120)
def test_run_exited_by_max_loss_when_summarised_then_day_rows_and_its_timeline_with_the_decision(db, tmp_path):
    # The session's market clock is 10:30 IST of the latest trading day, which after IST midnight or on a weekend is
    # not the date the database's own stamps (real UTC) fall on: the summary of the clock's day then finds no run.
    # Here every clock is 10:30 IST of the real date (a weekend's then goes the "not a trading day" way).
    off = offset_to(f"{datetime.now(IST):%Y-%m-%d} 10:30:00")
    with SimProcess(seed=44, args=["--frozen"], clock_offset_s=off) as sim:
        sim.set_price(SYMBOL, "NSE", 1000.0)
        seed_instruments(db)
        acct, name = sim_account(db, sim, "hist", is_primary=True)
        [(run_id, _)] = queue_runs(db, [acct], [dict(symbol=SYMBOL, action="BUY", qty=QTY)], "hist-buy")
        proc = start_service(db.path, tmp_path / "svc.log", service_env(APP__MARKET__CLOCK_OFFSET_S=repr(off)))
        try:
            assert wait_for(lambda: _run(db, run_id).status == "active", 30), (tmp_path / "svc.log").read_text()[-3000:]
            with db.write() as s:
                s.execute(update(StrategyRun).where(StrategyRun.id == run_id).values(max_loss=100.0))
            with db.read() as s:
                entry = s.scalar(select(OrderIntent.broker_avg_price).where(OrderIntent.run_id == run_id))
            sim.set_price(SYMBOL, "NSE", entry - 25)  # -250 <= -100
            assert wait_for(lambda: _run(db, run_id).status == "exited", 20), _run(db, run_id).status

            cid = enqueue_control(db, "summarise_day", {})
            assert wait_for(lambda: _cmd(db, cid).status != CommandStatus.QUEUED, 15)
            cmd = _cmd(db, cid)
        finally:
            assert stop_service(proc) == 0

    assert cmd.status == CommandStatus.DONE, cmd.result
    day = trading_day_of(datetime.now(IST) + timedelta(seconds=off))
    rows = day_summaries(db)
    if day is None:  # run on a weekend: the command says so and writes nothing
        assert "is not a trading day" in cmd.result and rows.empty
    else:
        assert cmd.result.startswith(f"{day}: ") and "written" in cmd.result
        strat = rows[rows["strategy"] == "hist-buy"].iloc[0]
        assert (strat["day"], strat["trades"], strat["losses"]) == (day.isoformat(), 1, 1)
        assert strat["realized"] == pytest.approx(_run(db, run_id).pnl) and strat["realized"] < 0
        assert len(rows[rows["strategy"] == ""]) == 1  # the account row

    [event] = [e for e in run_risk_events(db, run_id) if e["action"] == "exit"]
    assert event["event_type"] == "max_loss" and event["threshold"] == -100
    [leg] = event["decided_on"]
    assert leg[:4] == [SYMBOL, "BUY", QTY, entry] and leg[6] == pytest.approx(entry - 25)
    timeline = order_timeline(db, run_id=run_id)
    for purpose in ("entry", "exit"):
        steps = timeline[timeline["purpose"] == purpose]["to_status"].tolist()
        assert steps[:2] == ["claimed", "sent"] and steps[-1] == "filled", (purpose, steps)
    assert timeline["ts_utc"].is_monotonic_increasing
