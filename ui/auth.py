"""The app's optional password: argon2 hashing and verifying (argon2-cffi), and the login form. The password is
never stored: only its argon2 hash (scripts/set_password.py writes it)."""
from __future__ import annotations

import time

import streamlit as st
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
FAILED_DELAY_S = 1.0  # a wrong password costs this long: slows guessing from one session


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("the password must not be empty")
    return _hasher.hash(password)


def is_hash(value: str) -> bool:
    """Whether ``value`` reads as an argon2 hash (a plain password put where the hash belongs does not)."""
    try:
        _hasher.check_needs_rehash(value)
    except (InvalidHashError, ValueError):
        return False
    return value.startswith("$argon2")


def verify(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password or "")
    except (VerificationError, InvalidHashError):
        return False


def login_form(stored_hash: str, now: float, reason: str = "") -> float | None:
    """The password form. Returns the login time (``now``) on a right password, None otherwise."""
    st.title(":material/lock: AlgoMirror")
    if reason:
        st.info(reason)
    with st.form("auth.form"):
        password = st.text_input("Password", type="password", key="auth.password")
        sent = st.form_submit_button("Log in", type="primary")
    if not sent:
        return None
    if verify(stored_hash, password):
        return now
    time.sleep(FAILED_DELAY_S)
    st.error("Wrong password.")
    return None
