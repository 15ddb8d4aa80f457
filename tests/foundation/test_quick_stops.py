"""Quick Order stop-loss / target: ticket validation (nothing written on bad input), persistence with the entry
intent, the level arithmetic, and the database rules of the exit (once, never a reversal, a book that must be
newer than our fills)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from db.commands import CommandError, OrderRequest, enqueue_order
from db.intents import new_client_order_id
from db.models import Account, Instrument, LatestPrice, OrderIntent, Position, QuickStop, RiskEvent, utcnow
from db.stop_levels import STOP_LOSS, TARGET, StopSpec, crossed, levels
from db.stops import arm_stop, book_available, cancel_account_stops, write_stop_exit
from db.vocab import StopStatus
from tests.builders import make_account


def count(db, model) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.fixture
def acct(seeded_db):
    with seeded_db.write() as s:  # SBIN last traded ₹800, just now
        s.merge(LatestPrice(symbol="SBIN", exchange="NSE", ltp=800.0, tick_ts=utcnow()))
    return make_account(seeded_db)


BAD = [
    ("BUY", StopSpec(sl_value=-5), "Stop-loss must be a positive number"),
    ("BUY", StopSpec(sl_value=0), "Stop-loss must be a positive number"),
    ("BUY", StopSpec(sl_value=float("nan")), "Stop-loss must be a finite number"),
    ("BUY", StopSpec(sl_value="ten"), "Stop-loss must be a number"),
    ("BUY", StopSpec(sl_mode="pct", sl_value=100), "Stop-loss of 100 % is out of range"),
    ("BUY", StopSpec(sl_mode="ticks", sl_value=5), "points or %"),
    ("BUY", StopSpec(sl_value=800), "would be at or below zero"),
    ("SELL", StopSpec(tp_mode="pct", tp_value=100), "Target of 100 % is out of range"),
    ("SELL", StopSpec(tp_value=900), "would be at or below zero"),
    ("BUY", StopSpec(sl_value=10, tp_value=-1), "Target must be a positive number"),
]


@pytest.mark.parametrize("action,spec,msg", BAD)
def test_enqueue_when_the_stop_is_bad_then_clear_error_and_neither_intent_nor_stop_written(
        seeded_db, acct, action, spec, msg):
    with pytest.raises(CommandError, match=msg):
        enqueue_order(seeded_db, OrderRequest(acct, "SBIN", "NSE", action, 10), new_client_order_id(), stops=spec)
    assert (count(seeded_db, OrderIntent), count(seeded_db, QuickStop)) == (0, 0)


def test_enqueue_when_a_stop_is_set_then_one_pending_stop_per_entry_intent_in_the_same_write(seeded_db, acct):
    with seeded_db.write() as s:
        s.get(Instrument, ("SBIN", "NSE")).freeze_qty = 6  # two slices: two intents, two stops
    coid = new_client_order_id()
    first, created = enqueue_order(seeded_db, OrderRequest(acct, "SBIN", "NSE", "BUY", 10), coid,
                                   stops=StopSpec(sl_value=10, tp_mode="pct", tp_value=2))
    assert created
    with seeded_db.read() as s:
        intents = list(s.scalars(select(OrderIntent).order_by(OrderIntent.id)))
        stops = list(s.scalars(select(QuickStop).order_by(QuickStop.id)))
    assert [i.requested_qty for i in intents] == [6, 4]
    assert [(st.entry_intent_id, st.client_order_id, st.quantity) for st in stops] == \
        [(intents[0].id, coid, 6), (intents[1].id, f"{coid}.2", 4)]
    assert {(st.status, st.side, st.sl_mode, st.sl_value, st.tp_mode, st.tp_value) for st in stops} == \
        {(StopStatus.PENDING, "BUY", "points", 10.0, "pct", 2.0)}
    # the same ticket again (double click): nothing more
    assert enqueue_order(seeded_db, OrderRequest(acct, "SBIN", "NSE", "BUY", 10), coid,
                         stops=StopSpec(sl_value=10)) == (first, False)
    assert count(seeded_db, QuickStop) == 2


def test_enqueue_when_no_stop_then_no_stop_row(seeded_db, acct):
    enqueue_order(seeded_db, OrderRequest(acct, "SBIN", "NSE", "BUY", 1), new_client_order_id(), stops=StopSpec())
    assert count(seeded_db, QuickStop) == 0


@pytest.mark.parametrize("side,spec,price,expected", [
    ("BUY", StopSpec(sl_value=10, tp_value=20), 800.0, (790.0, 820.0)),
    ("SELL", StopSpec(sl_value=10, tp_value=20), 800.0, (810.0, 780.0)),
    ("BUY", StopSpec(sl_mode="pct", sl_value=1, tp_mode="pct", tp_value=2), 800.0, (792.0, 816.0)),
    ("SELL", StopSpec(sl_mode="pct", sl_value=1), 800.0, (808.0, None)),
])
def test_levels_when_points_or_pct_then_below_for_a_longs_stop_and_a_shorts_target(side, spec, price, expected):
    assert levels(spec, side, price) == expected


def test_crossed_when_ltp_reaches_a_level_then_that_kind_stop_loss_first():
    assert crossed("BUY", 790, 820, 795) is None
    assert crossed("BUY", 790, 820, 790) == (STOP_LOSS, 790)
    assert crossed("BUY", 790, 820, 821) == (TARGET, 820)
    assert crossed("SELL", 810, 780, 811) == (STOP_LOSS, 810)
    assert crossed("SELL", 810, 780, 779.5) == (TARGET, 780)
    assert crossed("SELL", None, None, 1.0) is None


# ---- the service's rules, on the database ------------------------------------------------------------------------
def _filled_entry(db, acct, side="BUY", qty=10, avg=800.0, sl=10.0) -> int:
    """A Quick Order entry with a stop, filled at ``avg``, and the stop armed."""
    enqueue_order(db, OrderRequest(acct, "SBIN", "NSE", side, qty), new_client_order_id(),
                  stops=StopSpec(sl_value=sl))
    with db.write() as s:
        s.execute(update(OrderIntent).values(status="filled", broker_filled_qty=qty, broker_avg_price=avg,
                                             broker_order_id="B1", updated_at=utcnow()))
        stop_id = s.scalar(select(QuickStop.id))
        assert arm_stop(s, stop_id)
    return stop_id


def _book(db, acct, qty: int, synced_later: bool = True) -> None:
    with db.write() as s:
        p = s.scalar(select(Position).where(Position.account_id == acct)) or Position(
            account_id=acct, symbol="SBIN", exchange="NSE", product="MIS")
        p.quantity = qty
        s.add(p)
        s.get(Account, acct).positions_synced_at = utcnow() + timedelta(seconds=1 if synced_later else -60)


def test_arm_when_the_entry_filled_then_levels_from_the_average_fill_price_on_the_filled_quantity(seeded_db, acct):
    stop_id = _filled_entry(seeded_db, acct, qty=10, avg=801.5)
    with seeded_db.read() as s:
        st = s.get(QuickStop, stop_id)
    assert (st.status, st.quantity, st.entry_price, st.sl_level) == (StopStatus.ARMED, 10, 801.5, 791.5)


def test_book_when_read_before_our_fill_or_never_then_not_trusted(seeded_db, acct):
    _filled_entry(seeded_db, acct)
    with seeded_db.read() as s:
        assert book_available(s, acct, "SBIN", "NSE", "MIS", "BUY") is None  # never read
    _book(seeded_db, acct, 10, synced_later=False)
    with seeded_db.read() as s:
        assert book_available(s, acct, "SBIN", "NSE", "MIS", "BUY") is None  # read before the fill was recorded
    _book(seeded_db, acct, 10)
    with seeded_db.read() as s:
        assert book_available(s, acct, "SBIN", "NSE", "MIS", "BUY") == 10
        assert book_available(s, acct, "SBIN", "NSE", "MIS", "SELL") == -10


def test_write_stop_exit_when_hit_twice_then_one_exit_intent_and_one_risk_event(seeded_db, acct):
    stop_id = _filled_entry(seeded_db, acct)
    _book(seeded_db, acct, 10)
    with seeded_db.write() as s:
        act = write_stop_exit(s, stop_id, STOP_LOSS, 790.0, 789.0, "now")
    with seeded_db.write() as s:
        again = write_stop_exit(s, stop_id, STOP_LOSS, 790.0, 788.0, "now")
    assert (act.what, again.what) == ("exit", "gone")
    with seeded_db.read() as s:
        exits = list(s.scalars(select(OrderIntent).where(OrderIntent.purpose == "exit")))
        st = s.get(QuickStop, stop_id)
        events = list(s.scalars(select(RiskEvent).where(RiskEvent.event_type == STOP_LOSS)))
    assert [(e.action, e.requested_qty, e.pricetype, e.product, e.source) for e in exits] == \
        [("SELL", 10, "MARKET", "MIS", "stop")]
    assert (st.status, st.exit_intent_id) == (StopStatus.TRIGGERED, exits[0].id)
    assert len(events) == 1 and events[0].threshold == 790.0 and "SBIN" in events[0].message


def test_write_stop_exit_when_the_position_is_smaller_or_flat_then_closes_only_what_is_left_never_reverses(
        seeded_db, acct):
    stop_id = _filled_entry(seeded_db, acct)
    _book(seeded_db, acct, 4)  # 6 closed by hand
    with seeded_db.write() as s:
        assert write_stop_exit(s, stop_id, STOP_LOSS, 790.0, 789.0, "now").what == "exit"
        assert s.scalar(select(OrderIntent.requested_qty).where(OrderIntent.purpose == "exit")) == 4
    with seeded_db.write() as s:  # a second armed stop on a position that is flat now
        s.execute(update(QuickStop).values(status=StopStatus.ARMED.value))
        s.query(OrderIntent).filter(OrderIntent.purpose == "exit").update({"status": "filled", "updated_at":
                                                                            utcnow() - timedelta(seconds=5)})
    _book(seeded_db, acct, 0)
    with seeded_db.write() as s:
        act = write_stop_exit(s, stop_id, STOP_LOSS, 790.0, 789.0, "now")
    assert act.what == "closed"
    with seeded_db.read() as s:
        assert s.get(QuickStop, stop_id).status == StopStatus.CANCELLED
        assert s.scalar(select(func.count()).select_from(OrderIntent).where(OrderIntent.purpose == "exit")) == 1


def test_write_stop_exit_when_the_book_is_older_than_the_fill_then_hit_latched_and_nothing_written(seeded_db, acct):
    stop_id = _filled_entry(seeded_db, acct)
    _book(seeded_db, acct, 10, synced_later=False)
    with seeded_db.write() as s:
        assert write_stop_exit(s, stop_id, STOP_LOSS, 790.0, 789.0, "now").what == "unsettled"
    with seeded_db.read() as s:
        st = s.get(QuickStop, stop_id)
        assert (st.status, st.hit_kind, st.hit_price) == (StopStatus.ARMED, STOP_LOSS, 789.0)
        assert s.scalar(select(func.count()).select_from(OrderIntent).where(OrderIntent.purpose == "exit")) == 0


def test_cancel_account_stops_when_flattened_then_live_stops_cancelled_and_never_exit(seeded_db, acct):
    stop_id = _filled_entry(seeded_db, acct)
    _book(seeded_db, acct, 10)
    with seeded_db.write() as s:
        assert cancel_account_stops(s, acct, "flatten #1") == 1
        assert write_stop_exit(s, stop_id, STOP_LOSS, 790.0, 789.0, "now").what == "gone"
    with seeded_db.read() as s:
        assert s.get(QuickStop, stop_id).status_reason == "flatten #1"


def test_cancel_account_stops_when_a_square_off_of_one_product_then_only_that_products_stops_cancelled(
        seeded_db, acct):
    for product in ("MIS", "CNC"):
        enqueue_order(seeded_db, OrderRequest(acct, "SBIN", "NSE", "BUY", 10, product=product), new_client_order_id(),
                      stops=StopSpec(sl_value=10))
    with seeded_db.write() as s:
        assert cancel_account_stops(s, acct, "square-off MIS 2026-12-01", "MIS") == 1
    with seeded_db.read() as s:
        got = {st.product: (st.status, st.status_reason) for st in s.scalars(select(QuickStop))}
    assert got == {"MIS": (StopStatus.CANCELLED, "square-off MIS 2026-12-01"), "CNC": (StopStatus.PENDING, "")}
