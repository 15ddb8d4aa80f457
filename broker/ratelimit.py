"""Thread-safe token bucket (FIFO by arrival: a lock is held while waiting, so callers go in order)."""
from __future__ import annotations

import threading
import time


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float | None = None, clock=time.monotonic, sleep=time.sleep):
        self.rate = float(rate_per_s)
        self.capacity = float(burst if burst is not None else max(1.0, rate_per_s))
        self.tokens = self.capacity
        self.clock, self.sleep = clock, sleep
        self.updated = clock()
        self._lock = threading.Lock()
        self.blocked_until = 0.0

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def acquire(self, tokens: float = 1.0) -> float:
        """Block until a token is available; returns seconds waited."""
        waited = 0.0
        with self._lock:
            while True:
                now = self.clock()
                if now < self.blocked_until:
                    delay = self.blocked_until - now
                else:
                    self._refill(now)
                    if self.tokens >= tokens:
                        self.tokens -= tokens
                        return waited
                    delay = (tokens - self.tokens) / self.rate
                self.sleep(delay)
                waited += delay

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """A token now, or False at once: never waits, not even for the lock (whoever holds it is waiting for a
        token itself)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            now = self.clock()
            if now < self.blocked_until:
                return False
            self._refill(now)
            if self.tokens < tokens:
                return False
            self.tokens -= tokens
            return True
        finally:
            self._lock.release()

    def block_for(self, seconds: float) -> None:
        """After a 429: nobody gets a token for this long."""
        # No lock: acquire() may be sleeping while holding it; a float store is atomic under the GIL.
        self.blocked_until = max(self.blocked_until, self.clock() + seconds)
        self.tokens = 0.0
