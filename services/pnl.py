"""P&L arithmetic shared by the risk manager and the position monitor (one definition, no copies).

leg P&L = (price - entry_price) x quantity x (+1 for a BUY leg, -1 for a SELL leg)
run P&L = sum of leg P&L over entered legs at the live price + over exited legs at their exit price.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

ACTIVE_LEG = ("entered", "exiting")


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

    @classmethod
    def of(cls, ex) -> "Leg":
        return cls(ex.id, ex.leg_no, ex.symbol, ex.exchange, ex.action, ex.quantity, ex.product, ex.status,
                   ex.entry_price, ex.exit_price)

    @property
    def key(self) -> tuple[str, str]:
        return (self.symbol, self.exchange)


def run_pnl(legs: Iterable[Leg], price_of: Callable[[str, str], float | None]) -> tuple[float, float] | None:
    """(realized, unrealized) of a run's legs, or None if an open leg has no entry price or no live price."""
    realized = unrealized = 0.0
    for leg in legs:
        if leg.status == "exited" and leg.entry_price is not None and leg.exit_price is not None:
            realized += leg_pnl(leg.action, leg.quantity, leg.entry_price, leg.exit_price)
        elif leg.status in ACTIVE_LEG:
            price = price_of(leg.symbol, leg.exchange)
            if price is None or leg.entry_price is None:
                return None
            unrealized += leg_pnl(leg.action, leg.quantity, leg.entry_price, price)
    return realized, unrealized
