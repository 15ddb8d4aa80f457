"""cancelorder for an order of ours still working at the broker (placed or partially filled), shared by the
control command ``cancel_intent`` and the risk manager (entries still working when their run exits, exits stuck
partially filled).

Never called inside a write transaction: the caller reads what to cancel, commits, then calls this. Nothing
changes in the database here: the poller sees the broker's 'cancelled' and the bookkeeping follows from that.
"""
from __future__ import annotations

import logging
import time

from broker.errors import BrokerError
from db.crypto import SecretError
from db.order_fsm import OPEN, values

log = logging.getLogger("services.cancels")
CANCELLABLE = values(OPEN)  # plain strings: callers render them into SQL


def send_cancel(ctx, account_id: int, broker_order_id: str, tag: str) -> dict:
    """POST cancelorder for one broker order (errors propagate: the caller decides how loud they are)."""
    return ctx.client(account_id).cancelorder(broker_order_id, tag)


class CancelSender:
    """Sends cancelorder for the orders a sweep finds still working, at most once per ``every_s`` per order:
    the sweep finds the same order again until the poller has seen it cancelled, and a cancel already on its way
    must not be repeated every sweep. The throttle is only a cache; what to cancel comes from the database."""

    def __init__(self, ctx, every_s: float = 2.0):
        self.ctx, self.every_s = ctx, every_s
        self._sent: dict[int, float] = {}

    def cancel(self, rows) -> list[int]:
        """``rows``: (intent id, account id, broker order id, strategy tag). Returns the intent ids sent now."""
        now, sent = time.monotonic(), []
        live = {r[0] for r in rows}
        self._sent = {k: v for k, v in self._sent.items() if k in live}
        for intent_id, account_id, oid, tag in rows:
            if now - self._sent.get(intent_id, float("-inf")) < self.every_s:
                continue
            self._sent[intent_id] = now
            try:
                send_cancel(self.ctx, account_id, oid, tag)
                sent.append(intent_id)
            except (BrokerError, SecretError, KeyError) as exc:  # retried on a later sweep
                log.warning("cancelorder %s (intent %s) failed: %s", oid, intent_id, exc)
        return sent
