"""LIMIT strategy entries converted to MARKET: an entry leg saved as LIMIT at LTP ± offset with 'convert after N s'
that is still working at the broker N seconds after it was sent is modified to MARKET with ``modifyorder``,
exactly once. Fills are then the poller's, as for any order.

Once: the attempt is claimed by a compare-and-set ('' -> modifying) committed before the call, and settled as
converted or not_converted after it; nothing ever sends a second modify for the same intent. A refused modify
(the broker's reason), no answer, or a service stopped between the claim and the answer is an alert and an ERROR
in the service log, and the LIMIT order is left as it is at the broker, for the trader to see to. An order that
filled or ended in the meantime (the broker says so) is only noted.
"""
from __future__ import annotations

import logging

from broker.errors import BrokerError
from db.conversions import Due, claim_conversion, due_conversions, finish_conversion, left_modifying
from db.crypto import SecretError
from db.models import utcnow
from db.order_fsm import BROKER_STATUS_MAP, TERMINAL
from services.health import service_log

log = logging.getLogger("services.entry_convert")


class EntryConverter:
    def __init__(self, ctx, notifier=None):
        self.ctx, self.notifier = ctx, notifier
        self._unfinished: dict[int, tuple[bool, str]] = {}  # outcome known, its write failed: written next pass

    def run_once(self) -> int:
        """One pass (a scheduler job, never two at once): settle leftovers, then convert what is due. Returns how
        many modifyorder calls were sent."""
        self._write_unfinished()
        with self.ctx.db.read() as s:
            left = [r for r in left_modifying(s) if r[0] not in self._unfinished]
            due = due_conversions(s, utcnow())
        for intent_id, _account, symbol, oid in left:
            self._settle(intent_id, False, f"modifyorder to MARKET of {symbol} (order {oid}): outcome unknown, the "
                         "service stopped while sending it; the order may still be working as LIMIT: check it at "
                         "the broker", alarm=True)
        return sum(self._convert(d) for d in due)

    def _convert(self, d: Due) -> bool:
        with self.ctx.db.write() as s:
            if not claim_conversion(s, d):
                return False
        try:
            self.ctx.client(d.account_id).modifyorder(
                d.broker_order_id, strategy=d.strategy_tag, symbol=d.symbol, exchange=d.exchange, action=d.action,
                product=d.product, pricetype="MARKET", quantity=d.quantity, price=0.0, trigger_price=0.0)
        except (BrokerError, SecretError, KeyError) as exc:
            ended = self._ended_at_broker(d)
            if ended:
                self._settle(d.intent_id, False, f"modifyorder answered: {exc}; the order is {ended} at the broker")
            else:
                self._settle(d.intent_id, False, f"modifyorder to MARKET of {d.symbol} (order {d.broker_order_id}) "
                             f"failed: {exc}; the LIMIT order is left working", alarm=True)
            return True
        self._settle(d.intent_id, True, f"converted to MARKET via modifyorder (order {d.broker_order_id})")
        return True

    def _ended_at_broker(self, d: Due) -> str:
        """The broker's status of the order when it is no longer working (filled, cancelled, rejected), else ''."""
        try:
            status = str(self.ctx.client(d.account_id).orderstatus(d.broker_order_id, d.strategy_tag)
                         .get("order_status", "")).lower()
        except (BrokerError, SecretError, KeyError):
            return ""
        return status if BROKER_STATUS_MAP.get(status) in TERMINAL else ""

    def _settle(self, intent_id: int, converted: bool, reason: str, alarm: bool = False) -> None:
        if alarm:
            log.error("intent %s: %s", intent_id, reason)
            if self.notifier is not None:
                self.notifier.alert("entry_convert_failed", reason, subject=f"intent {intent_id}")
            try:
                service_log(self.ctx.db, "entry_convert", "ERROR", f"intent {intent_id}: {reason}")
            except Exception:  # noqa: BLE001 - the alert above already went out; the outcome row matters more
                log.exception("could not log the failed conversion of intent %s", intent_id)
        self._unfinished[intent_id] = (converted, reason)
        self._write_unfinished()

    def _write_unfinished(self) -> None:
        for intent_id, (converted, reason) in list(self._unfinished.items()):
            try:
                with self.ctx.db.write() as s:
                    finish_conversion(s, intent_id, converted, reason)
                del self._unfinished[intent_id]
            except Exception:  # noqa: BLE001 - kept in memory and written on the next pass
                log.exception("could not record the conversion of intent %s; retried next pass", intent_id)
