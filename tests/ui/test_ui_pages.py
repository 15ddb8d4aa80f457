"""AppTest smoke and behaviour tests for every page, against a real SQLite file seeded by builders."""
from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import ui_builders as b
from db.models import Account, ControlCommand, Instrument, LatestPrice, OptionChainSession, OrderIntent, utcnow
from ui.widgets import SERVICE_DOWN

ROOT = Path(__file__).resolve().parents[2]

PAGES = ["dashboard", "accounts", "orders", "option_chain", "strategies", "quick_order", "risk", "health", "settings",
         "api_access"]


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=30)


def count(db, model, *where) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def errors(at) -> list[str]:
    return [e.value for e in at.error]


@pytest.fixture
def seeded(db):
    """Two accounts, a live heartbeat, a NIFTY chain with prices, books, intents, a run and P&L."""
    a1, a2 = b.seed_account(db, "alpha"), b.seed_account(db, "beta")
    b.seed_heartbeat(db, "market_data", details={"connected": True, "account": "alpha", "subscriptions": 42,
                                                 "last_tick_age_s": 0.4, "reconnects": 1})
    expiry = b.seed_instruments(db)
    b.seed_prices(db, expiry=expiry)
    b.seed_books(db, a1)
    b.seed_intents(db, [a1, a2], 20)
    run = b.seed_run(db, a1, expiry=expiry)
    b.seed_pnl(db, [a1, a2], 300)
    b.seed_pnl(db, [a1], 300, run_id=run)
    b.seed_log(db)
    return dict(db=db, accounts=[a1, a2], expiry=expiry, run=run)


@pytest.mark.parametrize("name", PAGES)
def test_render_when_seeded_then_no_exception_and_no_banner(seeded, name):
    at = page(name).run()
    assert not at.exception, at.exception
    assert not any(SERVICE_DOWN in e for e in errors(at))


@pytest.mark.parametrize("name", PAGES)
def test_render_when_no_heartbeat_then_service_down_banner(db, name):
    b.seed_account(db, "alpha")
    at = page(name).run()
    assert not at.exception, at.exception
    assert any(SERVICE_DOWN in e for e in errors(at))


def test_render_when_heartbeat_stale_then_banner_and_order_entry_disabled(seeded):
    b.seed_heartbeat(seeded["db"], "market_data", age_s=3600)
    at = page("quick_order")
    at.session_state["quick.prefill"] = dict(symbol="RELIANCE", exchange="NSE", action="BUY", quantity=1)
    at.run()
    assert any(SERVICE_DOWN in e for e in errors(at))
    assert at.button(key="quick.preview").disabled


def _order_page(symbol="RELIANCE", exchange="NSE", quantity=1) -> AppTest:
    at = page("quick_order")
    at.session_state["quick.prefill"] = dict(symbol=symbol, exchange=exchange, action="BUY", quantity=quantity)
    return at.run()


def test_submit_when_clicked_twice_with_same_client_order_id_then_one_intent(seeded):
    db = seeded["db"]
    before = count(db, OrderIntent)
    at = _order_page()
    at.button(key="quick.preview").click().run()
    assert not errors(at), errors(at)
    pending = dict(at.session_state["quick.pending"])
    coid = pending["coid"]
    at.button(key="quick.submit").click().run()
    assert count(db, OrderIntent) == before + 1
    assert count(db, OrderIntent, OrderIntent.client_order_id == coid) == 1
    assert at.session_state["quick.coid"] != coid  # a fresh id for the next order
    assert any("Last order #" in m.value for m in at.markdown)  # live status from the DB
    assert "quick.pending" not in at.session_state
    # a second click racing in with the same id (the preview still showing on the client)
    at.session_state["quick.pending"] = pending
    at.run()
    at.button(key="quick.submit").click().run()
    assert count(db, OrderIntent) == before + 1
    assert any("Already submitted" in i.value for i in at.info)


def test_submit_when_quantity_not_lot_multiple_then_error_and_nothing_written(seeded):
    db = seeded["db"]
    sym = b.option_symbol("NIFTY", seeded["expiry"], 26000, "CE")
    at = _order_page(sym, "NFO", quantity=100)
    before = count(db, OrderIntent)
    at.button(key="quick.preview").click().run()
    assert any("multiple of the lot size 65" in e for e in errors(at)), errors(at)
    assert "quick.pending" not in at.session_state
    assert count(db, OrderIntent) == before


