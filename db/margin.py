"""Margin checks before a strategy executes: the service's answers to margin_check commands, and the gate Execute
passes through.

Only the service calls the broker. The Strategies page asks for a check with a ``margin_check`` control command
({strategy_id, accounts: [[account_id, multiplier], ...]}); the service prices each account's basket with the
broker's /margin and reads its available cash from /funds, and writes one ``margin_checks`` row per account
(``record_checks``). The page shows them, and Execute hands the command id to ``db.strategies.execute_plan``,
which (in its one write transaction, before any intent exists) refuses every account whose check shows a
shortfall: that account gets no run and no order, the others go ahead. A check that does not match what Execute
would send (another multiplier, strikes that moved with the underlying, or older than the page's max age) stops
Execute with "check margin again": nothing is written. An account the broker could not price (no margin API on
its gateway) is not refused here; the broker's own funds check still applies to its orders.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from db import Database
from db.commands import CommandError
from db.models import AuditLog, ControlCommand, MarginCheck, utcnow


@dataclass(frozen=True)
class CheckResult:
    account_id: int
    multiplier: int
    plan: list  # [[symbol, action, quantity], ...] as priced
    required: float | None = None
    available: float | None = None
    error: str = ""


def plan_of(legs, multiplier: int) -> list[list]:
    """What an account at ``multiplier`` trades, leg by leg: [[symbol, action, quantity], ...]."""
    return [[leg.symbol, leg.action, leg.quantity * multiplier] for leg in legs]


def record_checks(s, command_id: int, strategy_id: int, results: list[CheckResult]) -> None:
    """The service's answers for one command (replacing any earlier answer to it: a restart re-runs it)."""
    s.execute(delete(MarginCheck).where(MarginCheck.command_id == command_id))
    for r in results:
        s.add(MarginCheck(command_id=command_id, strategy_id=strategy_id, account_id=r.account_id,
                          multiplier=r.multiplier, plan_json=json.dumps(r.plan), required=r.required,
                          available=r.available, error=r.error[:256]))


def shortfall(required: float | None, available: float | None) -> float:
    if required is None or available is None:
        return 0.0
    return max(0.0, required - available)


def check_rows(db: Database, command_id: int) -> list[dict]:
    """The page's view of one command's answers (empty while the service is still asking)."""
    with db.read() as s:
        rows = s.scalars(select(MarginCheck).where(MarginCheck.command_id == command_id).order_by(MarginCheck.id))
        return [dict(account_id=r.account_id, multiplier=r.multiplier, required=r.required, available=r.available,
                     shortfall=shortfall(r.required, r.available), error=r.error, checked_at=r.checked_at)
                for r in rows]


def refusal_text(required: float, available: float) -> str:
    return (f"needs ₹{required:,.0f} margin, has ₹{available:,.0f} available: short by "
            f"₹{shortfall(required, available):,.0f}")


def gate(s, command_id: int, strategy_id: int, plans: dict[int, tuple[int, list]], names: dict[int, str],
         max_age_s: float) -> dict[int, str]:
    """Inside Execute's write transaction: {account_id: refusal} for each account the check shows short of
    margin (those get no run). CommandError (nothing written) when the check does not cover what Execute would
    send. Each refusal is written to the audit log."""
    rows = {r.account_id: r for r in s.scalars(select(MarginCheck).where(MarginCheck.command_id == command_id))}
    for aid, (multiplier, plan) in plans.items():
        who = f"account '{names.get(aid, aid)}'"
        r = rows.get(aid)
        if r is None or r.strategy_id != strategy_id or r.multiplier != multiplier:
            raise CommandError(f"The margin check does not cover {who} at {multiplier}×; check margin again")
        if utcnow() - r.checked_at > timedelta(seconds=max_age_s):
            raise CommandError(f"The margin check is older than {max_age_s:.0f} s; check margin again")
        if json.loads(r.plan_json) != plan:
            raise CommandError(f"The strikes moved since the margin check of {who}; check margin again")
    return refuse_short(s, strategy_id, [CheckResult(r.account_id, r.multiplier, [], r.required, r.available,
                                                     r.error) for r in rows.values() if r.account_id in plans])


def refuse_short(s, strategy_id: int, answers: list[CheckResult], actor: str = "ui") -> dict[int, str]:
    """{account_id: refusal} for each answer short of margin, each written to the audit log in the caller's
    transaction. An account its broker could not price is not refused: the broker's own funds check applies."""
    refused: dict[int, str] = {}
    for r in answers:
        if not r.error and shortfall(r.required, r.available) > 0:
            refused[r.account_id] = refusal_text(r.required, r.available)
            s.add(AuditLog(actor=actor, action="margin_refused",
                           details=f"strategy {strategy_id} on account {r.account_id}: {refused[r.account_id]}"))
    return refused


def command_state(db: Database, command_id: int) -> tuple[str, str]:
    """(status, result) of a margin_check command row: queued while the service asks, then done / failed."""
    with db.read() as s:
        c = s.get(ControlCommand, command_id)
        return (c.status, c.result) if c is not None else ("missing", "")
