"""A strategy leg's own stop-loss / target / trailing stop and its re-entry, in the risk manager (in process, real
SQLite): a hit exits only that leg, once, through the one exit path; the run's own limits still apply; a re-entry
is written once, and only after the stopped leg is flat (and, when asked, the price is back at the entry)."""
from __future__ import annotations

import pytest
from sqlalchemy import select, update

from db.executions import apply_intent_outcome
from db.intents import transition
from db.models import Execution, OrderIntent, RiskEvent, StrategyRun
from services.leg_stops import leg_stop
from services.risk import RiskManager
from tests.service.fixtures_md import account, ctx, make_run, md, tick  # noqa: F401

CE, PE = "NIFTY30DEC2526000CE", "NIFTY30DEC2526000PE"


def _risk(ctx, md):
    return RiskManager(ctx, md, lambda: None)


def _straddle(db, acct, ce_stops: dict, **limits) -> tuple[int, list[int]]:
    run_id, ids = make_run(db, acct, [dict(symbol=CE, action="SELL", qty=65, entry=100.0),
                                      dict(symbol=PE, action="SELL", qty=65, entry=100.0)], **limits)
    with db.write() as s:
        s.execute(update(Execution).where(Execution.id == ids[0]).values(**ce_stops))
    return run_id, ids


def _intents(db, run_id, purpose):
    with db.read() as s:
        return list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == run_id, OrderIntent.purpose == purpose)
                              .order_by(OrderIntent.id)))


def _execs(db, run_id):
    with db.read() as s:
        return list(s.scalars(select(Execution).where(Execution.run_id == run_id).order_by(Execution.id)))


def _fill(db, intent_id, price):
    """Play the poller: the intent filled at ``price``."""
    with db.write() as s:
        for frm, to in (("queued", "claimed"), ("claimed", "sent"), ("sent", "filled")):
            transition(s, intent_id, frm, to, "test", broker_avg_price=price if to == "filled" else None,
                       broker_order_id=f"b{intent_id}" if to == "sent" else None)
        apply_intent_outcome(s, intent_id)


def test_leg_stop_levels_from_the_entry_in_points_and_percent():
    short = leg_stop("SELL", "entered", 100.0, "pct", 30.0, "points", 40.0, None, None)
    assert (short.sl, short.tp, short.trail) == (130.0, 60.0, None)
    assert short.check(129.9) is None and short.check(130.0) == ("leg_sl", 130.0)
    assert short.check(60.0) == ("leg_target", 60.0)
    long = leg_stop("BUY", "entered", 50.0, "points", 60.0, "", None, 5.0, None)
    assert long.sl is None  # 60 points below 50 is never reached: no level
    assert long.check(58.0) is None and long.best == 58.0 and long.check(53.5) is None
    assert long.check(53.0) == ("leg_trailing", 53.0)
    assert leg_stop("SELL", "entered", 100.0, "", None, "", None, None, None) is None  # no stops: not watched
    assert leg_stop("SELL", "pending", None, "pct", 30.0, "", None, None, None) is None


def test_leg_sl_when_hit_then_only_that_leg_exits_once_and_the_run_stays_live(db, ctx, md):
    acct = account(db)
    run_id, (ce_ex, pe_ex) = _straddle(db, acct, dict(sl_mode="pct", sl_value=30.0))
    risk = _risk(ctx, md)
    tick(md, CE, 100.0)
    tick(md, PE, 100.0)
    risk.reload()
    tick(md, CE, 125.0)
    assert _intents(db, run_id, "exit") == []
    tick(md, CE, 131.0)
    tick(md, CE, 135.0)  # more ticks through the level: the leg already exits
    risk.sweep()
    exits = _intents(db, run_id, "exit")
    assert [(i.action, i.symbol, i.requested_qty, i.execution_id) for i in exits] == [("BUY", CE, 65, ce_ex)]
    with db.read() as s:
        assert s.get(StrategyRun, run_id).status == "active"
        assert [e.status for e in _execs(db, run_id)] == ["exiting", "entered"]
        [ev] = s.scalars(select(RiskEvent).where(RiskEvent.run_id == run_id)).all()
    assert ev.event_type == "leg_sl" and ev.threshold == 130.0 and ev.value == 131.0
    assert "leg 1" in ev.message and CE in ev.message
    _fill(db, exits[0].id, 131.0)
    with db.read() as s:
        assert s.get(StrategyRun, run_id).status == "active"  # PE still held
    assert [e.status for e in _execs(db, run_id)] == ["exited", "entered"]


def test_run_max_loss_still_applies_with_the_exited_leg_at_its_exit_price(db, ctx, md):
    acct = account(db)
    run_id, (ce_ex, pe_ex) = _straddle(db, acct, dict(sl_mode="points", sl_value=10.0), max_loss=1000)
    risk = _risk(ctx, md)
    tick(md, CE, 100.0)
    tick(md, PE, 100.0)
    risk.reload()
    tick(md, CE, 111.0)  # the CE leg's stop: -11 x 65 = -715 realised once it fills at 111
    [ce_exit] = _intents(db, run_id, "exit")
    _fill(db, ce_exit.id, 111.0)
    risk.reload()
    tick(md, PE, 104.0)  # -715 - 260 = -975: inside the run's max loss
    assert len(_intents(db, run_id, "exit")) == 1
    tick(md, PE, 105.0)  # -715 - 325 = -1040: the run exits what is left
    exits = _intents(db, run_id, "exit")
    assert [(i.symbol, i.execution_id) for i in exits] == [(CE, ce_ex), (PE, pe_ex)]
    with db.read() as s:
        assert s.get(StrategyRun, run_id).status == "exiting"


