"""Webhook rules and their alerts: a TradingView / Chartink alert posted to /webhook/<token> becomes an action.

A rule (configured on the API & Webhooks page) is one of:
  * ``strategy``: an alert ``{"strategy": "<name>", "action": "enter" | "exit"}`` executes the rule's strategy on
    its accounts (enter) or exits the strategy's live runs on them (exit). ``strategy`` may be left out; when it is
    given it must name the rule's strategy. ``action`` may be left out when the rule has a default action.
  * ``symbols``: a symbol list (Chartink's ``{"stocks": "SBIN,INFY", ...}`` or ``{"symbols": [...]}``) becomes one
    order of the rule's fixed size, side, exchange and product per symbol and account (Quick Order's validation
    and fat-finger guards; an order that needs a confirmation is refused, as nobody is there to confirm it).

A retried delivery does nothing new: an alert with an id (``alert_id`` or ``id``) is done once per rule; one
without is a repeat when its body equals an earlier one within ``dedupe_s``. The check, the action's command rows
and the alert's log row are one write transaction, and the command rows carry keys derived from the alert's row,
so a repeat can neither slip past the check nor write twice. Every alert is logged with what it did.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from urllib.parse import parse_qsl

import pandas as pd
from sqlalchemy import select

from config import MarketSettings, OrderGuardSettings
from db import Database
from db.commands import (ACTIONS, EXCHANGES, PRODUCTS, CommandError, OrderRequest, enqueue_control_in,
                         enqueue_order_in)
from db.commands import _quantity as checked_quantity
from db.wake import notify
from db.models import Account, Strategy, StrategyRun, WebhookAlert, WebhookRule, utcnow
from db.run_fsm import LIVE_RUN
from db.strategies import execute_in
from db.vocab import AlertOutcome

NAME_RE = re.compile(r"^[A-Za-z0-9 _\-]{1,64}$")
TOKEN_RE = re.compile(r"^[0-9a-f]{48}$")
MAX_SYMBOLS = 50
MAX_BODY_LOGGED = 4000
ENTER, EXIT = "enter", "exit"
ACTION_WORDS = {"enter": ENTER, "entry": ENTER, "exit": EXIT, "close": EXIT}


class RuleKind(StrEnum):
    STRATEGY = "strategy"
    SYMBOLS = "symbols"


@dataclass(frozen=True)
class RuleView:
    id: int
    name: str
    kind: str
    strategy_id: int | None
    account_ids: tuple[int, ...]
    default_action: str
    order_action: str
    quantity: int
    exchange: str
    product: str


@dataclass(frozen=True)
class AlertResult:
    alert_id: int
    outcome: str
    message: str
    data: dict


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _account_ids(s, account_ids) -> list[int]:
    if not isinstance(account_ids, list | tuple) or not account_ids:
        raise CommandError("Choose at least one account")
    ids = []
    for a in account_ids:
        acct = s.get(Account, a) if isinstance(a, int) and not isinstance(a, bool) else None
        if acct is None or not acct.is_active:
            raise CommandError(f"Unknown or deactivated account '{str(a)[:20]}'")
        ids.append(acct.id)
    return list(dict.fromkeys(ids))


def create_rule(db: Database, name: str, kind: str, account_ids: list[int], *, strategy_id: int | None = None,
                default_action: str = "", order_action: str = "BUY", quantity=0, exchange: str = "NSE",
                product: str = "MIS") -> tuple[int, str]:
    """Validate and save a rule; returns (id, token). The token is returned here only (kept as its SHA-256)."""
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise CommandError("Rule name must be 1-64 characters: letters, digits, space, _ or -")
    if kind not in set(RuleKind):
        raise CommandError("Rule kind must be 'strategy' or 'symbols'")
    fields: dict = {}
    if kind == RuleKind.STRATEGY:
        if default_action not in ("", ENTER, EXIT):
            raise CommandError("Default action must be enter, exit or none")
        fields.update(default_action=default_action)
    else:
        order_action, exchange, product = (str(v or "").strip().upper() for v in (order_action, exchange, product))
        if order_action not in ACTIONS:
            raise CommandError("Order side must be BUY or SELL")
        if exchange not in EXCHANGES:
            raise CommandError(f"Exchange must be one of {', '.join(sorted(EXCHANGES))}")
        if product not in PRODUCTS:
            raise CommandError("Product must be MIS, CNC or NRML")
        fields.update(order_action=order_action, quantity=checked_quantity(quantity), exchange=exchange,
                      product=product)
    token = secrets.token_hex(24)
    with db.write() as s:
        if kind == RuleKind.STRATEGY:
            st = s.get(Strategy, strategy_id) if isinstance(strategy_id, int) else None
            if st is None or st.deleted_at is not None:
                raise CommandError(f"Unknown strategy '{str(strategy_id)[:20]}'")
            fields["strategy_id"] = st.id
        ids = _account_ids(s, account_ids)
        if s.scalar(select(WebhookRule.id).where(WebhookRule.name == name)):
            raise CommandError(f"A webhook rule named '{name}' already exists")
        rule = WebhookRule(name=name, kind=str(kind), token_hash=_digest(token), token_prefix=token[:8],
                           account_ids_json=json.dumps(ids), **fields)
        s.add(rule)
        s.flush()
        return rule.id, token


def revoke_rule(db: Database, rule_id: int) -> None:
    with db.write() as s:
        rule = s.get(WebhookRule, int(rule_id))
        if rule is None:
            raise CommandError(f"No webhook rule with id {rule_id}")
        if rule.revoked_at is None:
            rule.revoked_at = utcnow()


def rule_for_token(db: Database, token: str) -> RuleView | None:
    """The live rule whose token this is, or None (malformed, unknown or revoked)."""
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        return None
    with db.read() as s:
        r = s.scalar(select(WebhookRule).where(WebhookRule.token_hash == _digest(token),
                                               WebhookRule.revoked_at.is_(None)))
        if r is None:
            return None
        return RuleView(r.id, r.name, r.kind, r.strategy_id, tuple(json.loads(r.account_ids_json or "[]")),
                        r.default_action, r.order_action, r.quantity, r.exchange, r.product)


def parse_body(raw: bytes, content_type: str = "") -> dict:
    """An alert body as a mapping: JSON (TradingView sends valid JSON as text/plain too), else a form, else the
    text as {"message": ...}."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    if value is not None:
        raise CommandError("Alert body must be a JSON object, a form or plain text")
    if "form" in content_type or ("=" in text and "\n" not in text):
        return dict(parse_qsl(text, keep_blank_values=True))
    return {"message": text[:MAX_BODY_LOGGED]}


