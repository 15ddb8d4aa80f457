"""API & Webhooks page (AppTest, real SQLite): a key is shown once and stored hashed, revoke works, a webhook rule
is created with a token shown once, bad input writes nothing, and received alerts are listed."""
from __future__ import annotations

from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.api_keys import authenticate
from db.models import ApiKey, WebhookRule
from db.strategies import LegSpec, save_strategy
from db.webhooks import receive, rule_for_token
from tests.ui import ui_builders as b
from tests.ui.test_ui_pages import ROOT


def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / "api_access.py"), default_timeout=30)


def count(db, model) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model))


def codes(at) -> list[str]:
    return [c.value for c in at.code]


def test_key_when_created_then_shown_once_stored_hashed_and_revocable(db):
    b.seed_heartbeat(db)
    at = page().run()
    at.text_input(key="api.key_name").input("amibroker")
    at.button(key="api.create_key").click().run()
    assert not at.exception and not at.error, at.error
    shown = [c for c in codes(at) if c.startswith("amk_")]
    assert len(shown) == 1 and authenticate(db, shown[0]) is not None
    with db.read() as s:
        row = s.scalars(select(ApiKey)).one()
    assert shown[0] not in row.key_hash
    at.run()
    assert not [c for c in codes(at) if c.startswith("amk_")]  # once only
    assert all(shown[0] not in str(df.value.to_dict()) for df in at.dataframe)
    at.checkbox(key="api.revoke_confirm").check().run()
    at.button(key="api.revoke").click().run()
    assert authenticate(db, shown[0]) is None


def test_key_when_the_name_is_bad_then_error_and_nothing_written(db):
    b.seed_heartbeat(db)
    at = page().run()
    at.text_input(key="api.key_name").input("bad/name!")
    at.button(key="api.create_key").click().run()
    assert at.error and count(db, ApiKey) == 0


def test_rule_when_created_then_token_url_shown_once_and_alerts_listed(db):
    b.seed_heartbeat(db)
    acct = b.seed_account(db, "alpha")
    expiry = b.seed_instruments(db)
    save_strategy(db, "TV straddle", "NIFTY", "NSE_INDEX", expiry, [LegSpec("CE", "SELL")])
    at = page().run()
    at.button(key="api.create_rule").click().run()  # no name, no accounts
    assert at.error and count(db, WebhookRule) == 0
    at.text_input(key="api.rule_name").input("tv nifty")
    at.multiselect(key="api.rule_accounts").select(acct).run()
    at.button(key="api.create_rule").click().run()
    assert not at.error, at.error
    urls = [c for c in codes(at) if "/webhook/" in c]
    assert len(urls) == 1
    token = urls[0].rsplit("/", 1)[1]
    rule = rule_for_token(db, token)
    assert rule is not None and rule.account_ids == (acct,)
    receive(db, rule, b'{"action": "dance"}', dedupe_s=60, entries_ok=True)
    at.run()
    assert not [c for c in codes(at) if "/webhook/" in c]
    log = at.dataframe[-1].value
    assert "action must be enter or exit" in " ".join(log["message"])
