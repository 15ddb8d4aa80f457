"""services/entry_convert.EntryConverter against a real SQLite file and the real simulator: which LIMIT entries it
converts (and which it leaves), exactly one modifyorder per entry, the alarm when a previous process stopped
between claiming a conversion and its answer, and an order that filled meanwhile noted without an alarm."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from db.models import Account, OrderEvent, OrderIntent, ServiceLog, StrategyRun, utcnow
from services.entry_convert import EntryConverter
from tests.service.fixtures_orders import (events, intent, make_strategy_run, octx, order_sim,  # noqa: F401
                                           placed_at_sim, sim_account)


class Alerts:
    def __init__(self):
        self.sent = []

    def alert(self, kind, message, subject=""):
        self.sent.append((kind, message))
        return True


def _working_limit(db, ctx, sim, after_s=2, sent_ago_s=5.0, price=900.0):
    """A strategy entry placed at the simulator as a resting LIMIT (BUY HDFCBANK below the market), recorded as
    the dispatcher records it: placed, with its broker order id and the time it was sent."""
    acct, name = sim_account(db, sim)
    sim.set_price("HDFCBANK", "NSE", 1000)
    _, [iid] = make_strategy_run(db, acct, [dict(symbol="HDFCBANK", action="BUY", qty=3, pricetype="LIMIT",
                                                 price=price)])
    oid = ctx.client(acct).placeorder(strategy="t", symbol="HDFCBANK", exchange="NSE", action="BUY", quantity=3,
                                      pricetype="LIMIT", product="MIS", price=price)
    with db.write() as s:
        s.execute(update(OrderIntent).where(OrderIntent.id == iid).values(
            status="placed", broker_order_id=oid, sent_at=utcnow() - timedelta(seconds=sent_ago_s),
            convert_after_s=after_s))
    return acct, name, iid, oid


def _errors(db) -> list[str]:
    with db.read() as s:
        return list(s.scalars(select(ServiceLog.message).where(ServiceLog.component == "entry_convert",
                                                               ServiceLog.level == "ERROR")))


def test_convert_when_due_then_one_modify_to_market_and_the_order_fills(db, octx, order_sim):
    acct, name, iid, oid = _working_limit(db, octx, order_sim)
    conv = EntryConverter(octx, Alerts())
    assert conv.run_once() == 1 and conv.run_once() == 0  # once: a second pass sends nothing
    assert intent(db, iid).convert_state == "converted"
    assert octx.client(acct).calls["modifyorder"] == 1
    [order] = placed_at_sim(order_sim, name)
    assert (order["orderid"], order["order_status"], order["pricetype"]) == (oid, "complete", "MARKET")
    assert [e[2] for e in events(db, iid)].count("entry_convert") == 2 and _errors(db) == []


def test_convert_when_not_yet_due_or_run_exiting_or_account_halted_then_left_alone(db, octx, order_sim):
    conv = EntryConverter(octx, Alerts())
    _, _, early, _ = _working_limit(db, octx, order_sim, after_s=30, sent_ago_s=5)
    _, _, exiting, _ = _working_limit(db, octx, order_sim)
    halted_acct, _, halted, _ = _working_limit(db, octx, order_sim)
    _, _, stays_limit, _ = _working_limit(db, octx, order_sim, after_s=None)
    with db.write() as s:
        s.execute(update(StrategyRun).where(StrategyRun.id == intent(db, exiting).run_id).values(status="exiting"))
        s.execute(update(Account).where(Account.id == halted_acct).values(trading_state="halted"))
    assert conv.run_once() == 0
    assert {intent(db, i).convert_state for i in (early, exiting, halted, stays_limit)} == {""}


def test_convert_when_a_previous_process_stopped_mid_modify_then_alarm_and_never_resent(db, octx, order_sim):
    acct, name, iid, _ = _working_limit(db, octx, order_sim)
    with db.write() as s:  # claimed by a service that was killed before modifyorder answered
        s.execute(update(OrderIntent).where(OrderIntent.id == iid).values(convert_state="modifying"))
    alerts = Alerts()
    assert EntryConverter(octx, alerts).run_once() == 0
    assert intent(db, iid).convert_state == "not_converted"
    assert octx.client(acct).calls.get("modifyorder", 0) == 0
    assert len(alerts.sent) == 1 and "outcome unknown" in alerts.sent[0][1]
    assert any("check it at the broker" in m for m in _errors(db))
    [order] = placed_at_sim(order_sim, name)
    assert order["order_status"] == "open"  # left as it is


def test_convert_when_the_order_filled_before_the_modify_then_noted_without_alarm(db, octx, order_sim):
    acct, name, iid, oid = _working_limit(db, octx, order_sim, price=1050.0)  # marketable: filled at once
    assert octx.client(acct).orderstatus(oid, "t")["order_status"] == "complete"
    alerts = Alerts()
    assert EntryConverter(octx, alerts).run_once() == 1
    row = intent(db, iid)
    assert row.convert_state == "not_converted" and alerts.sent == [] and _errors(db) == []
    with db.read() as s:
        last = s.scalars(select(OrderEvent.reason).where(OrderEvent.intent_id == iid)
                         .order_by(OrderEvent.id.desc())).first()
    assert "complete at the broker" in last
