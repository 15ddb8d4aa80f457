"""AppTest: the Quick Order ticket's optional stop-loss / target (validated, previewed with levels from the LTP,
written with the entry intent) and the Positions page's stop table and cancel control."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import ui_builders as b
from db.models import ControlCommand, OrderIntent, QuickStop
from db.vocab import StopStatus

ROOT = Path(__file__).resolve().parents[2]


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=30)


def count(db, model) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.fixture
def ticket(db):
    b.seed_account(db, "alpha")
    b.seed_heartbeat(db, "market_data", details={"connected": True})
    b.seed_instruments(db)
    b.seed_prices(db)  # RELIANCE last traded ₹1,500
    at = page("quick_order")
    at.session_state["quick.prefill"] = dict(symbol="RELIANCE", exchange="NSE", action="BUY", quantity=2)
    return at.run()


@pytest.mark.parametrize("field,mode,value,msg", [
    ("sl", "pct", 100.0, "Stop-loss of 100 % is out of range"),
    ("sl", "points", -5.0, "Stop-loss must be a positive number"),
    ("sl", "points", 1500.0, "would be at or below zero"),
    ("tp", "points", 0.0, "Target must be a positive number"),
])
def test_ticket_when_the_stop_is_bad_then_error_and_nothing_written(db, ticket, field, mode, value, msg):
    at = ticket
    at.radio(key=f"quick.{field}_mode").set_value(mode)
    at.number_input(key=f"quick.{field}_value").set_value(value)
    at.button(key="quick.preview").click().run()
    assert not at.exception, at.exception
    assert any(msg in e.value for e in at.error), [e.value for e in at.error]
    assert "quick.pending" not in at.session_state
    assert (count(db, OrderIntent), count(db, QuickStop)) == (0, 0)


def test_ticket_when_stop_and_target_set_then_levels_previewed_and_written_with_the_entry(db, ticket):
    at = ticket
    at.number_input(key="quick.sl_value").set_value(10.0)
    at.radio(key="quick.tp_mode").set_value("pct")
    at.number_input(key="quick.tp_value").set_value(2.0)
    at.button(key="quick.preview").click().run()
    assert not at.error, [e.value for e in at.error]
    line = " ".join(m.value for m in at.markdown)
    assert "Stop-loss 10 pts → **₹1,490.00**" in line and "Target 2 % → **₹1,530.00**" in line, line
    assert count(db, QuickStop) == 0  # a preview writes nothing
    at.button(key="quick.submit").click().run()
    with db.read() as s:
        [intent] = list(s.scalars(select(OrderIntent)))
        [stop] = list(s.scalars(select(QuickStop)))
    assert (stop.entry_intent_id, stop.status, stop.side, stop.quantity) == (intent.id, StopStatus.PENDING, "BUY", 2)
    assert (stop.sl_mode, stop.sl_value, stop.tp_mode, stop.tp_value) == ("points", 10.0, "pct", 2.0)


def test_positions_page_when_a_stop_is_listed_then_shown_and_cancel_queues_one_command(db, ticket):
    at = ticket
    at.number_input(key="quick.sl_value").set_value(10.0)
    at.button(key="quick.preview").click().run()
    at.button(key="quick.submit").click().run()
    with db.read() as s:
        stop_id = s.scalar(select(QuickStop.id))
    at = page("orders").run()
    assert not at.exception, at.exception
    shown = [df.value for df in at.dataframe if "stop_loss" in df.value.columns]
    assert shown and shown[0]["stop_loss"].tolist() == ["10 pts"] and shown[0]["status"].tolist() == ["pending"]
    at.number_input(key="orders.stop_cancel_id").set_value(stop_id)
    at.button(key="orders.stop_cancel").click().run()
    with db.read() as s:
        cmds = [(c.kind, c.payload_json) for c in s.scalars(select(ControlCommand))]
    assert cmds == [("cancel_stop", f'{{"stop_id": {stop_id}}}')]