def test_submit_when_limit_without_price_then_error_and_nothing_written(seeded):
    db = seeded["db"]
    at = _order_page()
    at.selectbox(key="quick.pricetype").select("LIMIT")
    at.button(key="quick.preview").click().run()
    assert any("LIMIT orders need a price" in e for e in errors(at)), errors(at)
    assert count(db, OrderIntent) == 20


def test_option_chain_when_rendered_then_session_requested_and_atm_highlighted(seeded):
    db = seeded["db"]
    at = page("option_chain").run()
    assert not at.exception
    with db.read() as s:
        rows = s.scalars(select(OptionChainSession)).all()
    assert len(rows) == 1 and rows[0].underlying == "NIFTY" and rows[0].status == "requested"
    assert rows[0].exchange == "NSE_INDEX" and rows[0].expiry == seeded["expiry"]
    assert at.session_state["chain.atm"] == 26000.0
    assert [m.value for m in at.metric if m.label == "ATM strike"] == ["26,000"]
    grid = at.dataframe[0].value  # the chain grid is the first table
    assert grid["CE IV %"].notna().sum() > 10  # IV solved from seeded Black-Scholes prices (14 %)
    assert abs(grid.loc[grid["Strike"] == 26000.0, "CE IV %"].iloc[0] - 14.0) < 0.1
    atm_row = grid[grid["Strike"] == 26000.0].iloc[0]
    assert 0.45 < atm_row["CE Δ"] < 0.6 and -0.55 < atm_row["PE Δ"] < -0.4 and atm_row["CE Θ/day"] < 0
    assert atm_row["CE Vol"] == 500.0
    with db.write() as s:  # the service saw 800 as the day's first OI of that call; it is 1000 now
        s.get(LatestPrice, (b.option_symbol("NIFTY", seeded["expiry"], 26000, "CE"), "NFO")).oi_base = 800.0
    at.run()
    grid = at.dataframe[0].value
    assert grid.loc[grid["Strike"] == 26000.0, "CE OI chg"].iloc[0] == 200.0
    at.run()  # rerun: same session, no new row
    assert count(db, OptionChainSession) == 1


def test_option_chain_when_buy_clicked_then_quick_order_prefilled(seeded):
    at = page("option_chain").run()
    at.button(key="chain.buy").click().run()
    pre = at.session_state["quick.prefill"]
    assert pre["symbol"] == b.option_symbol("NIFTY", seeded["expiry"], 26000, "CE")
    assert pre["action"] == "BUY" and pre["quantity"] == 65


def test_accounts_when_added_then_key_not_shown_and_delete_refused_with_orders(db):
    b.seed_heartbeat(db)
    at = page("accounts").run()
    at.text_input(key="accounts.add.name").input("gamma")
    at.text_input(key="accounts.add.host").input("http://127.0.0.1:5999")
    at.text_input(key="accounts.add.ws").input("ws://127.0.0.1:8765")
    at.text_input(key="accounts.add.key").input(b.API_KEY)
    at.button(key="accounts.add.submit").click().run()
    assert not errors(at), errors(at)
    assert count(db, Account) == 1
    assert count(db, ControlCommand, ControlCommand.kind == "reload_accounts") == 1
    rendered = str([e for e in at.main])
    assert b.API_KEY not in rendered and b.API_KEY[-4:] + "'" not in rendered
    b.seed_intents(db, [1], 1)
    at.run()
    at.checkbox(key="accounts.delete.confirm").check().run()
    at.button(key="accounts.delete").click().run()
    assert any("deactivate it instead" in e for e in errors(at))
    assert count(db, Account) == 1


def test_accounts_when_invalid_url_then_error_and_nothing_written(db):
    at = page("accounts").run()
    at.text_input(key="accounts.add.name").input("gamma")
    at.text_input(key="accounts.add.host").input("ftp://nope")
    at.text_input(key="accounts.add.ws").input("ws://127.0.0.1:8765")
    at.text_input(key="accounts.add.key").input(b.API_KEY)
    at.button(key="accounts.add.submit").click().run()
    assert any("Host URL must look like" in e for e in errors(at))
    assert count(db, Account) == 0


def test_accounts_when_test_connection_unreachable_then_status_saved(db):
    b.seed_account(db, "alpha")  # http://127.0.0.1:5000, nothing listening in tests
    at = page("accounts").run()
    at.button(key="accounts.test").click().run()
    with db.read() as s:
        assert s.get(Account, 1).status in ("unreachable", "invalid_key")
    assert errors(at)


