"""AppTest: the portfolio daily max loss and the per-account trailing amount on the Accounts page (saved when
valid, a clear error and nothing saved when not), and the account / portfolio events on the Risk Monitor."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import ui_builders as b
from db.accounts import save_day_peaks, update_account
from db.clock import trading_day
from db.models import Account, AuditLog, PortfolioSettings, Position, RiskEvent
from db.portfolio import get_portfolio_max_loss, set_portfolio_max_loss

ROOT = Path(__file__).resolve().parents[2]


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=30)


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _two_accounts_with_pnl(db) -> tuple[int, int]:
    a1, a2 = b.seed_account(db, "alpha"), b.seed_account(db, "beta")
    with db.write() as s:
        s.add(Position(account_id=a1, symbol="SBIN", exchange="NSE", product="MIS", quantity=10, average_price=800.0,
                       ltp=790.0, realized_pnl=-50.0, unrealized_pnl=-100.0, pnl=-150.0))
        s.add(Position(account_id=a2, symbol="SBIN", exchange="NSE", product="MIS", quantity=0, average_price=0.0,
                       ltp=790.0, realized_pnl=-250.0, pnl=-250.0))
    return a1, a2


def test_portfolio_limit_when_bad_input_then_error_nothing_saved_and_a_good_one_is_saved_beside_the_day_pnl(db):
    b.seed_heartbeat(db)
    _two_accounts_with_pnl(db)
    at = page("accounts").run()
    assert metric(at, "Portfolio day P&L (all accounts)") == "-₹400.00"
    assert metric(at, "Portfolio daily max loss") == "none"
    with db.read() as s:
        audits = s.scalar(select(func.count()).select_from(AuditLog))
    for bad, msg in (("abc", "number of rupees"), ("-2000", "greater than 0"), ("0", "greater than 0"),
                     ("nan", "greater than 0")):
        at.text_input(key="accounts.portfolio.loss").input(bad)
        at.button(key="accounts.portfolio.submit").click().run()
        assert any(msg in e for e in errors(at)), (bad, errors(at))
        with db.read() as s:
            assert s.scalar(select(func.count()).select_from(PortfolioSettings)) == 0
            assert s.scalar(select(func.count()).select_from(AuditLog)) == audits
    at.text_input(key="accounts.portfolio.loss").input("₹25,000")
    at.button(key="accounts.portfolio.submit").click().run()
    assert not errors(at), errors(at)
    assert get_portfolio_max_loss(db) == 25000.0
    at.run()
    assert metric(at, "Portfolio daily max loss") == "-₹25,000.00"
    at.text_input(key="accounts.portfolio.loss").input("-1")
    at.button(key="accounts.portfolio.submit").click().run()
    assert errors(at) and get_portfolio_max_loss(db) == 25000.0  # a bad value leaves the saved one alone


def test_portfolio_limit_when_removed_then_only_after_the_confirmation(db):
    b.seed_account(db, "alpha")
    set_portfolio_max_loss(db, 5000)
    at = page("accounts").run()
    assert at.button(key="accounts.portfolio.remove").disabled
    at.checkbox(key="accounts.portfolio.remove_confirm").check().run()
    at.button(key="accounts.portfolio.remove").click().run()
    assert get_portfolio_max_loss(db) is None


def test_trailing_when_saved_then_stored_and_todays_peak_and_floor_shown_and_a_negative_one_refused(db):
    b.seed_heartbeat(db)
    acct = b.seed_account(db, "alpha")
    at = page("accounts").run()
    at.number_input(key=f"accounts.edit.day_trail.{acct}").set_value(-100.0)
    at.button(key="accounts.edit.submit").click().run()
    assert any("daily trailing amount" in e for e in errors(at)), errors(at)
    with db.read() as s:
        assert s.get(Account, acct).daily_trailing is None
    at.number_input(key=f"accounts.edit.day_trail.{acct}").set_value(1500.0)
    at.button(key="accounts.edit.submit").click().run()
    assert not errors(at), errors(at)
    with db.read() as s:
        assert s.get(Account, acct).daily_trailing == 1500.0
    with db.write() as s:
        save_day_peaks(s, [(acct, trading_day().isoformat(), 4000.0)])
    at = page("accounts").run()
    assert any("peak ₹4,000.00: trailing floor ₹2,500.00" in c.value for c in at.caption), [c.value for c in at.caption]
    update_account(db, acct, daily_trailing=0)
    with db.read() as s:
        assert s.get(Account, acct).daily_trailing is None  # 0 = none


def test_risk_monitor_when_portfolio_and_account_limit_events_then_listed_even_without_runs(db):
    b.seed_heartbeat(db)
    acct = b.seed_account(db, "alpha")
    with db.write() as s:
        s.add(RiskEvent(account_id=None, event_type="portfolio_max_loss", threshold=-250.0, value=-270.0,
                        action="flatten", message="portfolio daily max loss ₹250 at 2026-12-02 10:42:01 IST"))
        s.add(RiskEvent(account_id=acct, event_type="account_trailing_stop", threshold=100.0, value=95.0,
                        action="flatten", message="daily trailing stop ₹100: day P&L peak ₹200.00, floor ₹100.00"))
    at = page("risk").run()
    assert not at.exception
    [df] = [d.value for d in at.dataframe if "event_type" in d.value.columns]
    assert list(df["event_type"]) == ["account_trailing_stop", "portfolio_max_loss"]
    assert list(df["account"]) == ["alpha", "portfolio"]
