"""Keys of the local API (api/): created on the API & Webhooks page, shown once, kept as an argon2 hash, revocable.

A key is ``amk_`` + 48 hex characters. Its first 8 hex characters are the prefix (stored in clear, shown on the
page) that finds the one row to verify against; the whole key is hex of log-mask length (db/logmask.py masks it
wherever it would appear). Argon2 verification costs tens of milliseconds by design, so a verified key is
remembered in this process by its SHA-256 (never the key itself); each call still reads the row, so a revoked key
is refused on its next call.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
from datetime import timedelta

import pandas as pd
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from db import Database
from db.commands import CommandError
from db.models import ApiKey, utcnow

KEY_RE = re.compile(r"^amk_([0-9a-f]{8})[0-9a-f]{40}$")
NAME_RE = re.compile(r"^[A-Za-z0-9 _.\-]{1,64}$")
TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is a hint on the page, not worth a write per call
_hasher = PasswordHasher()
_verified: dict[str, int] = {}  # sha256(key) -> key id, for keys this process has verified
_lock = threading.Lock()


def create_key(db: Database, name: str) -> tuple[int, str]:
    """A new key named ``name``: returns (id, the key). The key is returned here only; the database keeps its
    argon2 hash."""
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise CommandError("Key name must be 1-64 characters: letters, digits, space, '.', '_' or '-'")
    key = "amk_" + secrets.token_hex(24)
    digest = _hasher.hash(key)
    with db.write() as s:
        row = ApiKey(name=name, prefix=key[4:12], key_hash=digest)
        s.add(row)
        s.flush()
        return row.id, key


def revoke_key(db: Database, key_id: int) -> None:
    with db.write() as s:
        row = s.get(ApiKey, int(key_id))
        if row is None:
            raise CommandError(f"No API key with id {key_id}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def authenticate(db: Database, key: str | None) -> int | None:
    """The id of the live key ``key`` is, or None (missing, malformed, unknown, wrong or revoked)."""
    m = KEY_RE.match(key or "")
    if not m:
        return None
    digest = _digest(key)
    with _lock:
        known = _verified.get(digest)
    with db.read() as s:
        if known is not None:
            row = s.get(ApiKey, known)
            return known if row is not None and row.revoked_at is None else None
        rows = list(s.scalars(select(ApiKey).where(ApiKey.prefix == m.group(1), ApiKey.revoked_at.is_(None))))
    for row in rows:
        try:
            _hasher.verify(row.key_hash, key)
        except (VerificationError, InvalidHashError):
            continue
        with _lock:
            _verified[digest] = row.id
        return row.id
    return None


def touch(db: Database, key_id: int) -> None:
    """Record that the key was used (at most once a minute per key)."""
    now = utcnow()
    with db.read() as s:
        last = s.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
    if last is not None and now - last < TOUCH_EVERY:
        return
    with db.write() as s:
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))


def list_keys(db: Database) -> pd.DataFrame:
    """Every key for the page: id, name, prefix, created, last used, revoked (never the hash)."""
    cols = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    with db.read() as s:
        rows = [(k.id, k.name, k.prefix, k.created_at, k.last_used_at, k.revoked_at)
                for k in s.scalars(select(ApiKey).order_by(ApiKey.id.desc()))]
    return pd.DataFrame(rows, columns=cols)
