import logging
import os
import stat

import pytest

from db import Database
from db.accounts import AccountError, api_key_for, list_accounts
from db.crypto import SecretError
from db.logmask import SecretMaskFilter, install, redact
from tests.builders import KEY_A, make_account


def test_key_file_is_created_with_mode_0600(db, tmp_path):
    mode = stat.S_IMODE(os.stat(tmp_path / "algomirror.key").st_mode)
    assert mode == 0o600


def test_api_key_is_encrypted_at_rest_and_absent_from_the_raw_file(db, tmp_path):
    acct = make_account(db)
    import sqlite3
    con = sqlite3.connect(tmp_path / "algomirror.db")
    con.execute("PRAGMA wal_checkpoint(FULL)")
    con.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("algomirror.db*"))
    assert KEY_A.encode() not in raw
    assert api_key_for(db, acct) == KEY_A


def test_account_views_never_carry_the_key(db):
    make_account(db)
    view = list_accounts(db)[0]
    assert KEY_A not in repr(view)
    assert not hasattr(view, "api_key_encrypted")


def test_wrong_fernet_key_gives_a_clear_error_not_the_key(tmp_path):
    d1 = Database(tmp_path / "a.db", key_file=tmp_path / "k1")
    acct = make_account(d1)
    d2 = Database(tmp_path / "a.db", key_file=tmp_path / "k2")
    with pytest.raises(SecretError) as e:
        api_key_for(d2, acct)
    assert KEY_A not in str(e.value)


def test_a_key_never_reaches_the_log(db, caplog, tmp_path):
    logfile = tmp_path / "run.log"
    install(logging.INFO, str(logfile))
    caplog.handler.addFilter(SecretMaskFilter())
    make_account(db, key="Zz9" + "q" * 30)  # not hex: masked because it was registered as a secret
    log = logging.getLogger("test.secrets")
    log.info("calling broker with apikey=%s", KEY_A)
    log.warning("payload %s", {"apikey": KEY_A, "symbol": "SBIN"})
    log.error("odd key %s", "Zz9" + "q" * 30)
    try:
        raise RuntimeError(f"boom {KEY_A}")
    except RuntimeError:
        log.exception("failed")
    for h in logging.getLogger().handlers:
        h.flush()
    text = logfile.read_text() + caplog.text
    assert "calling broker" in text and "SBIN" in text
    assert KEY_A not in text
    assert "Zz9" + "q" * 30 not in text


def test_redact_keeps_ordinary_numbers():
    assert redact("order 26112458991018 placed qty 65") == "order 26112458991018 placed qty 65"


@pytest.mark.parametrize("name,host,ws,key,msg", [
    ("", "http://h:1", "ws://h:2", KEY_A, "Name"),
    ("x" * 65, "http://h:1", "ws://h:2", KEY_A, "Name"),
    ("ok'; DROP TABLE accounts;--", "http://h:1", "ws://h:2", KEY_A, "Name"),
    ("ok", "ftp://h:1", "ws://h:2", KEY_A, "Host URL"),
    ("ok", "http://h:1", "http://h:2", KEY_A, "WebSocket URL"),
    ("ok", "http://h:1", "ws://h:2", "short", "API key"),
    ("ok", "http://h:1", "ws://h:2", "has space in the key!!", "API key"),
])
def test_bad_account_input_is_refused_and_writes_nothing(db, name, host, ws, key, msg):
    with pytest.raises(AccountError, match=msg):
        make_account_raw(db, name, host, ws, key)
    assert list_accounts(db) == []


def make_account_raw(db, name, host, ws, key):
    from db.accounts import add_account
    return add_account(db, name, host, ws, key)


def test_first_account_becomes_primary_and_duplicates_are_refused(db):
    a = make_account(db, "one")
    make_account(db, "two", backup_order=1)
    with pytest.raises(AccountError, match="already exists"):
        make_account(db, "one")
    views = list_accounts(db)
    assert [v.name for v in views] == ["one", "two"] and views[0].id == a and views[0].is_primary