def test_risk_when_exit_now_then_exit_run_command_queued(seeded):
    db = seeded["db"]
    at = page("risk").run()
    at.checkbox(key="risk.exit_confirm").check().run()
    at.button(key="risk.exit").click().run()
    with db.read() as s:
        cmd = s.scalars(select(ControlCommand).where(ControlCommand.kind == "exit_run")).one()
    assert f'"run_id": {seeded["run"]}' in cmd.payload_json


def test_orders_when_refresh_clicked_then_one_command_per_account(seeded):
    at = page("orders").run()
    at.button(key="orders.refresh").click().run()
    assert count(seeded["db"], ControlCommand, ControlCommand.kind == "refresh_account") == 2


def test_health_when_market_data_heartbeat_then_feed_details_shown(seeded):
    at = page("health").run()
    values = {m.label: m.value for m in at.metric}
    assert values["Feed"] == "connected" and values["Subscriptions"] == "42"


def test_dashboard_when_large_day_then_renders_every_account_downsampled(db):
    ids = [b.seed_account(db, f"acct{i}") for i in range(10)]
    b.seed_heartbeat(db)
    b.seed_pnl(db, ids, 22_000, start=None)
    b.seed_intents(db, ids, 2000)
    for a in ids[:3]:
        b.seed_run(db, a)
    at = page("dashboard").run()  # warm imports
    assert not at.exception, at.exception
    import streamlit as st
    st.cache_data.clear()
    at = page("dashboard").run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert labels[:3] == ["NIFTY", "BANKNIFTY", "SENSEX"]  # the watchlist tiles come first
    assert labels[3:5] == ["Total P&L", "acct0"]
    charts = at.get("plotly_chart")  # P&L lines, strategy bars, margin, and ONE risk-distance chart for 3 runs
    assert len(charts) == 4
    risk = json.loads(charts[3].proto.spec)
    assert [t.get("name") for t in risk["data"]][2:] == ["P&L", "Trailing stop"] and len(risk["data"][2]["y"]) == 3
    from datetime import timedelta

    from db import repo
    from db.models import utcnow
    since = utcnow() - timedelta(hours=7)  # the whole seeded day, whatever the time of day now
    df = repo.pnl_accounts(db, since, repo.bucket_for(since))
    assert df["account"].nunique() == 10 and len(df) <= 10 * 721  # timing: bench/bench_dashboard.py


@pytest.fixture
def openalgo_stub():
    """A local HTTP server answering /api/v1/ping like OpenAlgo (pong for API_KEY, 403 otherwise)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            ok = self.path == "/api/v1/ping" and body.get("apikey") == b.API_KEY
            reply = ({"data": {"broker": "zerodha", "message": "pong"}, "status": "success"} if ok
                     else {"message": "Invalid openalgo apikey", "status": "error"})
            data = json.dumps(reply).encode()
            self.send_response(200 if ok else 403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_accounts_when_test_connection_ok_then_broker_shown_and_saved(db, openalgo_stub):
    from db.accounts import add_account
    add_account(db, "alpha", openalgo_stub, "ws://127.0.0.1:8765", b.API_KEY)
    add_account(db, "beta", openalgo_stub, "ws://127.0.0.1:8765", "wrongkey" * 4)
    at = page("accounts").run()
    at.button(key="accounts.test").click().run()
    assert any("broker zerodha" in s.value for s in at.success), [s.value for s in at.success]
    at.selectbox(key="accounts.edit.id").select(2).run()
    at.button(key="accounts.test").click().run()
    assert any("Invalid openalgo apikey" in e for e in errors(at)), errors(at)
    with db.read() as s:
        assert (s.get(Account, 1).status, s.get(Account, 1).broker) == ("ok", "zerodha")
        assert s.get(Account, 2).status == "invalid_key"


def answer_margin_check(db, at, answers: dict[int, tuple[float, float]]) -> int:
    """Play the service: answer the page's queued margin_check command with (required, available) per account."""
    from db.commands import finish_control
    from db.margin import CheckResult, plan_of, record_checks
    from db.strategies import resolved_strategy
    plan, cid = at.session_state["strategies.margin"]
    sid, mult = plan[0], dict(plan[1])
    _, legs = resolved_strategy(db, sid)
    with db.write() as s:
        record_checks(s, cid, sid, [CheckResult(a, m, plan_of(legs, m), *answers[a]) for a, m in mult.items()])
        finish_control(s, cid, "done", "checked")
    return cid


def save_and_choose(at, accounts: list[int]) -> None:
    at.text_input(key="strategies.name").input("Short straddle")
    at.number_input(key="strategies.max_loss").set_value(5000)
    at.button(key="strategies.save").click().run()
    assert not errors(at), errors(at)
    at.multiselect(key="strategies.exec_accounts").set_value(accounts).run()


