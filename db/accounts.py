"""Accounts: add / edit / delete, API key encrypted at rest, feed order (primary, then backups)."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlparse

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm.util import identity_key

from db import Database
from db.clock import ist_now_str
from db.crypto import decrypt, encrypt
from db.logmask import register_secret
from db.models import Account, AuditLog, OrderIntent, Position, RiskEvent, StrategyRun, utcnow
from db.rawsql import insert_row, raw_cursor, update_rows
from db.vocab import TradingState

NAME_RE = re.compile(r"^[A-Za-z0-9 _.\-]{1,64}$")


class AccountError(ValueError):
    """A clear, user-facing message; nothing was written."""


@dataclass(frozen=True)
class AccountView:
    id: int
    name: str
    broker: str
    host_url: str
    ws_url: str
    is_primary: bool
    backup_order: int | None
    is_active: bool
    status: str
    status_message: str
    last_checked_at: object

    @classmethod
    def of(cls, a: Account) -> "AccountView":
        return cls(**{f: getattr(a, f) for f in cls.__dataclass_fields__})


def _check_url(url: str, schemes: tuple[str, ...], what: str) -> str:
    url = (url or "").strip()
    p = urlparse(url)
    if len(url) > 256 or p.scheme not in schemes or not p.hostname:
        raise AccountError(f"{what} must look like {schemes[0]}://host:port (got '{url[:60]}')")
    return url.rstrip("/")


def _check_key(api_key: str) -> str:
    api_key = (api_key or "").strip()
    if not (16 <= len(api_key) <= 256) or any(c.isspace() for c in api_key):
        raise AccountError("API key must be 16-256 characters with no spaces")
    return api_key


def _check_backup(backup_order) -> int | None:
    if backup_order is None:
        return None
    if isinstance(backup_order, bool) or not str(backup_order).isdigit() or not (1 <= int(backup_order) <= 99):
        raise AccountError("Backup order must be a whole number between 1 and 99")
    return int(backup_order)


def add_account(db: Database, name: str, host_url: str, ws_url: str, api_key: str, *, is_primary: bool = False,
                backup_order: int | None = None, broker: str = "") -> int:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise AccountError("Name must be 1-64 characters: letters, digits, space, _ . -")
    host_url = _check_url(host_url, ("http", "https"), "Host URL")
    ws_url = _check_url(ws_url, ("ws", "wss"), "WebSocket URL")
    api_key = _check_key(api_key)
    backup_order = _check_backup(backup_order)
    register_secret(api_key)
    with db.write() as s:
        if s.scalar(select(func.count()).where(Account.name == name)):
            raise AccountError(f"An account named '{name}' already exists")
        has_primary = s.scalar(select(func.count()).where(Account.is_primary.is_(True)))
        if is_primary or not has_primary:
            s.execute(update(Account).values(is_primary=False))
            is_primary = True
        acct = Account(name=name, broker=broker[:64], host_url=host_url, ws_url=ws_url,
                       api_key_encrypted=encrypt(db.fernet, api_key), is_primary=is_primary,
                       backup_order=backup_order)
        s.add(acct)
        s.flush()
        s.add(AuditLog(actor="ui", action="account_added", details=f"account {acct.id} '{name}'"))
        return acct.id


def update_account(db: Database, account_id: int, *, host_url: str | None = None, ws_url: str | None = None,
                   api_key: str | None = None, is_primary: bool | None = None, backup_order: int | None = -1,
                   is_active: bool | None = None, daily_max_loss=-1, daily_max_profit=-1,
                   daily_trailing=-1) -> None:
    """``daily_max_loss`` / ``daily_max_profit`` / ``daily_trailing``: rupees > 0, or 0 / None for no limit (-1:
    unchanged)."""
    values: dict = {}
    for field_name, v, what in (("daily_max_loss", daily_max_loss, "daily max loss"),
                                ("daily_max_profit", daily_max_profit, "daily max profit"),
                                ("daily_trailing", daily_trailing, "daily trailing amount")):
        if v != -1:
            values[field_name] = _check_limit(v, what)
    if host_url is not None:
        values["host_url"] = _check_url(host_url, ("http", "https"), "Host URL")
    if ws_url is not None:
        values["ws_url"] = _check_url(ws_url, ("ws", "wss"), "WebSocket URL")
    if api_key:
        key = _check_key(api_key)
        register_secret(key)
        values.update(api_key_encrypted=encrypt(db.fernet, key), status="unchecked", status_message="")
    if backup_order != -1:
        values["backup_order"] = _check_backup(backup_order)
    if is_active is not None:
        values["is_active"] = bool(is_active)
    with db.write() as s:
        if not s.get(Account, account_id):
            raise AccountError(f"Unknown account {account_id}")
        if is_primary:
            s.execute(update(Account).values(is_primary=False))
            values["is_primary"] = True
        if values:
            s.execute(update(Account).where(Account.id == account_id).values(**values))
        s.add(AuditLog(actor="ui", action="account_updated",
                       details=f"account {account_id}: {sorted(k for k in values if k != 'api_key_encrypted')}"))


def _check_limit(v, what: str) -> float | None:
    if v is None or v == 0:
        return None
    if isinstance(v, bool):
        raise AccountError(f"The {what} must be a number of rupees")
    try:
        amount = float(v)
    except (TypeError, ValueError):
        raise AccountError(f"The {what} must be a number of rupees (got {str(v)[:20]!r})") from None
    if not math.isfinite(amount) or amount < 0:
        raise AccountError(f"The {what} must be a positive number of rupees, or 0 for none (got {v})")
    return amount


def delete_account(db: Database, account_id: int) -> None:
    with db.write() as s:
        acct = s.get(Account, account_id)
        if not acct:
            raise AccountError(f"Unknown account {account_id}")
        used = s.scalar(select(func.count()).select_from(OrderIntent).where(OrderIntent.account_id == account_id))
        used += s.scalar(select(func.count()).select_from(StrategyRun).where(StrategyRun.account_id == account_id))
        if used:
            raise AccountError("This account has orders or strategy runs; deactivate it instead of deleting")
        s.execute(delete(Account).where(Account.id == account_id))
        s.add(AuditLog(actor="ui", action="account_deleted", details=f"account {account_id} '{acct.name}'"))


def list_accounts(db: Database, active_only: bool = False) -> list[AccountView]:
    with db.read() as s:
        q = select(Account).order_by(Account.is_primary.desc(), Account.backup_order.is_(None),
                                     Account.backup_order, Account.id)
        if active_only:
            q = q.where(Account.is_active.is_(True))
        return [AccountView.of(a) for a in s.scalars(q)]


def feed_order(db: Database) -> list[AccountView]:
    """Accounts usable for the shared market-data feed: primary first, then backups by backup_order."""
    return [a for a in list_accounts(db, active_only=True) if a.is_primary or a.backup_order is not None]


def api_key_for(db: Database, account_id: int) -> str:
    """Plaintext key for the broker client only. Never log or display the result."""
    with db.read() as s:
        acct = s.get(Account, account_id)
        if not acct:
            raise AccountError(f"Unknown account {account_id}")
        key = decrypt(db.fernet, acct.api_key_encrypted)
    register_secret(key)
    return key


def set_status(db: Database, account_id: int, status: str, message: str = "", broker: str | None = None) -> None:
    with db.write() as s:
        set_status_in(s, account_id, status, message, broker)


def set_status_in(s, account_id: int, status: str, message: str = "", broker: str | None = None) -> None:
    """set_status inside the caller's write transaction (to commit it atomically with something else)."""
    values = {"status": status, "status_message": message[:512], "last_checked_at": utcnow()}
    if broker is not None:
        values["broker"] = broker[:64]
    s.execute(update(Account).where(Account.id == account_id).values(**values))


