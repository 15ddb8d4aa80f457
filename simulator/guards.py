"""Rate limiting (moving 1 s window per api key per endpoint), fault injection, request stats."""

from __future__ import annotations

import time
from collections import defaultdict, deque

ORDER_ENDPOINTS = {"placeorder", "modifyorder", "cancelorder", "placesmartorder", "optionsorder",
                   "optionsmultiorder"}
FAULT_KINDS = {"latency", "http_500", "http_429", "timeout_after_accept", "drop_ws", "mute_ws",
               "invalid_key", "zero_price"}


def mask(key: str | None) -> str:
    """Mask an API key for logs."""
    if not key:
        return "<none>"
    return f"{key[:4]}…{key[-2:]}" if len(key) > 8 else "****"


class RateLimiter:
    def __init__(self, order_rate: int, api_rate: int, window: float = 1.0):
        self.order_rate, self.api_rate, self.window = order_rate, api_rate, window
        self.hits: dict[tuple[str, str], deque] = defaultdict(deque)

    def limit_for(self, endpoint: str) -> int:
        return self.order_rate if endpoint in ORDER_ENDPOINTS else self.api_rate

    def hit(self, key: str, endpoint: str) -> str | None:
        """Record a hit; returns the limit string if the request must be refused."""
        limit = self.limit_for(endpoint)
        now = time.monotonic()
        q = self.hits[(key, endpoint)]
        while q and now - q[0] >= self.window:
            q.popleft()
        if len(q) >= limit:
            return f"{limit} per 1 second"
        q.append(now)
        return None

    def reset(self) -> None:
        self.hits.clear()


class Faults:
    def __init__(self):
        self.active: list[dict] = []

    def add(self, spec: dict) -> dict:
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        f = dict(spec)
        if "duration_s" in f and f["duration_s"] is not None:
            f["until"] = time.monotonic() + float(f["duration_s"])
        if isinstance(f.get("endpoints"), str):
            f["endpoints"] = [f["endpoints"]]
        self.active.append(f)
        return f

    def clear(self) -> None:
        self.active.clear()

    def _live(self) -> list[dict]:
        now = time.monotonic()
        self.active = [f for f in self.active
                       if f.get("until", now + 1) > now and f.get("count", 1) > 0]
        return self.active

    def match(self, kind: str, endpoint: str | None = None, apikey: str | None = None,
              account: str | None = None, consume: bool = True) -> dict | None:
        for f in self._live():
            if f["kind"] != kind:
                continue
            eps = f.get("endpoints")
            if eps and endpoint not in eps:
                continue
            if f.get("apikey") and f["apikey"] != apikey:
                continue
            if f.get("account") and f["account"] != account:
                continue
            if consume and "count" in f:
                f["count"] = int(f["count"]) - 1
            return f
        return None

    def key_revoked(self, apikey: str | None, account: str | None) -> bool:
        for f in self._live():
            if f["kind"] == "invalid_key" and (
                    (f.get("apikey") and f["apikey"] == apikey) or
                    (f.get("account") and f["account"] == account)):
                return True
        return False

    def describe(self) -> list[dict]:
        out = []
        for f in self._live():
            d = {k: v for k, v in f.items() if k != "until"}
            if "apikey" in d:
                d["apikey"] = mask(d["apikey"])
            out.append(d)
        return out


class Stats:
    def __init__(self):
        self.requests: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.ticks_sent = 0
        self.ticks_generated = 0

    def count(self, account: str, endpoint: str) -> None:
        self.requests[account][endpoint] += 1

    def snapshot(self) -> dict:
        return {"requests": {a: dict(e) for a, e in self.requests.items()},
                "ticks_sent": self.ticks_sent, "ticks_generated": self.ticks_generated}
