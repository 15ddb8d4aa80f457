"""The arithmetic of a Quick Order stop-loss / target (no database): the levels from a price, and which one a
last price has crossed. Shared by the ticket's preview (levels from the LTP), the validation in db/commands.py
and the service (levels from the average fill price, db/stops.py).

    BUY entry (a long):   stop-loss = price - distance   hit when ltp <= it
                          target    = price + distance   hit when ltp >= it
    SELL entry (a short): stop-loss = price + distance   hit when ltp >= it
                          target    = price - distance   hit when ltp <= it
    distance = points, or price x pct / 100
"""
from __future__ import annotations

from dataclasses import dataclass

from db.vocab import StopMode

STOP_LOSS, TARGET = "stop_loss", "target"  # the two kinds of level (risk_events.event_type of a hit)


@dataclass(frozen=True)
class StopSpec:
    """What the ticket asks for: each leg optional (value None = not set)."""
    sl_mode: str = StopMode.POINTS.value
    sl_value: float | None = None
    tp_mode: str = StopMode.POINTS.value
    tp_value: float | None = None

    def __bool__(self) -> bool:
        return self.sl_value is not None or self.tp_value is not None


def level(side: str, kind: str, mode: str, value: float | None, price: float) -> float | None:
    """The price at which ``kind`` (STOP_LOSS / TARGET) of an entry on ``side`` fires, from ``price``."""
    if value is None:
        return None
    distance = value if mode == StopMode.POINTS else price * value / 100.0
    below = (side == "BUY") == (kind == STOP_LOSS)  # a long's stop and a short's target sit below the price
    return round(price - distance if below else price + distance, 4)


def levels(spec: StopSpec, side: str, price: float) -> tuple[float | None, float | None]:
    """(stop-loss level, target level) of ``spec`` for an entry on ``side`` at ``price``."""
    return (level(side, STOP_LOSS, spec.sl_mode, spec.sl_value, price),
            level(side, TARGET, spec.tp_mode, spec.tp_value, price))


def crossed(side: str, sl_level: float | None, tp_level: float | None, ltp: float) -> tuple[str, float] | None:
    """(kind, level) of the level ``ltp`` has reached, the stop-loss first; None while it is between them."""
    long = side == "BUY"
    if sl_level is not None and (ltp <= sl_level if long else ltp >= sl_level):
        return STOP_LOSS, sl_level
    if tp_level is not None and (ltp >= tp_level if long else ltp <= tp_level):
        return TARGET, tp_level
    return None