def test_strategies_when_saved_and_executed_then_entry_intents_queued_and_shown(seeded):
    db = seeded["db"]
    a1 = seeded["accounts"][0]
    at = page("strategies").run()
    save_and_choose(at, [a1])
    assert at.button(key="strategies.execute").disabled  # no margin check yet
    at.button(key="strategies.check_margin").click().run()
    assert count(db, ControlCommand, ControlCommand.kind == "margin_check") == 1
    answer_margin_check(db, at, {a1: (150_000.0, 1_000_000.0)})
    at.run()
    before = count(db, OrderIntent)
    at.button(key="strategies.execute").click().run()
    assert not errors(at), errors(at)
    run_ids = at.session_state["strategies.last_runs"]
    with db.read() as s:
        rows = s.scalars(select(OrderIntent).where(OrderIntent.run_id.in_(run_ids))).all()
    assert count(db, OrderIntent) == before + 2
    assert sorted((r.symbol, r.action, r.requested_qty) for r in rows) == sorted(
        (b.option_symbol("NIFTY", seeded["expiry"], 26000, k), "SELL", 65) for k in ("CE", "PE"))
    assert any("queued" in m.value for m in at.markdown if "Last execution" in m.value)


def test_strategies_when_multipliers_set_then_preview_shows_each_accounts_quantities(seeded):
    a1, a2 = seeded["accounts"]
    at = page("strategies").run()
    save_and_choose(at, [a1, a2])
    at.number_input(key=f"strategies.mult.{a2}").set_value(3).run()
    assert not at.exception and not errors(at), errors(at)
    df = next(d.value for d in at.dataframe if "multiplier" in d.value.columns)
    got = sorted(zip(df["account"], df["multiplier"], df["action"], df["quantity"], df["lots"], strict=True))
    assert got == sorted([("alpha", 1, "SELL", 65, 1)] * 2 + [("beta", 3, "SELL", 195, 3)] * 2)


def test_strategies_when_an_account_is_short_of_margin_then_it_is_refused_with_the_shortfall(seeded):
    from db.models import StrategyRun
    db = seeded["db"]
    a1, a2 = seeded["accounts"]
    at = page("strategies").run()
    save_and_choose(at, [a1, a2])
    at.number_input(key=f"strategies.mult.{a1}").set_value(2).run()
    at.button(key="strategies.check_margin").click().run()
    answer_margin_check(db, at, {a1: (300_000.0, 1_000_000.0), a2: (150_000.0, 40_000.0)})
    at.run()
    assert any("beta will be refused" in e and "short by ₹110,000" in e for e in errors(at)), errors(at)
    runs_before = count(db, StrategyRun)
    at.button(key="strategies.execute").click().run()
    assert any("Refused beta" in e and "short by ₹110,000" in e for e in errors(at)), errors(at)
    run_ids = at.session_state["strategies.last_runs"]
    assert len(run_ids) == 1 and count(db, StrategyRun) == runs_before + 1
    with db.read() as s:
        run = s.get(StrategyRun, run_ids[0])
        qtys = sorted(s.scalars(select(OrderIntent.requested_qty).where(OrderIntent.run_id == run.id)))
        assert s.scalar(select(func.count()).select_from(OrderIntent).where(
            OrderIntent.account_id == a2, OrderIntent.run_id.is_not(None), OrderIntent.created_at >= run.started_at)) == 0
    assert (run.account_id, run.multiplier, qtys) == (a1, 2, [130, 130])


def test_strategies_when_bad_name_then_error_and_nothing_saved(seeded):
    from db.models import Strategy
    at = page("strategies").run()
    at.text_input(key="strategies.name").input("bad/name")
    at.button(key="strategies.save").click().run()
    assert any("Strategy name must be" in e for e in errors(at))
    assert count(seeded["db"], Strategy) == 1  # only the seeded one


def _disk_full(db, monkeypatch):
    """The page's database is capped at its current size (APP__DB__MAX_PAGES, read by pages._common) and then
    filled from a connection without the cap, so the page's next write meets SQLITE_FULL. The triggers make
    the form's INSERT need new pages, as every write on a really full disk does (see
    tests/reliability/test_exit_write_faults_e2e.py)."""
    import sqlite3
    with db.read() as s:
        pages = s.connection().exec_driver_sql("PRAGMA page_count").scalar()
    monkeypatch.setenv("APP__DB__MAX_PAGES", str(pages))
    con = sqlite3.connect(db.path, isolation_level=None)
    con.execute("CREATE TABLE test_padding (b BLOB)")
    con.execute("INSERT INTO test_padding VALUES (zeroblob(400000))")
    for table in ("order_intents", "control_commands"):
        con.execute(f"CREATE TRIGGER test_full_{table} AFTER INSERT ON {table} BEGIN "
                    "INSERT INTO test_padding VALUES (zeroblob(200000)); END")
    con.close()