def status_of(s, account_id: int) -> tuple[str, str] | None:
    """(status, status_message) of the account, None if it no longer exists."""
    row = s.execute(select(Account.status, Account.status_message).where(Account.id == account_id)).first()
    return (row[0], row[1]) if row else None


def touch_checked(s, account_id: int, when) -> None:
    """The account's status still holds as of ``when`` (a call answered as before)."""
    s.execute(update(Account).where(Account.id == account_id).values(last_checked_at=when))


class SendGate(NamedTuple):
    name: str
    is_active: bool
    status: str
    trading_state: str
    trading_reason: str


SEND_GATE_SQL = "SELECT name, is_active, status, trading_state, trading_reason FROM accounts WHERE id = ?"


def send_gate(s, account_id: int) -> SendGate | None:
    """What the dispatcher checks before sending an order for the account, inside its own transaction (a plain
    statement: this runs once per order). None if the account no longer exists."""
    row = raw_cursor(s).execute(SEND_GATE_SQL, (account_id,)).fetchone()
    return None if row is None else SendGate(row[0], bool(row[1]), row[2], row[3], row[4])


def set_trading_state(s, account_id: int, state: TradingState | str, reason: str, actor: str,
                      until: str | None = None) -> bool:
    """In the caller's write transaction: the account's trading state, with an audit row and a risk event (shown
    on the Risk Monitor) when it changes. Returns False if nothing changed (nothing written). ``reason`` is what a
    denied entry will say (e.g. 'daily max loss ₹5,000 at 10:42 IST'). ``until`` (halts only): the ISO date the
    halt lasts through, lifted at the first check on a later trading day ('' = until re-armed by hand; None = a
    new halt is by hand, an existing one keeps its own). A halt given another ``until`` (the trader halting an
    account a daily limit halted) takes the new one, with its reason."""
    state = TradingState(state)
    # plain SQL on the session's connection: an account limit's trip runs this inside the transaction its first
    # close waits for (each ORM statement here cost ~1 ms of CPU); a loaded Account is expired below, so ORM
    # callers read the new state
    cur = raw_cursor(s)
    row = cur.execute("SELECT name, trading_state, trading_until FROM accounts WHERE id = ?", (account_id,)).fetchone()
    if row is None:
        raise AccountError(f"Account {account_id} does not exist")
    name, before, held_until = row
    same = before == state.value
    if same and (state != TradingState.HALTED or until is None or until == (held_until or "")):
        return False
    until = (until or "") if state == TradingState.HALTED else ""
    now = utcnow()
    update_rows(cur, Account.__table__, dict(trading_state=state.value, trading_reason=reason[:256],
                                             trading_changed_at=now, trading_until=until), "id = ?", (account_id,))
    insert_row(cur, AuditLog.__table__, dict(actor=actor[:32], action="trading_state", details=json.dumps(
        dict(account_id=account_id, account=name, before=before, after=state.value, reason=reason[:256],
             until=until))), now)
    insert_row(cur, RiskEvent.__table__, dict(
        account_id=account_id, event_type=f"account_{state.value}"[:32], action=state.value, ts_utc=now,
        ts_ist=ist_now_str(), message=f"{name}: {before} -> {state.value}" + (f" ({reason})" if reason else "")),
        now)
    loaded = s.identity_map.get(identity_key(Account, account_id))
    if loaded is not None:
        s.expire(loaded)
    return True


