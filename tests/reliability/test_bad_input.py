"""Bad input at every form and service entry point: a clear message, and the database is byte-for-byte unchanged.

``enqueue_order`` has its own table in tests/foundation/test_commands.py (quantity, lot, LIMIT/SL, symbols,
accounts, SQL-ish text); this file covers every other entry point: enqueue_control, add/update/delete_account,
save/execute_strategy, db.chain heartbeats, and the Streamlit forms (quick order, accounts, strategies) through
AppTest. "Nothing written" is checked on the full content of every table, not only row counts.
"""
from __future__ import annotations

import pytest
import streamlit as st
from sqlalchemy import text
from streamlit.testing.v1 import AppTest

from db import chain
from db.accounts import AccountError, add_account, delete_account, update_account
from db.commands import CommandError, enqueue_control
from db.portfolio import PortfolioError, set_portfolio_max_loss
from db.models import Base, OrderIntent, ServiceHeartbeat, utcnow
from db.strategies import LegSpec, execute_strategy, save_strategy
from tests.builders import KEY_A, make_account, seed_instruments
from tests.reliability.conftest import ROOT

SQLI = "x'); DROP TABLE accounts;--"
HUGE = "A" * 5000


def snapshot(db) -> dict:
    """Every row of every table (instruments included), as plain tuples."""
    with db.read() as s:
        return {t.name: sorted(map(tuple, s.execute(text(f'SELECT * FROM "{t.name}"')).all()), key=repr)
                for t in Base.metadata.sorted_tables}


@pytest.fixture
def world(db):
    """A seeded database: instruments + price, two accounts (one with an order), a saved strategy, a run."""
    expiry = seed_instruments(db)
    a1 = make_account(db, "acct1")
    a2 = make_account(db, "acct2", key="b" * 40, backup_order=1)
    a3 = make_account(db, "idle", key="c" * 40)
    update_account(db, a3, is_active=False)
    sid = save_strategy(db, "straddle", "NIFTY", "NSE_INDEX", expiry, [LegSpec("CE", "SELL"), LegSpec("PE", "SELL")])
    far = save_strategy(db, "far-strike", "NIFTY", "NSE_INDEX", expiry, [LegSpec("CE", "SELL", strike_mode="STRIKE",
                                                                                 strike=99950.0)])
    _, runs = execute_strategy(db, sid, [a1])
    return dict(db=db, expiry=expiry, a1=a1, a2=a2, idle=a3, sid=sid, far=far, run=runs[0])


def _intent_id(db) -> int:
    with db.read() as s:
        return s.scalar(text("SELECT min(id) FROM order_intents"))


