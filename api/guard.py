"""Authentication and rate limits of the local API.

Tiers (``APP__API__RATE_*``, the ``limits`` library's moving windows, kept in this process's memory):
  * global - every request, per client address (the docs and webhooks included);
  * auth   - failed authentications, per client address (a wrong key, a wrong webhook token);
  * api    - every authenticated call, per API key; every alert, per webhook rule;
  * heavy  - fan-out calls (execute, flatten), per API key, on top of ``api``.
A request over a limit is answered 429 with ``Retry-After`` (whole seconds until the window has room).
A valid key is checked before the auth tier is counted, so a script with a wrong key cannot lock out the good
ones that share its (loopback) address.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from config import ApiSettings, Settings
from db import Database
from db.api_keys import authenticate, touch


class ApiError(Exception):
    """An answer other than success: status code, message, extra headers (OpenAlgo's error body)."""

    def __init__(self, status_code: int, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status_code, self.message, self.headers, self.extra = status_code, message, headers or {}, extra


def tier_items(api: ApiSettings) -> dict[str, RateLimitItem]:
    """The four tiers parsed; a malformed rate stops the API at start with the setting's name."""
    out = {}
    for tier in ("global", "auth", "api", "heavy"):
        raw = getattr(api, f"rate_{tier}")
        try:
            out[tier] = parse(raw)
        except ValueError as exc:
            raise ValueError(f"APP__API__RATE_{tier.upper()}: '{raw}' is not a rate like '100/minute' ({exc})") \
                from None
    return out


@dataclass
class Limiter:
    items: dict[str, RateLimitItem]

    def __post_init__(self):
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, tier: str, who: str) -> None:
        """Count one request of ``who`` in ``tier``; ApiError 429 when the tier is full."""
        item = self.items[tier]
        if self._limiter.hit(item, tier, who):
            return
        reset, _ = self._limiter.get_window_stats(item, tier, who)
        wait = max(1, math.ceil(reset - time.time()))
        raise ApiError(429, f"Rate limit exceeded ({item.amount} per {item.multiples} {item.GRANULARITY.name}, "
                            f"{tier} tier): retry in {wait} s", {"Retry-After": str(wait)})


def api_key_of(headers) -> str | None:
    """The key from ``X-API-KEY`` or ``Authorization: Bearer ...``."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@dataclass
class ApiContext:
    """What every route needs: the settings, the database, the limiter."""
    settings: Settings
    db: Database
    limiter: Limiter

    def client(self, request) -> str:
        return request.client.host if request.client else "?"

    def key_id(self, request) -> int:
        """The caller's API key id after the auth and api tiers; ApiError 401 / 429 otherwise."""
        key_id = authenticate(self.db, api_key_of(request.headers))
        if key_id is None:
            self.limiter.hit("auth", self.client(request))
            raise ApiError(401, "Invalid or missing API key: send a key created on the API & Webhooks page as the "
                                "X-API-KEY header")
        self.limiter.hit("api", f"key:{key_id}")
        touch(self.db, key_id)
        return key_id