def test_forms_when_disk_full_then_clear_message_no_traceback_and_nothing_written(seeded, monkeypatch):
    db = seeded["db"]
    at = _order_page()
    at.button(key="quick.preview").click().run()
    intents, commands = count(db, OrderIntent), count(db, ControlCommand)
    _disk_full(db, monkeypatch)
    at.button(key="quick.submit").click().run()
    assert not at.exception, at.exception
    assert any("disk full: nothing was written" in e for e in errors(at)), errors(at)
    at = page("orders").run()
    at.button(key="orders.refresh").click().run()
    assert not at.exception, at.exception
    assert any("disk full: nothing was written" in e.value for e in at.sidebar.error), [e.value for e in at.error]
    iid = _select_intent(at, "queued")
    at.button(key=f"orders.cancel.{iid}").click().run()
    assert not at.exception, at.exception
    assert any("disk full: nothing was written" in e for e in errors(at)), errors(at)
    assert (count(db, OrderIntent), count(db, ControlCommand)) == (intents, commands)


def _select_intent(at, status: str) -> int:
    """Select (as a click on the row would) the first order intent row with ``status``; returns its id."""
    [df] = [d.value for d in at.dataframe if "purpose" in d.value.columns and "requested_qty" in d.value.columns]
    assert list(df.columns[:2]) == ["status", "purpose"]  # what the trader reads first comes first
    row = df.index[df["status"] == status][0]
    at.session_state["orders.intents"] = {"selection": {"rows": [int(row)], "columns": []}}
    at.run()
    return int(df.loc[row, "id"])


def test_orders_when_a_row_is_selected_then_cancel_queues_one_command_and_the_message_outlives_refreshes(seeded):
    db = seeded["db"]
    at = page("orders").run()
    iid = _select_intent(at, "cancelled")
    assert at.button(key=f"orders.cancel.{iid}").disabled  # an ended order offers no cancel
    iid = _select_intent(at, "placed")
    at.button(key=f"orders.cancel.{iid}").click().run()
    assert not at.exception, at.exception
    with db.read() as s:
        cmds = [(c.kind, json.loads(c.payload_json)) for c in s.scalars(select(ControlCommand))]
    assert cmds == [("cancel_intent", {"intent_id": iid})]
    for _ in range(3):  # the fragment's auto-refresh reruns: the confirmation stays until dismissed
        at.run()
        assert any(f"Cancel requested for order #{iid}" in m.value for m in at.success), [m.value for m in at.success]
    at.button(key="flash.orders.close").click().run()
    assert not any("Cancel requested" in m.value for m in at.success)


def test_quick_order_when_limit_price_outside_the_band_then_named_and_placed_only_after_a_second_confirmation(seeded):
    db = seeded["db"]
    with db.write() as s:  # RELIANCE's last price (₹1,500), ticked now
        s.get(LatestPrice, ("RELIANCE", "NSE")).tick_ts = utcnow()
    before = count(db, OrderIntent)
    at = _order_page()
    at.selectbox(key="quick.pricetype").select("LIMIT")
    at.number_input(key="quick.price").set_value(1900.0)
    at.button(key="quick.preview").click().run()
    assert not at.exception, at.exception
    assert any("LIMIT price ₹1,900.00 is 27 % above the last price ₹1,500.00" in w.value for w in at.warning)
    assert at.button(key="quick.submit").disabled
    at.checkbox(key="quick.confirm_guard").check().run()
    assert not at.button(key="quick.submit").disabled
    at.button(key="quick.submit").click().run()
    assert count(db, OrderIntent) == before + 1
    at.number_input(key="quick.price").set_value(9000.0)
    at.button(key="quick.preview").click().run()
    assert any("Refused: LIMIT price ₹9,000.00" in e for e in errors(at)), errors(at)
    assert count(db, OrderIntent) == before + 1