# (id, callable(world) -> None, expected exception, message fragment)
CASES = [
    # ---- enqueue_control ----------------------------------------------------------------------------------------
    ("control-unknown-kind", lambda w: enqueue_control(w["db"], "drop_all", {}), CommandError, "Unknown control"),
    ("control-sqli-kind", lambda w: enqueue_control(w["db"], SQLI, {}), CommandError, "Unknown control"),
    ("control-payload-not-dict", lambda w: enqueue_control(w["db"], "exit_run", [1]), CommandError, "mapping"),
    ("control-missing-run-id", lambda w: enqueue_control(w["db"], "exit_run", {}), CommandError, "run_id"),
    ("control-negative-run-id", lambda w: enqueue_control(w["db"], "exit_run", {"run_id": -1}), CommandError,
     "whole-number"),
    ("control-fractional-run-id", lambda w: enqueue_control(w["db"], "exit_run", {"run_id": 1.5}), CommandError,
     "whole-number"),
    ("control-sqli-run-id", lambda w: enqueue_control(w["db"], "exit_run", {"run_id": "1 OR 1=1"}), CommandError,
     "whole-number"),
    ("control-string-run-id", lambda w: enqueue_control(w["db"], "exit_run", {"run_id": str(w["run"])}),
     CommandError, "whole-number"),
    ("control-float-run-id", lambda w: enqueue_control(w["db"], "exit_run", {"run_id": w["run"] + 0.9}),
     CommandError, "whole-number"),
    ("control-unknown-run", lambda w: enqueue_control(w["db"], "exit_run", {"run_id": 999}), CommandError,
     "no run with id 999"),
    ("control-unknown-account", lambda w: enqueue_control(w["db"], "refresh_account", {"account_id": 999}),
     CommandError, "no account"),
    ("control-unknown-intent", lambda w: enqueue_control(w["db"], "cancel_intent", {"intent_id": 999}),
     CommandError, "no intent"),
    ("control-bool-id", lambda w: enqueue_control(w["db"], "cancel_intent", {"intent_id": True}), CommandError,
     "whole-number"),
    # ---- add_account --------------------------------------------------------------------------------------------
    ("add-oversized-name", lambda w: add_account(w["db"], HUGE, "http://h:1", "ws://h:2", KEY_A), AccountError,
     "Name"),
    ("add-oversized-host", lambda w: add_account(w["db"], "n", "http://" + HUGE, "ws://h:2", KEY_A), AccountError,
     "Host URL"),
    ("add-host-no-scheme", lambda w: add_account(w["db"], "n", "127.0.0.1:5000", "ws://h:2", KEY_A), AccountError,
     "Host URL"),
    ("add-sqli-host", lambda w: add_account(w["db"], "n", SQLI, "ws://h:2", KEY_A), AccountError, "Host URL"),
    ("add-oversized-key", lambda w: add_account(w["db"], "n", "http://h:1", "ws://h:2", HUGE), AccountError,
     "API key"),
    ("add-empty-key", lambda w: add_account(w["db"], "n", "http://h:1", "ws://h:2", ""), AccountError, "API key"),
    ("add-backup-zero", lambda w: add_account(w["db"], "n", "http://h:1", "ws://h:2", KEY_A, backup_order=0),
     AccountError, "Backup order"),
    ("add-backup-negative", lambda w: add_account(w["db"], "n", "http://h:1", "ws://h:2", KEY_A, backup_order=-3),
     AccountError, "Backup order"),
    ("add-backup-text", lambda w: add_account(w["db"], "n", "http://h:1", "ws://h:2", KEY_A, backup_order="abc"),
     AccountError, "Backup order"),
    ("add-duplicate-name", lambda w: add_account(w["db"], "acct1", "http://h:1", "ws://h:2", KEY_A), AccountError,
     "already exists"),
    # ---- update_account -----------------------------------------------------------------------------------------
    ("update-unknown-account", lambda w: update_account(w["db"], 999, host_url="http://h:9"), AccountError,
     "Unknown account"),
    ("update-bad-host", lambda w: update_account(w["db"], w["a1"], host_url="ftp://h:1"), AccountError, "Host URL"),
    ("update-bad-ws", lambda w: update_account(w["db"], w["a1"], ws_url=SQLI), AccountError, "WebSocket URL"),
    ("update-short-key", lambda w: update_account(w["db"], w["a1"], api_key="short"), AccountError, "API key"),
    ("update-key-with-space", lambda w: update_account(w["db"], w["a1"], api_key="a" * 20 + " " + "b" * 20),
     AccountError, "API key"),
    ("update-backup-100", lambda w: update_account(w["db"], w["a1"], backup_order=100), AccountError,
     "Backup order"),
    ("update-good-host-bad-key", lambda w: update_account(w["db"], w["a1"], host_url="http://h:2", api_key="x"),
     AccountError, "API key"),
    ("update-trailing-negative", lambda w: update_account(w["db"], w["a1"], daily_trailing=-100), AccountError,
     "daily trailing amount"),
    ("update-trailing-text", lambda w: update_account(w["db"], w["a1"], daily_trailing="lots"), AccountError,
     "daily trailing amount"),
    ("update-trailing-nan", lambda w: update_account(w["db"], w["a1"], daily_trailing=float("nan")), AccountError,
     "daily trailing amount"),
    # ---- set_portfolio_max_loss ---------------------------------------------------------------------------------
    ("portfolio-zero", lambda w: set_portfolio_max_loss(w["db"], 0), PortfolioError, "greater than 0"),
    ("portfolio-negative", lambda w: set_portfolio_max_loss(w["db"], -5000), PortfolioError, "greater than 0"),
    ("portfolio-text", lambda w: set_portfolio_max_loss(w["db"], SQLI), PortfolioError, "number of rupees"),
    ("portfolio-inf", lambda w: set_portfolio_max_loss(w["db"], "inf"), PortfolioError, "greater than 0"),
    ("portfolio-bool", lambda w: set_portfolio_max_loss(w["db"], True), PortfolioError, "number of rupees"),
    # ---- delete_account -----------------------------------------------------------------------------------------
    ("delete-unknown", lambda w: delete_account(w["db"], 999), AccountError, "Unknown account"),
    ("delete-with-orders", lambda w: delete_account(w["db"], w["a1"]), AccountError, "deactivate it instead"),
    # ---- save_strategy ------------------------------------------------------------------------------------------
    ("save-empty-name", lambda w: save_strategy(w["db"], "", "NIFTY", "NSE_INDEX", w["expiry"],
                                                [LegSpec("CE", "SELL")]), CommandError, "name"),
    ("save-oversized-name", lambda w: save_strategy(w["db"], HUGE, "NIFTY", "NSE_INDEX", w["expiry"],
                                                    [LegSpec("CE", "SELL")]), CommandError, "name"),
    ("save-sqli-name", lambda w: save_strategy(w["db"], SQLI, "NIFTY", "NSE_INDEX", w["expiry"],
                                               [LegSpec("CE", "SELL")]), CommandError, "name"),
    ("save-duplicate-name", lambda w: save_strategy(w["db"], "straddle", "NIFTY", "NSE_INDEX", w["expiry"],
                                                    [LegSpec("CE", "SELL")]), CommandError, "already exists"),
    ("save-unknown-underlying", lambda w: save_strategy(w["db"], "s", "NOSUCH", "NSE_INDEX", w["expiry"],
                                                        [LegSpec("CE", "SELL")]), CommandError, "No NOSUCH"),
    ("save-unknown-expiry", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", "01-JAN-99",
                                                    [LegSpec("CE", "SELL")]), CommandError, "expiring"),
    ("save-bad-exchange", lambda w: save_strategy(w["db"], "s", "NIFTY", "NASDAQ", w["expiry"],
                                                  [LegSpec("CE", "SELL")]), CommandError, "exchange"),
    ("save-bad-product", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                                 [LegSpec("CE", "SELL")], product="CNC"), CommandError, "Product"),
    ("save-negative-lots", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                                   [LegSpec("CE", "SELL", -1)]), CommandError, "lots"),
    ("save-fractional-lots", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                                     [LegSpec("CE", "SELL", 1.5)]), CommandError, "lots"),
    ("save-bool-lots", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                               [LegSpec("CE", "SELL", True)]), CommandError, "lots"),
    ("save-huge-lots", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                               [LegSpec("CE", "SELL", 501)]), CommandError, "lots"),
    ("save-bad-action", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                                [LegSpec("CE", "HOLD")]), CommandError, "BUY or SELL"),
    ("save-strike-without-strike", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                                           [LegSpec("CE", "SELL", strike_mode="STRIKE")]),
     CommandError, "fixed strike"),
    ("save-offset-too-big", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                                    [LegSpec("CE", "SELL", strike_mode="OTM", offset=51)]),
     CommandError, "offset"),
    ("save-21-legs", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                             [LegSpec("CE", "SELL")] * 21), CommandError, "1 to 20 legs"),
    ("save-negative-profit", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                                     [LegSpec("CE", "SELL")], max_profit=-1), CommandError,
     "Max profit"),
    ("save-absurd-trailing", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                                     [LegSpec("CE", "SELL")], trailing_sl=1e12), CommandError,
     "Trailing stop"),
    ("save-nan-loss", lambda w: save_strategy(w["db"], "s", "NIFTY", "NSE_INDEX", w["expiry"],
                                              [LegSpec("CE", "SELL")], max_loss=float("nan")), CommandError,
     "Max loss"),
    # ---- execute_strategy ---------------------------------------------------------------------------------------
    ("exec-no-accounts", lambda w: execute_strategy(w["db"], w["sid"], []), CommandError, "at least one account"),
    ("exec-unknown-account", lambda w: execute_strategy(w["db"], w["sid"], [999]), CommandError, "Unknown"),
    ("exec-one-unknown-of-two", lambda w: execute_strategy(w["db"], w["sid"], [w["a2"], 999]), CommandError,
     "Unknown"),
    ("exec-deactivated-account", lambda w: execute_strategy(w["db"], w["sid"], [w["idle"]]), CommandError,
     "deactivated"),
    ("exec-unknown-strategy", lambda w: execute_strategy(w["db"], 999, [w["a2"]]), CommandError,
     "Unknown strategy"),
    ("exec-sqli-strategy", lambda w: execute_strategy(w["db"], SQLI, [w["a2"]]), CommandError, "Unknown strategy"),
    ("exec-sqli-account", lambda w: execute_strategy(w["db"], w["sid"], ["1 OR 1=1"]), CommandError, "Unknown"),
    ("exec-strike-not-listed", lambda w: execute_strategy(w["db"], w["far"], [w["a2"]]), CommandError,
     "not listed"),
]