def dedupe_key(payload: dict, raw: bytes) -> tuple[str, bool]:
    """(key, windowed): the alert's own id when it has one, else the hash of its body (a repeat only within the
    window: the same signal tomorrow is a new alert)."""
    alert_id = payload.get("alert_id", payload.get("id"))
    if isinstance(alert_id, str | int) and not isinstance(alert_id, bool) and str(alert_id).strip():
        return "id:" + str(alert_id).strip()[:64], False
    return "body:" + hashlib.sha256(raw).hexdigest(), True


def receive(db: Database, rule: RuleView, raw: bytes, content_type: str = "", *, dedupe_s: float,
            entries_ok: bool, guards: OrderGuardSettings | None = None, secret: str = "",
            market: MarketSettings | None = None) -> AlertResult:
    """Carry out one alert (its raw body) for ``rule`` (see the module docstring) and log it, a body that cannot
    be read included. ``entries_ok``: the service can take new entries now (else entries are refused with the
    reason; exits are still requested). ``secret`` (the token) is blanked in the logged body. ``market``: the time
    rules (no new entries after the cut-off; default settings if None)."""
    try:
        payload, unreadable = parse_body(raw, content_type), ""
    except CommandError as exc:
        payload, unreadable = {}, str(exc)
    key, windowed = dedupe_key(payload, raw)
    body = raw.decode("utf-8", errors="replace")[:MAX_BODY_LOGGED]
    if secret:
        body = body.replace(secret, "***")
    with db.write() as s:
        q = select(WebhookAlert).where(WebhookAlert.rule_id == rule.id, WebhookAlert.dedupe_key == key,
                                       WebhookAlert.outcome.in_([AlertOutcome.DONE, AlertOutcome.PARTIAL]))
        if windowed:
            q = q.where(WebhookAlert.received_at >= utcnow() - timedelta(seconds=dedupe_s))
        first = s.scalars(q.order_by(WebhookAlert.id).limit(1)).first()
        if first is not None:
            dup = WebhookAlert(rule_id=rule.id, dedupe_key=key, body=body, outcome=AlertOutcome.DUPLICATE,
                               message=f"repeat of alert #{first.id}: nothing done", result_json=first.result_json,
                               first_alert_id=first.id)
            s.add(dup)
            s.flush()
            return AlertResult(dup.id, dup.outcome, dup.message, json.loads(first.result_json))
        alert = WebhookAlert(rule_id=rule.id, dedupe_key=key, body=body, outcome=AlertOutcome.ERROR)
        s.add(alert)
        s.flush()
        try:
            if unreadable:
                raise CommandError(unreadable)
            outcome, message, data = _act(s, rule, payload, alert.id, entries_ok, guards, market)
        except CommandError as exc:  # checked before any row was added: only the log row is written
            outcome, message, data = AlertOutcome.ERROR, str(exc), {}
        alert.outcome, alert.message, alert.result_json = outcome, message[:512], json.dumps(data)
    if outcome != AlertOutcome.ERROR:
        notify(db.path)
    return AlertResult(alert.id, outcome, message, data)