def test_alerts_when_raised_after_the_page_opened_then_toasted_once_and_listed_on_service_health(seeded):
    from db.models import ServiceLog
    db = seeded["db"]
    with db.write() as s:  # history from before this session: listed, never toasted as news
        s.add(ServiceLog(component="alerts", level="CRITICAL", message="exit_not_written: an old one"))
    at = page("dashboard").run()
    assert not at.toast
    with db.write() as s:
        s.add(ServiceLog(component="alerts", level="CRITICAL", message="exit_rejected: intent 7 rejected: no margin"))
    at.run()
    assert [t.value for t in at.toast] == ["exit_rejected: intent 7 rejected: no margin"]
    at.run()
    assert not at.toast  # shown once
    health = page("health").run()
    assert not health.exception
    messages = {m for df in health.dataframe if list(df.value.columns)[-1:] == ["message"]
                and "component" not in df.value.columns for m in df.value["message"]}  # the Alerts table
    assert {"exit_rejected: intent 7 rejected: no margin", "exit_not_written: an old one"} <= messages


def test_preview_when_mis_after_the_cut_off_then_refused_with_the_reason_and_nothing_written(seeded, monkeypatch):
    db = seeded["db"]
    monkeypatch.setenv("APP__MARKET__CLOCK_START_IST", "2026-12-01 15:20:00")  # the app's clock: after 15:15
    monkeypatch.setenv("APP__MARKET__CLOCK_OFFSET_S", "0")
    at = _order_page()
    at.button(key="quick.preview").click().run()
    assert any("no new MIS entries after 15:15 IST" in e for e in errors(at)), errors(at)
    assert "quick.pending" not in at.session_state
    assert count(db, OrderIntent) == 20


def test_dashboard_when_history_lags_then_tiles_chart_and_bars_agree_and_every_account_has_a_tile(db):
    """One P&L on the screen: the chart's last Total is the Total tile, the strategy bars (plus what the accounts
    hold outside any run) add up to it, and seven accounts get seven tiles (before, tiles stopped at five)."""
    from db.models import PnlSnapshot
    ids = [b.seed_account(db, f"acct{i}") for i in range(7)]
    b.seed_heartbeat(db)
    b.seed_pnl(db, ids, 120, step_s=5.0)  # history: the cache and the buckets lag behind it
    with db.write() as s:  # the newest snapshot of each account, far from its history
        for a in ids:
            s.add(PnlSnapshot(ts_utc=utcnow(), account_id=a, run_id=None, realized=100.0, unrealized=-300.0 - a,
                              total=-200.0 - a))
    b.seed_run(db, ids[0], pnl=-50.0)
    b.seed_run(db, ids[1], name="Iron fly", pnl=30.0)
    at = page("dashboard").run()
    assert not at.exception, at.exception
    tiles = {m.label: m.value for m in at.metric}
    total = sum(-200.0 - a for a in ids)
    assert tiles["Total P&L"] == f"-₹{abs(total):,.2f}"
    assert all(f"acct{i}" in tiles for i in range(7))
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
              for c in at.get("plotly_chart")}
    lines = charts["P&L today (₹)"]["data"]
    assert lines[-1]["name"] == "Total" and round(_values(lines[-1]["y"])[-1], 2) == round(total, 2)
    bars = charts["P&L by strategy (₹)"]["data"][0]
    bars["y"] = _values(bars["y"])
    assert dict(zip(bars["x"], bars["y"], strict=True)) == {"Straddle": -50.0, "Iron fly": 30.0,
                                                            "Other positions": round(total + 20.0, 2)}
    assert round(sum(bars["y"]), 2) == round(total, 2)
    margin = charts["Margin (₹)"]["data"] if "Margin (₹)" in charts else []
    assert all("text" in t for t in margin)