@pytest.mark.parametrize("call,exc,msg", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_entry_point_when_input_is_bad_then_clear_error_and_nothing_written(world, call, exc, msg):
    before = snapshot(world["db"])
    with pytest.raises(exc, match=msg) as info:
        call(world)
    assert str(info.value).strip(), "the error must say what is wrong"
    assert KEY_A not in str(info.value)
    assert snapshot(world["db"]) == before


def test_chain_heartbeat_when_session_unknown_then_false_and_nothing_written(world):
    before = snapshot(world["db"])
    assert chain.heartbeat(world["db"], SQLI) is False
    assert chain.heartbeat(world["db"], "") is False
    assert snapshot(world["db"]) == before


def test_valid_control_commands_still_accepted(world):
    """The stricter enqueue_control keeps every command the pages send."""
    db = world["db"]
    ids = [enqueue_control(db, "exit_run", {"run_id": world["run"]}),
           enqueue_control(db, "refresh_account", {"account_id": world["a1"]}),
           enqueue_control(db, "cancel_intent", {"intent_id": _intent_id(db)}),
           enqueue_control(db, "reload_accounts", {})]
    assert len(set(ids)) == 4


# ---- Streamlit forms through AppTest ----------------------------------------------------------------------------
def _page(name: str) -> AppTest:
    st.cache_data.clear()
    st.cache_resource.clear()
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=30)


