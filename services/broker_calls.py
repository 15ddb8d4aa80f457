"""What the service saw of each account's gateway: every broker call recorded, the account's status from it, and
a ping every ``account_ping_s``.

Each client reports each call to ``CallRecorder.observe`` (a deque append on the caller's thread: placeorder's
too, so nothing more). ``flush()`` (every second) writes the calls to broker_calls in one transaction and moves an
account's status to what its latest call says: 'ok' after any answer of the gateway's own (an order refused is the
gateway working), 'invalid_key' after a 403, 'unreachable' after no answer or a 5xx, with the error text and its
time. The status row is written only when it changes, and last_checked_at at most once per flush.
``ping_all()`` pings every active account, so a quiet account (no run, no order) still has a status less than
``account_ping_s`` old, and a key the broker revoked shows as rejected without waiting for the next order.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone

from broker.errors import BrokerError
from db.accounts import list_accounts, set_status_in, status_of, touch_checked
from db.broker_calls import insert_calls, prune_calls
from services.context import ServiceContext

log = logging.getLogger("broker.calls")
# the account status each call outcome implies (broker.client.CALL_OUTCOMES)
STATUS_OF = {"ok": "ok", "refused": "ok", "rate_limited": "ok", "not_found": "ok", "auth": "invalid_key",
             "server_error": "unreachable", "network": "unreachable"}


class CallRecorder:
    def __init__(self, maxlen: int = 50_000):
        self._calls: deque = deque(maxlen=maxlen)  # append / popleft are thread-safe

    def observer(self, account_id: int):
        def observe(endpoint: str, code: int | None, ms: float, outcome: str, error: str) -> None:
            self._calls.append((account_id, time.time(), endpoint, code, ms, outcome, error))
        return observe

    def drain(self) -> list[tuple]:
        out = []
        while True:
            try:
                out.append(self._calls.popleft())
            except IndexError:
                return out


class BrokerHealth:
    def __init__(self, ctx: ServiceContext, recorder: CallRecorder):
        self.ctx, self.recorder = ctx, recorder
        self._flushes = 0
        self._lock = threading.Lock()

    def flush(self) -> int:
        """Write the calls recorded since the last flush, and any account status they change. Returns how many."""
        with self._lock:
            calls = [(a, datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None), *rest)
                     for a, t, *rest in self.recorder.drain()]  # epoch on the caller's thread: the cheapest clock
            if not calls:
                return 0
            latest = {}
            for acct, ts, endpoint, code, ms, outcome, error in calls:
                log.debug("account %s %s -> %s %s in %.1f ms %s", acct, endpoint, code, outcome, ms, error)
                status = STATUS_OF.get(outcome, "ok")
                latest[acct] = (status, "" if status == "ok" else f"{endpoint}: {error or outcome}", ts)
            with self.ctx.db.write() as s:
                insert_calls(s, calls)
                for acct, (status, message, ts) in latest.items():
                    # compared with the row, not with what this flush wrote last: the dispatcher and the feed
                    # mark a rejected key too, and a later answered call must be able to clear that
                    now = status_of(s, acct)
                    if now is None:
                        continue
                    if now != (status, message):
                        set_status_in(s, acct, status, message)
                    else:
                        touch_checked(s, acct, ts)
                self._flushes += 1
                if self._flushes % 600 == 1:  # about every ten minutes
                    prune_calls(s)
            return len(calls)

    def ping_all(self) -> int:
        """Ping every active account (the call is recorded like any other). Returns how many answered."""
        ok = 0
        for acct in list_accounts(self.ctx.db, active_only=True):
            try:
                self.ctx.client(acct.id).ping()
                ok += 1
            except (BrokerError, KeyError) as exc:
                log.info("ping %s failed: %s", acct.name, exc)
        self.flush()
        return ok
