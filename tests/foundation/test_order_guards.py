"""Fat-finger guards on order entry (db/order_guards.py through db.commands.enqueue_order): an unusual order needs a
second confirmation that names the problem, one beyond the hard caps is refused; nothing is written until then."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from config import OrderGuardSettings
from db.commands import CommandError, NeedsConfirmation, OrderRequest, enqueue_order
from db.intents import new_client_order_id
from db.models import Instrument, LatestPrice, OrderIntent, utcnow
from tests.builders import make_account



@pytest.fixture
def book(seeded_db):
    """An option at ₹378 (lot 65) and SBIN at ₹800, both freshly ticked."""
    with seeded_db.read() as s:
        opt = s.scalar(select(Instrument.symbol).where(Instrument.instrumenttype == "CE").limit(1))
    with seeded_db.write() as s:
        s.merge(LatestPrice(symbol=opt, exchange="NFO", ltp=378.0, tick_ts=utcnow()))
        s.merge(LatestPrice(symbol="SBIN", exchange="NSE", ltp=800.0, tick_ts=utcnow()))
    return dict(db=seeded_db, acct=make_account(seeded_db), opt=opt)


def _order(book, **kw):
    base = dict(account_id=book["acct"], symbol=book["opt"], exchange="NFO", action="BUY", quantity=65,
                pricetype="LIMIT", price=380.0, product="NRML")
    return OrderRequest(**{**base, **kw})


def _intents(db) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(OrderIntent))


def test_limit_price_when_absurd_then_refused_even_if_confirmed(book):
    with pytest.raises(CommandError, match=r"Refused: LIMIT price ₹99,999,999.00 is .* above the last price "
                                           r"₹378.00 \(beyond 3x"):
        enqueue_order(book["db"], _order(book, price=99_999_999.0), new_client_order_id(), confirmed=True)
    assert _intents(book["db"]) == 0


def test_limit_price_when_outside_the_band_then_needs_confirmation_naming_it_then_written(book):
    cid = new_client_order_id()
    with pytest.raises(NeedsConfirmation) as err:
        enqueue_order(book["db"], _order(book, price=460.0), cid)
    assert err.value.problems == ["LIMIT price ₹460.00 is 22 % above the last price ₹378.00 (band ±20 %)"]
    assert _intents(book["db"]) == 0
    iid, created = enqueue_order(book["db"], _order(book, price=460.0), cid, confirmed=True)
    assert created and _intents(book["db"]) == 1


def test_limit_price_when_inside_the_band_then_written_without_confirmation(book):
    enqueue_order(book["db"], _order(book, price=400.0, action="SELL"), new_client_order_id())
    assert _intents(book["db"]) == 1


@pytest.mark.parametrize("lots, kind, text", [(101, NeedsConfirmation, "101 lots (more than 100)"),
                                              (1001, CommandError, "Refused: 1001 lots (the cap is 1000)")])
def test_lots_when_above_the_limits_then_confirm_or_refuse(book, lots, kind, text):
    guards = OrderGuardSettings(confirm_notional=1e12, max_notional=1e12)
    with pytest.raises(kind, match=text.replace("(", r"\(").replace(")", r"\)")):
        enqueue_order(book["db"], _order(book, quantity=65 * lots, pricetype="MARKET", price=0),
                      new_client_order_id(), guards=guards)
    assert _intents(book["db"]) == 0


def test_notional_when_above_the_limits_then_confirm_or_refuse(book):
    with pytest.raises(NeedsConfirmation, match=r"notional ₹1,600,000.00 \(more than ₹1,000,000.00\)"):
        enqueue_order(book["db"], _order(book, symbol="SBIN", exchange="NSE", product="MIS", quantity=2000,
                                         pricetype="MARKET", price=0), new_client_order_id())
    with pytest.raises(CommandError, match=r"Refused: notional ₹16,000,000.00"):
        enqueue_order(book["db"], _order(book, symbol="SBIN", exchange="NSE", product="MIS", quantity=20000,
                                         pricetype="MARKET", price=0), new_client_order_id(), confirmed=True)
    assert _intents(book["db"]) == 0


def test_limit_price_when_no_recent_price_then_band_unchecked_but_the_notional_cap_still_refuses(book):
    with book["db"].write() as s:
        p = s.get(LatestPrice, (book["opt"], "NFO"))
        p.tick_ts = utcnow() - timedelta(minutes=10)
    enqueue_order(book["db"], _order(book, price=460.0), new_client_order_id())  # no price to compare with
    with pytest.raises(CommandError, match=r"Refused: notional ₹6,499,999,935.00"):
        enqueue_order(book["db"], _order(book, price=99_999_999.0), new_client_order_id(), confirmed=True)
    assert _intents(book["db"]) == 1