def test_reentry_when_price_comes_back_then_one_new_entry_and_a_fresh_manager_writes_no_second(db, ctx, md):
    acct = account(db)
    run_id, (ce_ex, _) = _straddle(db, acct, dict(sl_mode="pct", sl_value=30.0, reentry_count=1,
                                                 reentry_wait=True))
    risk = _risk(ctx, md)
    tick(md, CE, 100.0)
    tick(md, PE, 100.0)
    risk.reload()
    tick(md, CE, 131.0)
    [ce_exit] = _intents(db, run_id, "exit")
    waiting = [e for e in _execs(db, run_id) if e.status == "pending"]
    assert [(w.attempt, w.reentry_ref, w.entry_intent_id, w.quantity) for w in waiting] == [(1, 100.0, None, 65)]
    tick(md, CE, 99.0)  # back at the entry, but the stopped leg is not flat yet: no re-entry
    risk.process_reentries()
    assert _intents(db, run_id, "entry") == []
    tick(md, CE, 120.0)
    _fill(db, ce_exit.id, 131.0)
    risk.reload()
    tick(md, CE, 110.0)
    risk.process_reentries()
    assert _intents(db, run_id, "entry") == []  # flat now, but the price is not back at 100 yet
    tick(md, CE, 100.0)
    risk.process_reentries()
    again = _risk(ctx, md)  # a restart: a fresh manager finds nothing left to re-enter
    again.reload()
    again.process_reentries()
    tick(md, CE, 95.0)
    risk.process_reentries()
    [entry] = _intents(db, run_id, "entry")
    assert (entry.action, entry.symbol, entry.requested_qty, entry.client_order_id) == \
        ("SELL", CE, 65, f"re-{run_id}-1-1-{waiting[0].id}")
    _fill(db, entry.id, 96.0)
    risk.reload()
    tick(md, CE, 125.0)  # the re-entered leg's own stop: 30 % above 96 = 124.8
    exits = _intents(db, run_id, "exit")
    assert len(exits) == 2 and exits[1].execution_id == waiting[0].id
    assert not [e for e in _execs(db, run_id) if e.status == "pending"]  # one re-entry allowed: used up


def test_trailing_when_the_price_moves_for_the_leg_then_the_stop_follows_its_best(db, ctx, md):
    acct = account(db)
    run_id, (ce_ex, _) = _straddle(db, acct, dict(trail_points=10.0))
    risk = _risk(ctx, md)
    tick(md, CE, 100.0)
    tick(md, PE, 100.0)
    risk.reload()
    for p in (95.0, 80.0, 70.0, 79.0):  # best 70: the stop is at 80
        tick(md, CE, p)
    risk.sweep()  # persists the best; a reload keeps it
    risk.reload()
    assert _intents(db, run_id, "exit") == []
    with db.read() as s:
        assert s.get(Execution, ce_ex).leg_best == 70.0
    tick(md, CE, 80.5)
    [ex] = _intents(db, run_id, "exit")
    with db.read() as s:
        [ev] = s.scalars(select(RiskEvent).where(RiskEvent.run_id == run_id)).all()
    assert ex.execution_id == ce_ex and ev.event_type == "leg_trailing" and ev.threshold == 80.0


def test_close_leg_when_asked_then_that_leg_exits_and_its_waiting_reentry_is_withdrawn(db, ctx, md):
    acct = account(db)
    run_id, (ce_ex, pe_ex) = _straddle(db, acct, {})
    risk = _risk(ctx, md)
    tick(md, CE, 100.0)
    tick(md, PE, 100.0)
    risk.reload()
    assert len(risk.exit_leg(run_id, 2)) == 1
    assert risk.exit_leg(run_id, 2) == []  # again: nothing entered left
    [ex] = _intents(db, run_id, "exit")
    assert (ex.execution_id, ex.action) == (pe_ex, "BUY")
    with db.read() as s:
        assert s.get(StrategyRun, run_id).status == "active"


@pytest.mark.parametrize("kind,payload,msg", [
    ("close_leg", {"run_id": 1, "leg_no": 0}, "'leg_no' from 1 to 20"),
    ("close_leg", {"run_id": 1, "leg_no": True}, "'leg_no' from 1 to 20"),
    ("close_leg", {"run_id": 99, "leg_no": 1}, "no run with id 99"),
    ("roll_leg", {"run_id": 1, "leg_no": 1}, "exactly one of 'strike' or 'offset'"),
    ("roll_leg", {"run_id": 1, "leg_no": 1, "strike": 26000, "offset": 1}, "exactly one of"),
    ("roll_leg", {"run_id": 1, "leg_no": 1, "offset": 0}, "offset must be a whole number"),
    ("roll_leg", {"run_id": 1, "leg_no": 1, "offset": 1.5}, "offset must be a whole number"),
    ("roll_leg", {"run_id": 1, "leg_no": 1, "strike": -5}, "strike must be a positive number"),
    ("roll_leg", {"run_id": 1, "leg_no": 1, "offset": 1, "expiry": "next week"}, "expiry must look like"),
    ("modify_order", {"intent_id": 1, "price": "12"}, "needs a number 'price'"),
    ("modify_order", {"intent_id": 1, "price": 0}, "must be a positive amount"),
    ("modify_order", {"intent_id": 1, "price": float("nan")}, "finite"),
    ("modify_order", {"intent_id": 1}, "needs a number 'price'"),
])
def test_leg_commands_when_payload_is_bad_then_clear_error_and_nothing_queued(db, kind, payload, msg):
    from db.commands import CommandError, enqueue_control
    from db.models import ControlCommand
    acct = account(db)
    make_run(db, acct, [dict(symbol=CE, action="SELL", qty=65, entry=100.0)])
    with pytest.raises(CommandError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        enqueue_control(db, kind, payload)
    with db.read() as s:
        assert s.scalars(select(ControlCommand)).all() == []
