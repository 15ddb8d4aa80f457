"""Page plumbing (the only place that builds the Database): settings, cached Database, page header.

Every page starts with ``db, settings, health = init_page("Title")``: it shows the service-down banner when
the heartbeat is stale or absent; pages disable order entry when ``health["orders_ok"]`` is False
(service or dispatcher down).
"""
from __future__ import annotations

import time

import streamlit as st

from config import is_loopback, load_settings, password_hash_of
from db import Database
from db import repo
from db.clock import apply_clock
from db.accounts import AccountError
from db.commands import CommandError, enqueue_control
from db.errors import DbError
from db.vocab import CommandStatus
from db.order_fsm import Status
from ui.auth import is_hash, login_form
from ui.widgets import health_badge, service_banner


# What a form shows as its message (never a traceback): bad input, and a database that could not take the write
# ("disk full: nothing was written", "database busy: nothing was written, try again").
USER_ERRORS = (CommandError, AccountError, DbError)
# Badge colours of order statuses (ui.widgets.status_chip): green filled, blue working, orange outcome unknown,
# red refused, gray not yet sent or withdrawn.
ORDER_COLORS = {Status.FILLED: "green", Status.PLACED: "blue", Status.PARTIALLY_FILLED: "blue",
                Status.QUEUED: "gray", Status.CLAIMED: "gray", Status.SENT: "orange", Status.UNKNOWN: "orange",
                Status.REJECTED: "red", Status.DENIED: "red", Status.CANCELLED: "gray"}


@st.cache_resource(show_spinner=False)
def _database(path: str, busy_timeout_ms: int, key_file: str, fernet_key: str, max_pages: int) -> Database:
    return Database(path, busy_timeout_ms, key_file, fernet_key, max_pages)


def get_settings():
    settings = load_settings()
    apply_clock(settings.market)  # once per process: a clock start instant is where this process's clock starts
    return settings


def get_db(settings=None) -> Database:
    """One Database per process and DB path (the path is part of the key, so tests can switch files)."""
    s = settings or get_settings()
    return _database(s.db.path, s.db.busy_timeout_ms, str(s.key_file), s.secrets.fernet_key, s.db.max_pages)


NO_PASSWORD_OFF_LOOPBACK = ("This app is bound to {address} without a password: anyone who can reach it could "
                            "place orders. Set one with `python -m scripts.set_password`, or bind to 127.0.0.1.")


def _login_expired(settings) -> bool:
    at = st.session_state.get("auth.at")
    return at is None or time.time() - at >= settings.ui.session_timeout_min * 60


def require_login(settings=None) -> None:
    """The one login gate, called by app.py before navigation: with a password configured (config.password_hash_of)
    nothing below it renders until the password is given, and a login lasts session_timeout_min. Without one, the
    app only serves a loopback address (the launcher refuses to start otherwise; this catches `streamlit run`).
    init_page calls it too (a page run on its own, see there); the second call in a run only reads the session."""
    settings = settings or get_settings()
    stored = password_hash_of(settings)
    address = st.get_option("server.address") or ""
    if not stored:
        if not is_loopback(address):
            st.error(NO_PASSWORD_OFF_LOOPBACK.format(address=address or "every interface"), icon=":material/lock:")
            st.stop()
        return
    if not is_hash(stored):  # fail closed: a plain password or a damaged file must not open the app
        st.error("The configured password hash (APP__UI__PASSWORD_HASH or the password file) is not an argon2 hash: "
                 "set the password again with `python -m scripts.set_password`.", icon=":material/lock:")
        st.stop()
    ss = st.session_state
    if not _login_expired(settings):
        return
    reason = "Your session timed out: log in again." if "auth.at" in ss else ""
    ss.pop("auth.at", None)
    at = login_form(stored, time.time(), reason)
    if at is not None:
        ss["auth.at"] = at
        st.rerun()
    st.stop()


def toast_new_alerts(db: Database, most: int = 3) -> None:
    """Alerts raised since this browser session last looked, as toasts (the newest ``most``; Service Health lists
    them all). A new session starts from the newest alert: it is not shown the history as news."""
    seen = st.session_state.get("alerts.seen_id")
    fresh = repo.alerts(db, after_id=seen or 0, limit=most if seen is not None else 1)
    if not fresh.empty:
        st.session_state["alerts.seen_id"] = int(fresh["id"].max())
    elif seen is None:
        st.session_state["alerts.seen_id"] = 0
    if seen is None:
        return
    for message in reversed(fresh["message"].tolist()):
        st.toast(message[:300], icon=":material/notification_important:")


def kill_switch(db: Database) -> None:
    """Flatten every account, from the sidebar of every page (with a confirmation), and its progress."""
    with st.sidebar.expander(":material/emergency: Kill switch"):
        st.caption("Cancels every working order, closes every position at the broker (BUY exits first), exits "
                   "every strategy run, then halts each account until re-armed.")
        sure = st.checkbox("Yes, flatten ALL accounts", key="kill.confirm")
        if st.button("Flatten all", key="kill.flatten_all", type="primary", disabled=not sure):
            try:
                cmd = enqueue_control(db, "flatten_all", {})
                st.success(f"Flatten requested (command #{cmd}).")
            except USER_ERRORS as exc:
                st.error(str(exc))
        last = repo.last_flatten(db)
        if last is not None:
            if last["status"] == CommandStatus.QUEUED:
                st.warning(f"Flatten #{last['id']} in progress…")
            else:
                (st.info if last["status"] == CommandStatus.DONE else st.error)(
                    f"Flatten #{last['id']} {last['status']}: {last['result']}")


def live_sidebar(db: Database, settings, health: dict) -> None:
    """The service badge and new alerts, refreshed on their own every refresh_s on every page: a page the trader
    only looks at must not keep saying 'Service up' while the service is frozen, nor hide an alert until the next
    click."""
    first = {"health": health}  # the page's own read serves the first draw

    @st.fragment(run_every=settings.ui.refresh_s)
    def badge_and_alerts():
        if password_hash_of(settings) and _login_expired(settings):  # a live page must not outlive its login
            # A reload, not st.rerun(): a rerun started from a fragment while the page's other live fragments run
            # left the browser with a blank app now and then. The reloaded page is a new session: the login form.
            st.html("<script>window.location.reload()</script>", unsafe_allow_javascript=True)
            return
        state = first.pop("health", None) or repo.service_state(db, settings.ui.service_stale_s)
        health_badge(state)
        toast_new_alerts(db)

    badge_and_alerts()


def live_banner(db: Database, settings, health: dict) -> None:
    """The service-down banner at the top of every page, re-read every refresh_s: a page the trader only looks
    at must say the service stopped without waiting for a click (the page's own run draws it only once)."""
    first = {"health": health}  # the page's own read serves the first draw

    @st.fragment(run_every=settings.ui.refresh_s)
    def banner():
        service_banner(first.pop("health", None) or repo.service_state(db, settings.ui.service_stale_s))

    banner()


def init_page(title: str, icon: str = ""):
    settings = get_settings()
    # Again here, for a page script run without app.py: until a session has run app.py's st.navigation, Streamlit
    # serves a deep link like /accounts in its legacy pages/ mode (the page file alone).
    require_login(settings)
    if password_hash_of(settings) and st.sidebar.button("Log out", key="auth.logout"):
        st.session_state.pop("auth.at", None)
        st.rerun()
    db = get_db(settings)
    health = repo.service_state(db, settings.ui.service_stale_s)
    live_banner(db, settings, health)
    with st.sidebar:
        live_sidebar(db, settings, health)
    kill_switch(db)
    st.title(f"{icon} {title}".strip())
    return db, settings, health
