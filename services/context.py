"""What every service component is given: the database, the settings and the per-account broker clients."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from broker.client import OpenAlgoClient
from config import Settings
from db import Database
from db.accounts import api_key_for, list_accounts


class Changes:
    """Counters per account that threads can wait on: bumped after a commit that moved one of the account's order
    intents (the dispatcher's outcomes, the poller's fills). A flatten waiting for its exits to settle sleeps on
    it instead of re-reading the intents every 50 ms: with ten accounts flattening at once, those reads were 15 % of
    the service's Python time, GIL time taken from the threads posting the exits."""

    def __init__(self):
        self._cond = threading.Condition()
        self._n: dict[int, int] = {}

    def seen(self, account_id: int) -> int:
        with self._cond:
            return self._n.get(account_id, 0)

    def bump(self, account_id: int) -> None:
        with self._cond:
            self._n[account_id] = self._n.get(account_id, 0) + 1
            self._cond.notify_all()

    def wait_past(self, account_id: int, n: int, timeout: float) -> bool:
        """Wait (at most ``timeout``) until the account's intents changed after ``seen()`` returned ``n``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._n.get(account_id, 0) != n, timeout)


@dataclass
class ServiceContext:
    """What every component gets: the database, the settings and a per-account broker client cache."""
    db: Database
    settings: Settings
    _clients: dict[int, OpenAlgoClient] = field(default_factory=dict)
    _retired: list[tuple[float, OpenAlgoClient]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # told of every broker call (services/broker_calls.CallRecorder): None in tests that build a bare context
    recorder: object | None = None
    intents_changed: Changes = field(default_factory=Changes)

    def client(self, account_id: int) -> OpenAlgoClient:
        """One client (and so one set of token buckets) per account, shared by all components."""
        with self._lock:
            due = self._take_retired(time.monotonic())
            c = self._clients.get(account_id)
            if c is None:
                acct = next((a for a in list_accounts(self.db) if a.id == account_id), None)
                if acct is None:
                    raise KeyError(f"unknown account {account_id}")
                b = self.settings.broker
                c = OpenAlgoClient(acct.host_url, api_key_for(self.db, account_id), name=acct.name,
                                   connect_timeout=b.connect_timeout_s, read_timeout=b.read_timeout_s,
                                   order_rate=b.order_rate_per_s, read_rate=b.read_rate_per_s,
                                   retries=b.read_retries, backoff_base=b.backoff_base_s, backoff_max=b.backoff_max_s,
                                   observer=self.recorder.observer(account_id) if self.recorder else None)
                self._clients[account_id] = c
        for old in due:
            old.close()
        return c

    def retire_after_s(self) -> float:
        """Longer than any one call on a client can take: every read attempt timing out, with the longest backoff
        between them. A dropped client is closed only after this."""
        b = self.settings.broker
        return (b.connect_timeout_s + b.read_timeout_s) * (b.read_retries + 1) + b.backoff_max_s * b.read_retries

    def drop_client(self, account_id: int) -> None:
        """Forget a cached client (the account's key or URL changed): later calls get a new one. It is not closed
        now: a component may be in the middle of a call on it (a sync's read, an order's POST), and closing it
        would fail that call half way; it is closed once no call can still be running on it."""
        now = time.monotonic()
        with self._lock:
            c = self._clients.pop(account_id, None)
            if c:
                self._retired.append((now + self.retire_after_s(), c))
            due = self._take_retired(now)
        for old in due:
            old.close()

    def _take_retired(self, now: float) -> list[OpenAlgoClient]:
        """Under the lock: the retired clients whose grace has passed, removed from the list."""
        if not self._retired or self._retired[0][0] > now:
            return []
        due = [c for t, c in self._retired if t <= now]
        self._retired = [(t, c) for t, c in self._retired if t > now]
        return due

    def close(self) -> None:
        with self._lock:
            clients = [*self._clients.values(), *(c for _, c in self._retired)]
            self._clients.clear()
            self._retired.clear()
        for c in clients:
            c.close()
