"""A strategy leg's own stop-loss / target / trailing stop, as the risk manager checks it on every tick.

The levels are computed once, when the leg is loaded entered (from its own average fill price, db/stop_levels.py
arithmetic: points, or % of that price), so a tick costs two comparisons and, with a trailing stop, one more and
the best-price update:

    BUY leg:   stop-loss = entry - d   target = entry + d   trailing: best = max price since entry, hit at best - trail
    SELL leg:  stop-loss = entry + d   target = entry - d   trailing: best = min price since entry, hit at best + trail

A level at or below zero (a BUY leg's stop more points than its price) can never be reached and is left out.
"""
from __future__ import annotations

from dataclasses import dataclass

from db.run_fsm import LegStatus
from db.stop_levels import STOP_LOSS, TARGET, level
from db.vocab import LegExit, StopMode


@dataclass
class LegStop:
    long: bool
    sl: float | None
    tp: float | None
    trail: float | None
    best: float
    dirty: bool = False  # best moved since it was last persisted

    def check(self, ltp: float) -> tuple[str, float] | None:
        """(LegExit kind, level) when ``ltp`` reaches a level; the trailing reference moves first."""
        if self.long:
            if self.sl is not None and ltp <= self.sl:
                return LegExit.STOP_LOSS.value, self.sl
            if self.tp is not None and ltp >= self.tp:
                return LegExit.TARGET.value, self.tp
            if self.trail is not None:
                if ltp > self.best:
                    self.best, self.dirty = ltp, True
                if ltp <= self.best - self.trail:
                    return LegExit.TRAILING.value, round(self.best - self.trail, 4)
            return None
        if self.sl is not None and ltp >= self.sl:
            return LegExit.STOP_LOSS.value, self.sl
        if self.tp is not None and ltp <= self.tp:
            return LegExit.TARGET.value, self.tp
        if self.trail is not None:
            if ltp < self.best:
                self.best, self.dirty = ltp, True
            if ltp >= self.best + self.trail:
                return LegExit.TRAILING.value, round(self.best + self.trail, 4)
        return None

    def carry(self, old: LegStop) -> None:
        """A reloaded leg keeps the best price seen in memory (it only ratchets in the leg's favour)."""
        if self.trail is None:
            return
        better = old.best > self.best if self.long else old.best < self.best
        if better:
            self.best = old.best
        self.dirty = self.dirty or old.dirty


def _positive(v: float | None) -> float | None:
    return v if v is not None and v > 0 else None


def leg_stop(action: str, status: str, entry_price: float | None, sl_mode: str, sl_value: float | None,
             tp_mode: str, tp_value: float | None, trail: float | None, best: float | None) -> LegStop | None:
    """The LegStop of an entered leg with any stop set; None otherwise (the tick path then skips the leg)."""
    if status != LegStatus.ENTERED or not entry_price or (sl_value is None and tp_value is None and not trail):
        return None
    sl = _positive(level(action, STOP_LOSS, sl_mode or StopMode.POINTS, sl_value, entry_price))
    tp = _positive(level(action, TARGET, tp_mode or StopMode.POINTS, tp_value, entry_price))
    long = action == "BUY"
    start = entry_price
    if best is not None and (best > entry_price if long else best < entry_price):
        start = best
    return LegStop(long, sl, tp, trail if trail and trail > 0 else None, start)
