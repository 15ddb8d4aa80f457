"""margin_check control commands: price a strategy's basket on each account with the broker's /margin and read
the account's available cash from /funds (reads only: retried by the client), then write the answers
(db/margin.py record_checks) and finish the command.

It runs on a thread of its own, like a flatten: a broker that is slow to answer (its reads back off for up to a
minute) must not hold up the control commands queued behind it. The accounts are asked in parallel.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from broker.errors import BrokerError
from db.margin import CheckResult, plan_of, record_checks, shortfall
from db.strategies import resolved_strategy
from db.vocab import CommandStatus
from services.context import ServiceContext
from services.control import DeferredRuns, finish_deferred

log = logging.getLogger("services.margin_check")


class MarginChecker:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self._runs = DeferredRuns("margin")

    def start(self, command_id: int, payload: dict) -> bool:
        """Carry out command ``command_id`` (a clean margin_check payload) on a thread (once: False if running)."""
        return self._runs.start(command_id, self._run, payload)

    def _run(self, command_id: int, payload: dict) -> None:
        try:
            summary, status = self.check(command_id, payload), CommandStatus.DONE
        except Exception as exc:  # noqa: BLE001 - the page shows it on the command row
            log.warning("margin check %s failed: %s", command_id, exc)
            summary, status = f"{type(exc).__name__}: {exc}", CommandStatus.FAILED
        self._finish(command_id, status, summary)

    def _finish(self, command_id: int, status: CommandStatus, summary: str) -> None:
        finish_deferred(self.ctx.db, command_id, status, summary, "margin check", 10)

    def check(self, command_id: int, payload: dict) -> str:
        """Ask every account, write the answers; returns the command's summary."""
        sid = payload["strategy_id"]
        results = self.answers(sid, payload["accounts"])
        with self.ctx.db.write() as s:
            record_checks(s, command_id, sid, results)
        short = sum(1 for r in results if not r.error and shortfall(r.required, r.available) > 0)
        failed = sum(1 for r in results if r.error)
        return f"{len(results)} account(s) checked: {short} short of margin, {failed} not priced"

    def answers(self, strategy_id: int, accounts: list) -> list[CheckResult]:
        """Each account's broker asked, in parallel, for the margin of the strategy's basket as it resolves now
        (at the account's multiplier, ``accounts`` [[account_id, multiplier], ...]) and for its available cash.
        CommandError when the legs do not resolve (no live price)."""
        product, legs = resolved_strategy(self.ctx.db, strategy_id)
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(accounts))), thread_name_prefix="margin") as pool:
            return list(pool.map(lambda am: self.account(am[0], am[1], product, legs), accounts))

    def account(self, account_id: int, multiplier: int, product: str, legs) -> CheckResult:
        plan = plan_of(legs, multiplier)
        positions = [dict(symbol=sym, exchange=leg.exchange, action=action, quantity=qty, product=product,
                          pricetype="MARKET", price=0, trigger_price=0)
                     for leg, (sym, action, qty) in zip(legs, plan, strict=True)]
        try:
            client = self.ctx.client(account_id)
            required = float(client.margin(positions)["total_margin_required"])
            available = float(client.funds()["availablecash"])
        except KeyError as exc:
            return CheckResult(account_id, multiplier, plan, error=f"no such value or account: {exc}")
        except (BrokerError, TypeError, ValueError) as exc:
            return CheckResult(account_id, multiplier, plan, error=str(getattr(exc, "message", exc))[:256])
        return CheckResult(account_id, multiplier, plan, required=round(required, 2), available=round(available, 2))