def _alive(db) -> None:
    with db.write() as s:
        for comp in ("runner", "dispatcher"):
            s.merge(ServiceHeartbeat(component=comp, pid=1, status="ok", details_json="{}", last_beat=utcnow()))


def _quick(w, qty=65, pricetype="MARKET", price=0.0, trigger=0.0) -> AppTest:
    with w["db"].read() as s:
        sym = s.scalar(text("SELECT symbol FROM instruments WHERE instrumenttype='CE' ORDER BY strike LIMIT 1"))
    at = _page("quick_order")
    at.session_state["quick.prefill"] = dict(symbol=sym, exchange="NFO", action="BUY", quantity=65)
    at.run()
    at.number_input(key="quick.qty").set_value(qty)
    at.selectbox(key="quick.pricetype").select(pricetype)
    at.number_input(key="quick.price").set_value(price)
    at.number_input(key="quick.trigger").set_value(trigger)
    at.button(key="quick.preview").click().run()
    return at


def _accounts_add(name="new", host="http://127.0.0.1:5000", ws="ws://127.0.0.1:8765", key=KEY_A, backup=0):
    at = _page("accounts").run()
    at.text_input(key="accounts.add.name").input(name)
    at.text_input(key="accounts.add.host").input(host)
    at.text_input(key="accounts.add.ws").input(ws)
    at.text_input(key="accounts.add.key").input(key)
    at.number_input(key="accounts.add.backup").set_value(backup)
    at.button(key="accounts.add.submit").click().run()
    return at