def _alert_key(alert_id: int, *parts) -> str:
    return _digest(":".join(map(str, ("webhook", alert_id, *parts))))[:32]


def _act(s, rule: RuleView, payload: dict, alert_id: int, entries_ok: bool, guards: OrderGuardSettings | None,
         market: MarketSettings | None = None) -> tuple[str, str, dict]:
    if rule.kind == RuleKind.SYMBOLS:
        return _orders(s, rule, payload, alert_id, entries_ok, guards, market)
    st = s.get(Strategy, rule.strategy_id) if rule.strategy_id else None
    if st is None or st.deleted_at is not None:
        raise CommandError("the rule's strategy no longer exists")
    named = payload.get("strategy")
    if named not in (None, "") and str(named).strip().casefold() != st.name.casefold():
        raise CommandError(f"the alert names strategy '{str(named)[:64]}' but this rule executes '{st.name}'")
    word = str(payload.get("action") or rule.default_action or "").strip().lower()
    action = ACTION_WORDS.get(word)
    if action is None:
        raise CommandError(f"the alert's action must be enter or exit (got '{word[:20]}')")
    if action == EXIT:
        runs = list(s.scalars(select(StrategyRun.id).where(
            StrategyRun.strategy_id == st.id, StrategyRun.account_id.in_(rule.account_ids),
            StrategyRun.status.in_(list(LIVE_RUN))).order_by(StrategyRun.id)))
        commands = [enqueue_control_in(s, "exit_run", {"run_id": r}) for r in runs]
        msg = f"exit requested for run(s) {', '.join(map(str, runs))}" if runs else f"no live runs of '{st.name}'"
        return AlertOutcome.DONE, msg, {"action": EXIT, "run_ids": runs, "command_ids": commands}
    if not entries_ok:
        raise CommandError("the background service is down: entries are not queued (nothing was written)")
    group = _alert_key(alert_id)
    runs = execute_in(s, st.id, list(rule.account_ids), group, market=market).run_ids
    return (AlertOutcome.DONE, f"executed '{st.name}' on {len(runs)} account(s): run(s) {', '.join(map(str, runs))}",
            {"action": ENTER, "group_id": group, "run_ids": runs})


