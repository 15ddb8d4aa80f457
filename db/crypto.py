"""API keys encrypted at rest with Fernet.

The key comes from ``APP__SECRETS__FERNET_KEY`` or from a key file (created with mode 0600 beside the DB).
Plaintext keys are returned only to the code that calls the broker; they never go to logs, errors or the UI.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

_lock = threading.Lock()
_cache: dict[str, Fernet] = {}


class SecretError(RuntimeError):
    pass


def load_or_create_key(key_file: Path, env_key: str = "") -> bytes:
    if env_key:
        return env_key.encode()
    key_file = Path(key_file)
    if key_file.exists():
        return key_file.read_bytes().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # O_EXCL: two processes starting together cannot both create (and one overwrite) the key.
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return key_file.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def fernet_for(key_file: Path, env_key: str = "") -> Fernet:
    ident = env_key or str(Path(key_file).resolve())
    with _lock:
        if ident not in _cache:
            try:
                _cache[ident] = Fernet(load_or_create_key(key_file, env_key))
            except ValueError as exc:
                raise SecretError("the Fernet key is not valid (32 url-safe base64-encoded bytes)") from exc
        return _cache[ident]


def encrypt(f: Fernet, plaintext: str) -> bytes:
    return f.encrypt(plaintext.encode())


def decrypt(f: Fernet, token: bytes) -> str:
    try:
        return f.decrypt(token).decode()
    except InvalidToken as exc:
        raise SecretError("stored API key cannot be decrypted with this Fernet key") from exc


def mask(secret: str) -> str:
    """What the UI may show of a key: its length and last 4 characters."""
    if not secret:
        return ""
    return "•" * 8 + secret[-4:] if len(secret) > 8 else "•" * len(secret)