def _accounts_edit(w, host=None, ws=None, key=""):
    at = _page("accounts").run()
    acct = at.selectbox(key="accounts.edit.id").value
    if host is not None:
        at.text_input(key=f"accounts.edit.host.{acct}").input(host)
    if ws is not None:
        at.text_input(key=f"accounts.edit.ws.{acct}").input(ws)
    at.text_input(key="accounts.edit.key").input(key)
    at.button(key="accounts.edit.submit").click().run()
    return at


def _accounts_trailing(w, value):
    at = _page("accounts").run()
    acct = at.selectbox(key="accounts.edit.id").value
    at.number_input(key=f"accounts.edit.day_trail.{acct}").set_value(value)
    at.button(key="accounts.edit.submit").click().run()
    return at


def _portfolio_limit(w, value):
    at = _page("accounts").run()
    at.text_input(key="accounts.portfolio.loss").input(value)
    at.button(key="accounts.portfolio.submit").click().run()
    return at


def _strategy_save(name):
    at = _page("strategies").run()
    at.toggle(key="strategies.show_payoff").set_value(False)
    at.text_input(key="strategies.name").input(name)
    at.button(key="strategies.save").click().run()
    return at


UI_CASES = [
    ("quick-qty-zero", lambda w: _quick(w, qty=0), "greater than zero"),
    ("quick-sl-without-trigger", lambda w: _quick(w, pricetype="SL", price=100.0), "need a trigger"),
    ("quick-slm-without-trigger", lambda w: _quick(w, pricetype="SL-M"), "need a trigger"),
    ("quick-price-off-tick", lambda w: _quick(w, pricetype="LIMIT", price=100.03), "tick size"),
    ("accounts-add-short-key", lambda w: _accounts_add(key="short"), "API key"),
    ("accounts-add-sqli-name", lambda w: _accounts_add(name=SQLI), "Name"),
    ("accounts-add-oversized-host", lambda w: _accounts_add(host="http://" + HUGE), "Host URL"),
    ("accounts-add-duplicate", lambda w: _accounts_add(name="acct1"), "already exists"),
    ("accounts-edit-bad-ws", lambda w: _accounts_edit(w, ws="http://not-a-ws"), "WebSocket URL"),
    ("accounts-edit-bad-key", lambda w: _accounts_edit(w, key="has space in it !!!!!"), "API key"),
    ("accounts-edit-trailing-negative", lambda w: _accounts_trailing(w, -500.0), "daily trailing amount"),
    ("portfolio-limit-text", lambda w: _portfolio_limit(w, "five thousand"), "number of rupees"),
    ("portfolio-limit-negative", lambda w: _portfolio_limit(w, "-5000"), "greater than 0"),
    ("portfolio-limit-zero", lambda w: _portfolio_limit(w, "0"), "greater than 0"),
    ("portfolio-limit-empty", lambda w: _portfolio_limit(w, ""), "greater than 0"),
    ("strategies-save-empty-name", lambda w: _strategy_save(""), "name"),
    ("strategies-save-sqli-name", lambda w: _strategy_save(SQLI), "name"),
    ("strategies-save-duplicate", lambda w: _strategy_save("straddle"), "already exists"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("drive,msg", [c[1:] for c in UI_CASES], ids=[c[0] for c in UI_CASES])
def test_streamlit_form_when_input_is_bad_then_error_shown_and_nothing_written(world, drive, msg):
    _alive(world["db"])
    before = snapshot(world["db"])
    try:
        at = drive(world)
    except (KeyError, ValueError) as exc:  # a widget this row needs is not on the page
        pytest.skip(f"form not available on the page: {exc!r}")
    assert not at.exception, [e.value for e in at.exception]
    errors = " | ".join(e.value for e in at.error)
    assert msg.lower() in errors.lower(), f"expected '{msg}' in the page errors, got: {errors!r}"
    assert KEY_A not in errors
    after = snapshot(world["db"])
    after["service_heartbeat"] = before["service_heartbeat"]
    assert after == before
    with world["db"].read() as s:
        assert s.query(OrderIntent).count() == len(before["order_intents"])