def symbols_of(payload: dict) -> list[str]:
    raw = payload.get("stocks", payload.get("symbols"))
    items = raw if isinstance(raw, list) else str(raw or "").split(",")
    out = [str(x).strip().upper() for x in items if str(x).strip()]
    if not out:
        raise CommandError("the alert lists no symbols ('stocks' or 'symbols')")
    if len(out) > MAX_SYMBOLS:
        raise CommandError(f"the alert lists {len(out)} symbols; at most {MAX_SYMBOLS} are taken")
    return list(dict.fromkeys(out))


def _orders(s, rule: RuleView, payload: dict, alert_id: int, entries_ok: bool, guards: OrderGuardSettings | None,
            market: MarketSettings | None = None) -> tuple[str, str, dict]:
    symbols = symbols_of(payload)
    if not entries_ok:
        raise CommandError("the background service is down: orders are not queued (nothing was written)")
    queued, refused = [], []
    for acct in rule.account_ids:
        for sym in symbols:
            req = OrderRequest(account_id=acct, symbol=sym, exchange=rule.exchange, action=rule.order_action,
                               quantity=rule.quantity, product=rule.product, strategy_tag=rule.name)
            try:  # every check comes before the order's first row: a refusal leaves the others to go on
                intent_id, _ = enqueue_order_in(s, req, _alert_key(alert_id, acct, sym), source="webhook",
                                                guards=guards, market=market)
                queued.append({"account_id": acct, "symbol": sym, "intent_id": intent_id})
            except CommandError as exc:
                refused.append({"account_id": acct, "symbol": sym, "reason": str(exc)})
    if not queued:
        raise CommandError("no order queued: " + "; ".join(f"{r['symbol']}: {r['reason']}" for r in refused)[:400])
    outcome = AlertOutcome.PARTIAL if refused else AlertOutcome.DONE
    msg = f"queued {len(queued)} order(s)" + (f", refused {len(refused)}: " + "; ".join(
        f"{r['symbol']}: {r['reason']}" for r in refused) if refused else "")
    return outcome, msg, {"orders": queued, "refused": refused}


def list_rules(db: Database) -> pd.DataFrame:
    cols = ["id", "name", "kind", "strategy", "accounts", "default_action", "order", "token_prefix", "created_at",
            "revoked_at"]
    with db.read() as s:
        names = dict(s.execute(select(Account.id, Account.name)).all())
        strategies = dict(s.execute(select(Strategy.id, Strategy.name)).all())
        rows = [(r.id, r.name, r.kind, strategies.get(r.strategy_id, ""),
                 ", ".join(names.get(a, str(a)) for a in json.loads(r.account_ids_json or "[]")), r.default_action,
                 f"{r.order_action} {r.quantity} {r.exchange} {r.product}" if r.kind == RuleKind.SYMBOLS else "",
                 r.token_prefix, r.created_at, r.revoked_at)
                for r in s.scalars(select(WebhookRule).order_by(WebhookRule.id.desc()))]
    return pd.DataFrame(rows, columns=cols)


def list_alerts(db: Database, rule_id: int | None = None, limit: int = 200) -> pd.DataFrame:
    cols = ["id", "received_at", "rule", "outcome", "message", "body"]
    q = select(WebhookAlert, WebhookRule.name).join(WebhookRule, WebhookRule.id == WebhookAlert.rule_id)
    if rule_id is not None:
        q = q.where(WebhookAlert.rule_id == int(rule_id))
    with db.read() as s:
        rows = [(a.id, a.received_at, name, a.outcome, a.message, a.body)
                for a, name in s.execute(q.order_by(WebhookAlert.id.desc()).limit(int(limit)))]
    return pd.DataFrame(rows, columns=cols)
