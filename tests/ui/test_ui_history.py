"""History, Order Journal and the login gate through AppTest, and a sweep of every page of app.py over three
databases (empty, a full day, a full day whose service is down): real SQLite files seeded by builders."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from streamlit import config as stconfig
from streamlit.testing.v1 import AppTest

import ui_builders as b
from db.models import ControlCommand, OrderIntent
from ui.auth import hash_password
from ui.widgets import SERVICE_DOWN

ROOT = Path(__file__).resolve().parents[2]
# every page app.py registers (a new page joins the sweep without editing this file)
APP_PAGES = re.findall(r'st\.Page\("pages/(\w+)\.py"', (ROOT / "app.py").read_text())
PASSWORD = "correct horse battery"


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=30)


def texts(at) -> str:
    return "\n".join([m.value for m in at.markdown] + [e.value for e in at.error] + [c.value for c in at.caption]
                     + [i.value for i in at.info] + [t.value for t in at.title])


def full_day(db) -> dict:
    """Two accounts, live heartbeat, chain, prices, books, intents, a run with its entry/exit story, P&L and ten
    days of summaries."""
    a1, a2 = b.seed_account(db, "alpha"), b.seed_account(db, "beta")
    b.seed_heartbeat(db, "market_data", details={"connected": True})
    expiry = b.seed_instruments(db)
    b.seed_prices(db, expiry=expiry)
    b.seed_books(db, a1)
    b.seed_intents(db, [a1, a2], 20)
    run = b.seed_run(db, a1, expiry=expiry, status="exited")
    entry, exit_ = b.seed_exit_story(db, run, a1)
    b.seed_pnl(db, [a1, a2], 120)
    b.seed_log(db)
    days = b.seed_day_summaries(db, [a1, a2])
    return dict(accounts=[a1, a2], run=run, entry=entry, exit=exit_, days=days)


def test_sweep_lists_every_page_of_the_app():
    assert {"history", "journal", "dashboard", "settings", "api_access"} <= set(APP_PAGES) and len(APP_PAGES) == 12


@pytest.mark.parametrize("state", ["empty", "full_day", "service_down"])
@pytest.mark.parametrize("name", APP_PAGES)
def test_every_page_when_rendered_on_each_database_then_no_exception(db, name, state):
    if state != "empty":
        full_day(db)
    if state == "service_down":
        b.seed_heartbeat(db, "market_data", age_s=3600)
    at = page(name).run()
    assert not at.exception, at.exception
    banner = any(SERVICE_DOWN in e.value for e in at.error)
    assert banner == (state != "full_day")


# ---- History ------------------------------------------------------------------------------------------------------
def test_history_when_ten_days_summarised_then_net_best_worst_drawdown_and_strategy_breakdown(db):
    seeded = full_day(db)
    at = page("history")
    at.session_state["history.account_id"] = seeded["accounts"][0]
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    # alpha: days 0..9 = -600, 1000, 5000, 1000, -600, 1000, -600, 1000, -600, 1000
    assert metrics["Net P&L"] == "+₹7,600.00"
    assert metrics["Best day"] == "+₹5,000.00" and metrics["Worst day"] == "-₹600.00"
    assert metrics["Winning days"] == "60 %"
    assert metrics["Max drawdown"] == "-₹600.00"
    breakdown = at.dataframe[0].value
    assert list(breakdown["strategy"]) == ["Iron", "Straddle"] and breakdown["days"].tolist() == [10, 10]
    assert len(at.get("download_button")) == 3


def test_history_when_no_summaries_then_says_so_and_still_offers_exports(db):
    b.seed_account(db, "alpha")
    at = page("history").run()
    assert not at.exception
    assert "No day summaries in these days yet." in texts(at)
    assert {m.label: m.value for m in at.metric}["Net P&L"] == "₹0.00"


def test_history_when_summarise_clicked_then_one_summarise_day_command(db):
    full_day(db)
    at = page("history").run()
    at.button(key="history.summarise").click().run()
    assert not at.exception
    with db.read() as s:
        cmds = list(s.scalars(select(ControlCommand)))
    assert [(c.kind, c.payload_json) for c in cmds] == [("summarise_day", "{}")]
    assert any("Summary requested" in s.value for s in at.success)


def test_exports_when_days_chosen_then_orders_and_trades_of_those_days_in_ist(db):
    from db.history import orders_between, trades_between
    from db.models import BrokerTrade
    from ui.history import csv_bytes
    seeded = full_day(db)
    a1 = seeded["accounts"][0]
    with db.write() as s:
        s.add(BrokerTrade(account_id=a1, trade_key="old", broker_order_id="O1", symbol="SBIN", exchange="NSE",
                          action="BUY", quantity=1, average_price=1.0, broker_timestamp="2020-01-02 10:00:00"))
        s.add(BrokerTrade(account_id=a1, trade_key="new", broker_order_id="O2", symbol="SBIN", exchange="NSE",
                          action="BUY", quantity=1, average_price=1.0, broker_timestamp="2020-01-03 10:00:00"))
        s.get(OrderIntent, seeded["entry"]).created_at = pd.Timestamp("2020-01-02 20:00:00").to_pydatetime()  # 01:30 IST 3 Jan
    day = pd.Timestamp("2020-01-03").date()
    orders = orders_between(db, day, day)
    assert orders["id"].tolist() == [seeded["entry"]]
    assert trades_between(db, day, day)["broker_order_id"].tolist() == ["O2"]
    csv = csv_bytes(orders).decode("utf-8-sig").splitlines()
    assert csv[0].split(",")[:2] == ["id", "created_at_ist"] and "2020-01-03 01:30:00" in csv[1]


# ---- Order Journal ------------------------------------------------------------------------------------------------
def test_journal_when_a_run_exited_by_max_loss_then_why_and_prices_and_timeline_in_order(db):
    seeded = full_day(db)
    at = page("journal")
    at.session_state["journal.run_id"] = seeded["run"]
    at.run()
    assert not at.exception
    assert any("Why it exited:** max_loss" in m.value and "-₹1,040.00" in m.value for m in at.markdown)
    decided = at.dataframe[0].value
    assert decided.iloc[0]["symbol"] == "NIFTY26000CE" and decided.iloc[0]["valued_at"] == 116.0
    assert decided.iloc[0]["leg_pnl"] == pytest.approx(-1040.0)
    timeline = at.dataframe[1].value
    whats = timeline["what"].tolist()
    assert whats[:4] == ["queued → claimed (dispatcher)", "claimed → sent (dispatcher)",
                         "sent → placed (dispatcher)", "placed → filled (poller)"]
    assert whats[4].startswith("risk: max_loss") and whats[5] == "queued → claimed (dispatcher)"
    assert len(whats) == 10 and whats[9].startswith("risk: trailing_sl")  # seed_run's own event, newest


def test_journal_when_one_order_looked_at_then_its_own_events_and_the_risk_event_that_wrote_it(db):
    seeded = full_day(db)
    at = page("journal")
    at.session_state["journal.mode"] = "Order"
    at.session_state["journal.intent_id"] = seeded["exit"]
    at.run()
    assert not at.exception
    timeline = at.dataframe[-1].value
    assert len(timeline) == 5 and timeline["what"].iloc[0].startswith("risk: max_loss")
    at.session_state["journal.intent_id"] = seeded["entry"]
    at.run()
    assert len(at.dataframe[-1].value) == 4  # the entry was not written by a risk event


def test_journal_when_no_runs_then_says_so(db):
    b.seed_account(db, "alpha")
    at = page("journal").run()
    assert not at.exception and "No strategy runs yet." in texts(at)


# ---- login --------------------------------------------------------------------------------------------------------
@pytest.fixture
def password(monkeypatch, db):
    monkeypatch.setenv("APP__UI__PASSWORD_HASH", hash_password(PASSWORD))
    b.seed_account(db, "alpha")
    b.seed_heartbeat(db)


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)


def _login(at, pw):
    at.text_input(key="auth.password").input(pw)
    at.button[0].click()
    return at.run()


def test_app_when_password_configured_then_login_before_any_page_and_wrong_password_refused(password):
    at = app().run()
    assert not at.exception
    assert [t.value for t in at.title] == [":material/lock: AlgoMirror"]  # no page title: nothing else rendered
    _login(at, "wrong password")
    assert "Wrong password." in [e.value for e in at.error]
    assert "auth.at" not in at.session_state
    _login(at, PASSWORD)
    assert not at.exception
    assert any("Dashboard" in t.value for t in at.title)
    at.button(key="auth.logout").click().run()
    assert [t.value for t in at.title] == [":material/lock: AlgoMirror"] and "auth.at" not in at.session_state


def test_app_when_login_older_than_the_timeout_then_asks_again(password, monkeypatch):
    monkeypatch.setenv("APP__UI__SESSION_TIMEOUT_MIN", "5")
    import time
    at = app()  # a fresh session per login age (a second run() of one AppTest reran only its live fragment)
    at.session_state["auth.at"] = time.time() - 4 * 60
    at.run()
    assert any("Dashboard" in t.value for t in at.title)
    at = app()
    at.session_state["auth.at"] = time.time() - 6 * 60
    at.run()
    assert [t.value for t in at.title] == [":material/lock: AlgoMirror"]
    assert "Your session timed out: log in again." in [i.value for i in at.info]


def test_app_when_no_password_then_no_login_on_loopback(db):
    b.seed_account(db, "alpha")
    at = app().run()
    assert not at.exception and any("Dashboard" in t.value for t in at.title)


def test_app_when_bound_off_loopback_without_password_then_refuses_every_page(db):
    b.seed_account(db, "alpha")
    before = stconfig.get_option("server.address")
    stconfig.set_option("server.address", "0.0.0.0")
    try:
        at = app().run()
    finally:
        stconfig.set_option("server.address", before)
    assert any("bound to 0.0.0.0 without a password" in e.value for e in at.error)
    assert not any("Dashboard" in t.value for t in at.title)


def test_app_when_hash_setting_holds_a_plain_password_then_fails_closed(monkeypatch, db):
    monkeypatch.setenv("APP__UI__PASSWORD_HASH", PASSWORD)
    b.seed_account(db, "alpha")
    at = app().run()
    assert any("is not an argon2 hash" in e.value for e in at.error)
    assert not any("Dashboard" in t.value for t in at.title) and not at.text_input


def test_timeline_when_two_events_share_a_time_then_their_written_order_is_kept():
    from ui.journal import timeline
    ts = pd.Timestamp("2026-12-02 04:00:00")
    events = pd.DataFrame([dict(ts_utc=ts, intent_id=1, purpose="exit", symbol="X", action="BUY", requested_qty=1,
                                from_status=f, to_status=t, source="dispatcher", reason="", broker_order_id=None,
                                client_order_id="c") for f, t in (("queued", "claimed"), ("claimed", "sent"))])
    assert timeline(events, [])["what"].tolist() == ["queued → claimed (dispatcher)", "claimed → sent (dispatcher)"]
    assert timeline(events.iloc[0:0], []).empty