def rearm_due(s, today: str) -> list[tuple[int, str, str]]:
    """(id, name, reason) of the halted accounts whose halt lasted through a day before ``today`` (ISO; the caller
    asks on trading days only)."""
    return [tuple(r) for r in s.execute(select(Account.id, Account.name, Account.trading_reason).where(
        Account.trading_state == TradingState.HALTED.value, Account.trading_until != "",
        Account.trading_until < today).order_by(Account.id))]


class LimitRow(NamedTuple):
    id: int
    name: str
    max_loss: float | None
    max_profit: float | None
    trailing: float | None
    trading_state: str
    day_peak: float | None
    day_peak_date: str | None


def limit_rows(s) -> list[LimitRow]:
    """Every account's day P&L limits, trading state and stored day peak (the limits of one with none are None)."""
    return [LimitRow(*r) for r in s.execute(select(
        Account.id, Account.name, Account.daily_max_loss, Account.daily_max_profit, Account.daily_trailing,
        Account.trading_state, Account.day_peak, Account.day_peak_date).order_by(Account.id))]


def save_day_peaks(s, peaks: list[tuple[int, str, float]]) -> None:
    """In the caller's write transaction: (account id, trading day ISO, peak) of the accounts whose day P&L peak
    rose. Returns nothing."""
    for account_id, day, peak in peaks:
        s.execute(update(Account).where(Account.id == account_id).values(day_peak=peak, day_peak_date=day))


def day_positions(s, account_ids: list[int], day: str | None = None) -> list[tuple[int, str, str, int, float, float,
                                                                             float]]:
    """(account id, symbol, exchange, quantity, average price, last price, realised P&L) of every position the
    broker reported for these accounts today (account sync's positionbook rows, closed ones included).
    ``day`` (ISO trading day): only accounts whose positionbook was read on that day; the rows of one not read
    yet today are yesterday's book (its realised loss would trip today's limit the moment it is re-armed)."""
    if not account_ids:
        return []
    q = select(Position.account_id, Position.symbol, Position.exchange, Position.quantity, Position.average_price,
               Position.ltp, Position.realized_pnl).where(Position.account_id.in_(account_ids))
    if day is not None:
        q = q.join(Account, Account.id == Position.account_id).where(Account.positions_day == day)
    return [tuple(r) for r in s.execute(q)]
