"""P&L arithmetic shared by the risk manager and the position monitor (one definition, no copies).

leg P&L = (price - entry_price) x quantity x (+1 for a BUY leg, -1 for a SELL leg)
run P&L = sum of leg P&L over entered legs at the live price + over exited legs at their exit price.

The live price of an entered leg is its last tick, unless that tick is older than the leg's own fill: then the
fill price (entry_price) is the newer trade and is used until a tick newer than the fill arrives. Without this, a
thinly traded option whose last print is seconds old and points away from where we just filled shows a loss that
never happened, and a max-loss limit exits a position the moment it is entered. A leg with no tick at all has no
price (None), as before: the fill alone never values a leg.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from db.run_fsm import ACTIVE_LEG, LegStatus


def sign(action: str) -> int:
    return 1 if action == "BUY" else -1


def leg_pnl(action: str, quantity: int, entry_price: float, price: float) -> float:
    return (price - entry_price) * quantity * sign(action)


@dataclass
class Leg:
    execution_id: int
    leg_no: int
    symbol: str
    exchange: str
    action: str
    quantity: int
    product: str
    status: str
    entry_price: float | None
    exit_price: float | None
    fill_seen: float = float("-inf")  # market-data clock time the entry fill was recorded; ticks before it are stale
    stop: object = None  # services.leg_stops.LegStop: the leg's own stop-loss / target / trailing, once entered

    @classmethod
    def of(cls, ex, fill_seen: float = float("-inf")) -> "Leg":
        return cls(ex.id, ex.leg_no, ex.symbol, ex.exchange, ex.action, ex.quantity, ex.product, ex.status,
                   ex.entry_price, ex.exit_price, fill_seen)

    @property
    def key(self) -> tuple[str, str]:
        return (self.symbol, self.exchange)


def fill_seen_at(status: str, updated_epoch: float | None, clock_now: float, wall_now: float) -> float:
    """A leg's ``fill_seen`` on the market-data clock (monotonic) from its row: an 'entered' execution's updated_at
    is when its entry fill was recorded (UTC epoch seconds here). Capped at now, so a wall clock stepped back after
    the fill can never make the ticks that follow look older than the fill."""
    if status != LegStatus.ENTERED or updated_epoch is None:
        return float("-inf")
    return min(clock_now, clock_now - (wall_now - updated_epoch))


def utc_epoch(ts: datetime | None) -> float | None:
    """A naive-UTC DateTime column value as epoch seconds."""
    return None if ts is None else ts.replace(tzinfo=UTC).timestamp()


def leg_price(leg: Leg, last: tuple[float, float] | None) -> float | None:
    """The price an active leg is valued at, from its last (ltp, clock time): see the module docstring."""
    if last is None:
        return None
    return last[0] if last[1] >= leg.fill_seen or leg.entry_price is None else leg.entry_price


def run_pnl(legs: Iterable[Leg], price_of: Callable[[str, str], tuple[float, float] | None]
            ) -> tuple[float, float] | None:
    """(realized, unrealized) of a run's legs, or None if an open leg has no entry price or no live price.
    ``price_of(symbol, exchange)`` gives the last (ltp, market-data clock time), as MarketDataManager.last_price."""
    realized = unrealized = 0.0
    for leg in legs:
        if leg.status == LegStatus.EXITED and leg.entry_price is not None and leg.exit_price is not None:
            realized += leg_pnl(leg.action, leg.quantity, leg.entry_price, leg.exit_price)
        elif leg.status in ACTIVE_LEG:
            price = leg_price(leg, price_of(leg.symbol, leg.exchange))
            if price is None or leg.entry_price is None:
                return None
            unrealized += leg_pnl(leg.action, leg.quantity, leg.entry_price, price)
    return realized, unrealized
