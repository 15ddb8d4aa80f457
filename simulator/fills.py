"""Pure fill rules (OpenAlgo sandbox §3.4) and position netting."""

from __future__ import annotations

from dataclasses import dataclass

OPEN, COMPLETE, REJECTED, CANCELLED, TRIGGER_PENDING = (
    "open", "complete", "rejected", "cancelled", "trigger pending")


def initial_fill(action: str, pricetype: str, price: float, trigger: float,
                 ltp: float, bid: float, ask: float) -> tuple[str, float | None]:
    """Status and fill price right at placement. Returns (status, fill_price or None)."""
    buy = action == "BUY"
    if pricetype == "MARKET":
        px = ask if buy else bid
        return COMPLETE, (px if px > 0 else ltp)
    if pricetype == "LIMIT":
        return (COMPLETE, ltp) if limit_ok(buy, price, ltp) else (OPEN, None)
    if not trigger_hit(buy, trigger, ltp):
        return TRIGGER_PENDING, None
    if pricetype == "SL-M" or limit_ok(buy, price, ltp):
        return COMPLETE, ltp
    return OPEN, None


def later_fill(action: str, pricetype: str, status: str, price: float, trigger: float,
               ltp: float, triggered: bool) -> tuple[str, float | None]:
    """Engine-loop check of a resting order on a new LTP. Returns (status, fill_price)."""
    buy = action == "BUY"
    if status == TRIGGER_PENDING:
        if not trigger_hit(buy, trigger, ltp):
            return TRIGGER_PENDING, None
        if pricetype == "SL-M" or limit_ok(buy, price, ltp):
            return COMPLETE, ltp
        return OPEN, None
    if pricetype == "LIMIT" and not triggered:
        return (COMPLETE, price) if limit_ok(buy, price, ltp) else (OPEN, None)
    # triggered SL waiting for its limit: fills at LTP
    return (COMPLETE, ltp) if limit_ok(buy, price, ltp) else (OPEN, None)


def limit_ok(buy: bool, price: float, ltp: float) -> bool:
    return ltp <= price if buy else ltp >= price


def trigger_hit(buy: bool, trigger: float, ltp: float) -> bool:
    return ltp >= trigger if buy else ltp <= trigger


@dataclass
class Position:
    symbol: str
    exchange: str
    product: str
    quantity: int = 0
    average_price: float = 0.0
    realized: float = 0.0
    last_ltp: float = 0.0

    def apply(self, signed_qty: int, price: float) -> float:
        """Net a fill into the position. Returns realised P&L of this fill."""
        q = self.quantity
        if q == 0 or (q > 0) == (signed_qty > 0):
            total = q + signed_qty
            self.average_price = (abs(q) * self.average_price + abs(signed_qty) * price) / abs(total)
            self.quantity = total
            return 0.0
        closing = min(abs(q), abs(signed_qty))
        pnl = closing * (price - self.average_price) * (1 if q > 0 else -1)
        self.realized += pnl
        total = q + signed_qty
        if total == 0:
            self.average_price = 0.0
        elif (total > 0) != (q > 0):
            self.average_price = price
        self.quantity = total
        return pnl

    def unrealized(self, ltp: float) -> float:
        return self.quantity * (ltp - self.average_price) if self.quantity else 0.0


def reducing_qty(position_qty: int, signed_qty: int) -> int:
    """How much of an order (signed) reduces an existing opposite position."""
    if position_qty == 0 or (position_qty > 0) == (signed_qty > 0):
        return 0
    return min(abs(position_qty), abs(signed_qty))