def _values(v) -> list[float]:
    """A plotly figure's array as plain floats (plotly 6 sends numpy arrays as base64 'bdata' with a dtype)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        import numpy as np
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def _hold(db, run_id: int, account_id: int, legs: list[tuple[str, str, int]]) -> None:
    from db.models import Execution
    with db.write() as s:
        for n, (symbol, action, qty) in enumerate(legs, start=1):
            s.add(Execution(run_id=run_id, account_id=account_id, leg_no=n, symbol=symbol, exchange="NFO",
                            action=action, quantity=qty, product="NRML", status="entered", entry_price=100.0))


def _metric(at, label: str) -> float:
    return float(next(m.value for m in at.metric if m.label == label).replace(",", ""))


def test_risk_when_legs_held_then_greeks_per_leg_run_account_and_net_are_live(seeded):
    db, (a1, a2), exp = seeded["db"], seeded["accounts"], seeded["expiry"]
    ce, pe = (b.option_symbol("NIFTY", exp, 26000, k) for k in ("CE", "PE"))
    _hold(db, seeded["run"], a1, [(ce, "SELL", 65), (pe, "SELL", 65)])  # short straddle
    long_run = b.seed_run(db, a2, name="Long call")
    _hold(db, long_run, a2, [(ce, "BUY", 130)])
    at = page("risk").run()
    assert not at.exception and not errors(at), (at.exception, errors(at))
    by_acct = next(d.value for d in at.dataframe if list(d.value.columns[:2]) == ["account", "delta"]).set_index(
        "account")
    assert 55 < by_acct.loc["beta", "delta"] < 80  # 130 units of an ATM call: delta ~0.53 each
    assert by_acct.loc["beta", "theta"] < 0 < by_acct.loc["alpha", "theta"]  # short options earn the decay
    assert by_acct.loc["alpha", "vega"] < 0 < by_acct.loc["beta", "vega"]
    assert abs(by_acct.loc["alpha", "delta"]) < 15  # a straddle is near delta-neutral at the money
    net_delta = _metric(at, "Net Δ")
    assert net_delta == pytest.approx(by_acct["delta"].sum(), abs=0.1)
    by_run = next(d.value for d in at.dataframe if "run_id" in d.value.columns and "delta" in d.value.columns
                  and "leg_no" not in d.value.columns)
    assert set(by_run["run_id"]) == {seeded["run"], long_run}
    at.selectbox(key="risk.run_id").set_value(seeded["run"]).run()
    legs = next(d.value for d in at.dataframe if "leg_no" in d.value.columns)
    assert list(legs["symbol"]) == [ce, pe] and legs["iv"].between(13.5, 14.5).all()  # seeded at 14 % vol
    b.seed_prices(db, spot=26300.0, expiry=exp)  # the market moves: the greeks follow on the next refresh
    at.run()
    moved = next(d.value for d in at.dataframe if list(d.value.columns[:2]) == ["account", "delta"]).set_index(
        "account")
    assert moved.loc["beta", "delta"] > by_acct.loc["beta", "delta"] + 20  # the call went in the money
    assert moved.loc["alpha", "delta"] < by_acct.loc["alpha", "delta"] - 20  # the short straddle got short delta


def test_option_chain_when_underlying_switched_then_its_nearest_expiry_atm_in_view_and_a_clicked_cell_is_traded(
        seeded):
    """BANKNIFTY's monthly is one of NIFTY's expiries too: switching to NIFTY must open NIFTY's NEAREST expiry (the
    old one stayed); the grid fits on screen around ATM, shows integer strikes and '—' (never 'None') before a
    tick, readable headers and ITM shading; clicking a PE cell makes that contract the one Buy / Sell trades."""
    db = seeded["db"]
    near, monthly = seeded["expiry"], b.expiry_in(30)
    with db.write() as s:
        s.add(Instrument(symbol="BANKNIFTY", exchange="NSE_INDEX", name="BANKNIFTY", instrumenttype="INDEX",
                         lotsize=1, expiry="", strike=0.0, tick_size=0.05))
        for name, ks in (("BANKNIFTY", (51900, 52000, 52100)), ("NIFTY", (25950, 26000, 26050))):
            for k in ks:  # both list the same monthly; nothing of it has ticked yet
                for kind in ("CE", "PE"):
                    s.add(Instrument(symbol=b.option_symbol(name, monthly, k, kind), exchange="NFO", name=name,
                                     expiry=monthly, strike=float(k), instrumenttype=kind, lotsize=30,
                                     tick_size=0.05, freeze_qty=1800))
    at = page("option_chain").run()
    at.selectbox(key="chain.underlying").select("BANKNIFTY").run()
    assert at.selectbox(key="chain.expiry.BANKNIFTY").value == monthly
    at.selectbox(key="chain.underlying").select("NIFTY").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="chain.expiry.NIFTY").value == near  # not the monthly left over from BANKNIFTY
    grid = at.dataframe[0]
    assert len(grid.value) == 21 and grid.value["Strike"].iloc[10] == 26000.0  # ±10 strikes, ATM in the middle
    assert "rgba(241,196,15,0.16)" in grid.proto.arrow_data.styler.styles  # in-the-money cells shaded
    shown = _display_values(grid)
    assert list(shown.columns[:3]) == ["CE OI", "CE OI chg", "CE Vol"] and "Strike" in shown.columns
    assert shown["Strike"].iloc[10] == "26,000" and "." not in shown["CE OI"].iloc[10]
    at.selectbox(key="chain.expiry.NIFTY").select(monthly).run()
    untouched = _display_values(at.dataframe[0])
    assert (untouched["CE LTP"] == "—").all() and not untouched.isin(["None", "nan"]).any().any()
    at.selectbox(key="chain.expiry.NIFTY").select(near).run()
    at.session_state["chain.grid"] = {"selection": {"rows": [], "columns": [], "cells": [[12, "PE LTP"]]}}
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key=f"chain.strike.NIFTY.{near}").value == 26100.0 and at.radio(key="chain.side").value == "PE"
    at.button(key="chain.sell").click().run()
    pre = at.session_state["quick.prefill"]
    assert pre["symbol"] == b.option_symbol("NIFTY", near, 26100, "PE") and pre["action"] == "SELL"


def _display_values(el):
    """What a styled st.dataframe shows (the Styler's display values, header labels included)."""
    import pyarrow as pa
    table = pa.ipc.open_stream(el.proto.arrow_data.styler.display_values).read_all().to_pandas()
    table.columns = [str(c) for c in table.columns]
    return table


def test_risk_monitor_when_a_short_run_was_exited_today_then_listed_by_default_and_its_chart_shows_the_breach(db):
    """A run the risk manager exited a minute ago is listed without ticking anything (today's runs by default); its
    chart, though the run lived 3 s, has its points (1 s buckets, markers) and ends at the breach the exit was
    decided on (the seeded trailing-stop event at -₹710), not at the last snapshot before it."""
    from db.models import StrategyRun
    a = b.seed_account(db, "alpha")
    b.seed_heartbeat(db)
    run = b.seed_run(db, a, status="exited")
    with db.write() as s:
        r = s.get(StrategyRun, run)
        r.started_at, r.exited_at, r.exit_reason = utcnow() - timedelta(seconds=3), utcnow(), "trailing_sl"
    b.seed_pnl(db, [a], 3, step_s=1.0, run_id=run)
    at = page("risk").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="risk.run_id").value == run
    [chart] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
               if "trailing stop" in json.loads(c.proto.spec)["layout"]["title"]["text"]]
    pnl = next(t for t in chart["data"] if t["name"] == "P&L")
    ys = _values(pnl["y"])
    assert len(ys) == 4 and ys[-1] == -710.0 and "markers" in pnl["mode"]
    assert any(t["name"] == "Risk event" and _values(t["y"]) == [-710.0] for t in chart["data"])
    assert chart["layout"]["yaxis"]["tickprefix"] == "₹"
    at.sidebar.radio(key="risk.scope").set_value("live").run()
    assert not at.exception and not any(s.key == "risk.run_id" for s in at.selectbox)  # nothing in progress


