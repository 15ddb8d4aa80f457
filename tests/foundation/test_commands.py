import pytest
from sqlalchemy import func, select

from db.commands import CommandError, OrderRequest, control_payload, enqueue_order
from db.intents import new_client_order_id
from db.models import OrderIntent
from tests.builders import make_account, symbol_date


def count(db):
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(OrderIntent))


@pytest.fixture
def acct(seeded_db):
    return make_account(seeded_db)


def nifty_ce(db):
    with db.read() as s:
        return s.scalar(select(OrderIntent.symbol).limit(0)) or _first_ce(s)


def _first_ce(s):
    from db.models import Instrument
    return s.scalar(select(Instrument.symbol).where(Instrument.instrumenttype == "CE").limit(1))


BAD = [
    (dict(quantity=-65), "greater than zero"),
    (dict(quantity=0), "greater than zero"),
    (dict(quantity=1.5), "whole number"),
    (dict(quantity="ten"), "must be a number"),
    (dict(quantity=float("nan")), "finite"),
    (dict(quantity=64), "multiple of the lot size 65"),
    (dict(pricetype="LIMIT", price=0), "need a price"),
    (dict(pricetype="SL", price=100, trigger_price=0), "need a trigger"),
    (dict(pricetype="SL-M"), "need a trigger"),
    (dict(pricetype="LIMIT", price=-5), "cannot be negative"),
    (dict(pricetype="LIMIT", price=100.03), "tick size"),
    (dict(symbol="NOPE24000CE"), "Unknown symbol"),
    (dict(symbol="X" * 200), "1-64 characters"),
    (dict(symbol="SBIN'; DROP TABLE order_intents;--"), "1-64 characters"),
    (dict(exchange="NASDAQ"), "Exchange must be"),
    (dict(action="HOLD"), "BUY or SELL"),
    (dict(pricetype="STOP"), "Price type"),
    (dict(product="XYZ"), "Product"),
    (dict(product="CNC"), "CNC is not allowed for derivatives"),
    (dict(account_id=999), "Unknown account"),
    (dict(account_id="1 OR 1=1"), "Unknown account"),
    (dict(strategy_tag="t" * 100), "Strategy tag"),
]


@pytest.mark.parametrize("override,msg", BAD)
def test_enqueue_when_input_is_bad_then_clear_error_and_nothing_written(seeded_db, acct, override, msg):
    fields = dict(account_id=acct, symbol=_sym(seeded_db), exchange="NFO", action="BUY", quantity=65,
                  product="NRML")
    fields.update(override)
    with pytest.raises(CommandError, match=msg):
        enqueue_order(seeded_db, OrderRequest(**fields), new_client_order_id())
    assert count(seeded_db) == 0


def test_nrml_on_equity_is_refused(seeded_db, acct):
    with pytest.raises(CommandError, match="NRML is not allowed"):
        enqueue_order(seeded_db, OrderRequest(acct, "SBIN", "NSE", "BUY", 1, product="NRML"), "c1")
    assert count(seeded_db) == 0


def _sym(db):
    with db.read() as s:
        return _first_ce(s)


def test_enqueue_when_same_client_id_twice_then_one_intent(seeded_db, acct):
    req = OrderRequest(acct, _sym(seeded_db), "NFO", "buy", "130", product="NRML")
    cid = new_client_order_id()
    first = enqueue_order(seeded_db, req, cid)
    second = enqueue_order(seeded_db, req, cid)
    assert first[1] is True and second == (first[0], False)
    assert count(seeded_db) == 1
    with seeded_db.read() as s:
        intent = s.get(OrderIntent, first[0])
    assert (intent.status, intent.action, intent.requested_qty, intent.limit_price) == ("queued", "BUY", 130, 0.0)


def test_market_order_drops_price_and_limit_keeps_it(seeded_db, acct):
    i1, _ = enqueue_order(seeded_db, OrderRequest(acct, "SBIN", "NSE", "SELL", 3, pricetype="MARKET", price=99), "a")
    i2, _ = enqueue_order(seeded_db, OrderRequest(acct, "SBIN", "NSE", "SELL", 3, pricetype="LIMIT", price=812.35), "b")
    with seeded_db.read() as s:
        assert s.get(OrderIntent, i1).limit_price == 0.0
        assert s.get(OrderIntent, i2).limit_price == 812.35


def test_symbol_date_helper_matches_openalgo_format():
    from datetime import datetime
    assert symbol_date(datetime(2024, 11, 28)) == "28NOV24"


def test_enqueue_when_qty_above_freeze_then_split_into_lot_multiple_slices_once(seeded_db, acct):
    req = OrderRequest(acct, _sym(seeded_db), "NFO", "SELL", 65 * 60, product="NRML")  # 3900 > freeze 1800
    cid = new_client_order_id()
    first = enqueue_order(seeded_db, req, cid)
    again = enqueue_order(seeded_db, req, cid)
    with seeded_db.read() as s:
        rows = s.scalars(select(OrderIntent).order_by(OrderIntent.id)).all()
    assert [r.requested_qty for r in rows] == [1755, 1755, 390]
    assert [r.client_order_id for r in rows] == [cid, f"{cid}.2", f"{cid}.3"]
    assert again == (first[0], False) and first == (rows[0].id, True)


@pytest.mark.parametrize("kind, key", [("exit_run", "run_id"), ("refresh_account", "account_id"),
                                       ("cancel_intent", "intent_id")])
@pytest.mark.parametrize("value", [2.9, 2.0, "2", True, False, None, 0, -2, [2], {"id": 2}])
def test_control_payload_when_id_is_not_a_positive_json_integer_then_refused(kind, key, value):
    with pytest.raises(CommandError, match=f"whole-number '{key}'"):
        control_payload(kind, {key: value})


def test_control_payload_when_valid_then_only_the_id_field_is_kept():
    assert control_payload("exit_run", {"run_id": 2, "reason": "x"}) == {"run_id": 2}
    assert control_payload("reload_accounts", {"anything": 1}) == {}


GOOD_POSITION = {"account_id": 3, "symbol": "sbin", "exchange": "nse", "product": "mis"}


@pytest.mark.parametrize("change, msg", [
    ({"account_id": 2.0}, "whole-number 'account_id'"), ({"account_id": None}, "whole-number 'account_id'"),
    ({"symbol": ""}, "symbol must be 1-64"), ({"symbol": "SB IN"}, "symbol must be 1-64"),
    ({"symbol": 5}, "symbol must be 1-64"), ({"exchange": "NASDAQ"}, "exchange must be one of"),
    ({"product": "BO"}, "product must be one of"), ({"product": None}, "product must be one of"),
])
def test_square_off_position_payload_when_bad_then_refused_naming_the_field(change, msg):
    with pytest.raises(CommandError, match=msg):
        control_payload("square_off_position", {**GOOD_POSITION, **change})


def test_square_off_position_payload_when_valid_then_normalised_and_nothing_else_kept():
    assert control_payload("square_off_position", {**GOOD_POSITION, "quantity": 10}) == {
        "account_id": 3, "symbol": "SBIN", "exchange": "NSE", "product": "MIS"}


@pytest.mark.parametrize("qty", [0, -5, 2.5, "5", True, 10_000_000])
def test_modify_order_payload_when_quantity_is_not_a_whole_number_in_range_then_refused(qty):
    with pytest.raises(CommandError, match="quantity must be a whole number"):
        control_payload("modify_order", {"intent_id": 1, "price": 10.0, "quantity": qty})
