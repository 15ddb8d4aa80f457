"""Positions & Orders row actions (AppTest against a real SQLite file): a position's row offers Square off behind
a confirmation and queues one square_off_position command whose result the message follows across refreshes; a
working LIMIT order's row offers Modify: a price off the tick, zero, or a quantity off the lot is an error with
nothing queued, a price outside the fat-finger band needs a second confirmation, beyond the cap it is refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import ui_builders as b
from db.commands import finish_control
from db.models import ControlCommand, LatestPrice, OrderIntent, utcnow
from db.vocab import CommandStatus

ROOT = Path(__file__).resolve().parents[2]


def orders_page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / "orders.py"), default_timeout=30).run()


def commands(db) -> list[tuple[str, dict]]:
    with db.read() as s:
        return [(c.kind, json.loads(c.payload_json)) for c in s.scalars(select(ControlCommand).order_by(ControlCommand.id))]


@pytest.fixture
def seeded(db):
    acct = b.seed_account(db, "alpha")
    b.seed_heartbeat(db, "runner")
    b.seed_instruments(db)
    b.seed_prices(db)
    b.seed_books(db, acct)  # RELIANCE NSE MIS +10
    with db.write() as s:  # a Quick Order LIMIT working at the broker, and RELIANCE's last price ticked now
        s.add(OrderIntent(client_order_id="lim1", account_id=acct, symbol="RELIANCE", exchange="NSE", action="BUY",
                          requested_qty=5, pricetype="LIMIT", limit_price=1480.0, product="MIS", status="placed",
                          broker_order_id="B-LIM-1", purpose="manual"))
        s.get(LatestPrice, ("RELIANCE", "NSE")).tick_ts = utcnow()
    with db.read() as s:
        lim = s.scalar(select(OrderIntent.id).where(OrderIntent.client_order_id == "lim1"))
    return dict(db=db, acct=acct, lim=lim)


def _select(at, key: str, row: int) -> None:
    at.session_state[key] = {"selection": {"rows": [row], "columns": []}}  # as a click on the row would
    at.run()


def test_position_row_when_squared_off_then_confirmation_one_command_and_its_result_kept(seeded):
    db, acct = seeded["db"], seeded["acct"]
    at = orders_page()
    _select(at, "orders.positions", 0)
    assert not at.exception, at.exception
    pid = f"{acct}.RELIANCE.NSE.MIS"
    assert at.button(key=f"orders.sqoff.{pid}").disabled  # nothing is sent before the confirmation
    at.checkbox(key=f"orders.sqoff_confirm.{pid}").check().run()
    at.button(key=f"orders.sqoff.{pid}").click().run()
    assert not at.exception, at.exception
    assert commands(db) == [("square_off_position", {"account_id": acct, "symbol": "RELIANCE", "exchange": "NSE",
                                                     "product": "MIS"})]
    assert any("Square-off requested for RELIANCE NSE MIS" in m.value for m in at.success)
    with db.write() as s:  # the service carried it out
        cid = s.scalar(select(func.max(ControlCommand.id)))
        finish_control(s, cid, CommandStatus.DONE, "RELIANCE NSE MIS: already flat at the broker; nothing sent")
    for _ in range(2):  # the auto-refresh reruns: the message stays, now with the command's result
        at.run()
        assert any("already flat at the broker" in m.value for m in at.success), [m.value for m in at.success]


def _modify(at, iid: int, price: float, qty: int | None = None) -> None:
    at.number_input(key=f"orders.modify_price.{iid}").set_value(price)
    if qty is not None:
        at.number_input(key=f"orders.modify_qty.{iid}").set_value(qty)
    at.checkbox(key=f"orders.modify_confirm.{iid}").check().run()
    at.button(key=f"orders.modify.{iid}").click().run()


def _intent_row(at, iid: int) -> int:
    [df] = [d.value for d in at.dataframe if "purpose" in d.value.columns and "requested_qty" in d.value.columns]
    return int(df.index[df["id"] == iid][0])


def test_working_limit_row_when_modified_then_bad_prices_are_errors_and_nothing_is_queued(seeded):
    db, lim = seeded["db"], seeded["lim"]
    at = orders_page()
    _select(at, "orders.intents", _intent_row(at, lim))
    assert at.button(key=f"orders.modify.{lim}").disabled  # behind a confirmation
    for price, qty, message in ((1480.03, None, "multiple of the tick size 0.05"),
                                (0.0, None, "price must be a positive amount"),
                                (9000.0, None, "Refused: LIMIT price ₹9,000.00"),
                                (1485.0, 0, "quantity must be a whole number")):
        _modify(at, lim, price, qty)
        assert not at.exception, at.exception
        assert any(message in e.value for e in at.error), (message, [e.value for e in at.error])
        assert commands(db) == []
    # outside the ±20 % band: held for a second confirmation that names the problem, then queued
    _modify(at, lim, 1850.0, 5)
    assert commands(db) == []
    assert any("23 % above the last price ₹1,500.00" in w.value for w in at.warning), [w.value for w in at.warning]
    at.checkbox(key=f"orders.modify_force.{lim}").check().run()
    at.button(key=f"orders.modify.{lim}").click().run()
    assert commands(db) == [("modify_order", {"intent_id": lim, "price": 1850.0})]
    # a Quick Order's quantity can change too
    _modify(at, lim, 1485.0, 8)
    assert commands(db)[-1] == ("modify_order", {"intent_id": lim, "price": 1485.0, "quantity": 8})
    assert any(f"Modify requested for order #{lim} to 1485 × 8" in m.value for m in at.success)
