"""The local API's building blocks on a real SQLite file: hashed keys, once-per-idempotency-key, the bind rule."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from api.__main__ import is_loopback, main
from db.api_calls import IdempotencyConflict, once
from db.api_keys import authenticate, create_key, revoke_key
from db.commands import CommandError, enqueue_control_in
from db.models import ApiKey, ControlCommand


def test_key_when_created_then_only_its_hash_is_stored_and_it_authenticates_until_revoked(db):
    key_id, key = create_key(db, "script")
    assert authenticate(db, key) == key_id and authenticate(db, key) == key_id  # the second from the cache
    with db.read() as s:
        row = s.get(ApiKey, key_id)
    assert row.key_hash.startswith("$argon2") and key not in row.key_hash and row.prefix == key[4:12]
    assert key.encode() not in db.path.read_bytes() + db.path.with_name(db.path.name + "-wal").read_bytes()
    assert authenticate(db, key[:-1] + ("0" if key[-1] != "0" else "1")) is None
    assert authenticate(db, None) is None and authenticate(db, "") is None
    revoke_key(db, key_id)
    assert authenticate(db, key) is None


def test_key_when_the_name_is_bad_then_refused_and_nothing_written(db):
    with pytest.raises(CommandError):
        create_key(db, "")
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(ApiKey)) == 0


def test_once_when_the_same_key_comes_twice_then_one_command_and_the_first_answer(db):
    key_id, _ = create_key(db, "k")

    def act(s):
        return {"command_id": enqueue_control_in(s, "flatten_all", {})}
    first = once(db, key_id, "k-1", "POST /api/v1/flatten", {}, act)
    second = once(db, key_id, "k-1", "POST /api/v1/flatten", {}, act)
    assert second.body == first.body and second.replayed and not first.replayed
    with pytest.raises(IdempotencyConflict):
        once(db, key_id, "k-1", "POST /api/v1/accounts/1/flatten", {}, act)
    with pytest.raises(CommandError):
        once(db, key_id, "", "POST /api/v1/flatten", {}, act)
    with pytest.raises(CommandError):  # a refused action leaves no record: the key can be used again
        once(db, key_id, "k-2", "POST /api/v1/runs/9/exit", {}, lambda s: enqueue_control_in(s, "exit_run",
                                                                                            {"run_id": 9}))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(ControlCommand)) == 1


def test_bind_when_the_host_is_not_loopback_then_the_api_refuses_to_start(capsys, monkeypatch):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert main(["--host", "0.0.0.0", "--port", "1"]) == 2
    assert "refusing to bind 0.0.0.0" in capsys.readouterr().err
    monkeypatch.setenv("APP__API__RATE_API", "lots")
    assert main(["--port", "1"]) == 2
    assert "APP__API__RATE_API" in capsys.readouterr().err