def test_quick_order_when_a_new_search_is_typed_then_the_old_contract_is_not_kept(seeded):
    """Prefilled with a NIFTY option from the chain, then 'RELIANCE' typed: the contract must be RELIANCE (before,
    the NIFTY option stayed selected and Preview would have ordered it); a search matching nothing leaves none."""
    opt = b.option_symbol("NIFTY", seeded["expiry"], 26000, "CE")
    at = _order_page(opt, "NFO", 65)
    assert at.selectbox(key="quick.contract").value == f"{opt}|NFO"
    at.text_input(key="quick.search").input("RELIANCE").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="quick.contract").value == "RELIANCE|NSE"
    assert f"{opt}|NFO" not in at.selectbox(key="quick.contract").options
    at.text_input(key="quick.search").input("ZZZNOTHING").run()
    assert not any(s.key == "quick.contract" for s in at.selectbox)
    assert any("No instrument starts with 'ZZZNOTHING'" in c.value for c in at.caption)


def test_strategies_when_max_loss_and_profit_set_then_payoff_marks_both_and_names_the_net_credit(seeded):
    at = page("strategies").run()
    at.number_input(key="strategies.max_loss").set_value(4000.0).run()
    at.number_input(key="strategies.max_profit").set_value(2500.0).run()
    assert not at.exception and not errors(at), errors(at)
    [chart] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
               if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Payoff")]
    levels = sorted(sh["y0"] for sh in chart["layout"]["shapes"] if sh.get("y0") == sh.get("y1") and sh["y0"])
    assert levels == [-4000.0, 2500.0]
    texts = [a["text"] for a in chart["layout"]["annotations"]]
    assert "max loss ₹4,000" in texts and "max profit ₹2,500" in texts
    # the default basket is a short straddle: premium received, a credit, named in the title and the caption
    assert "net credit ₹" in chart["layout"]["title"]["text"]
    assert any("net credit ₹" in c.value for c in at.caption)
