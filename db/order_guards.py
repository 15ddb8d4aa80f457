"""Fat-finger guards on order entry: a price far from the market, a quantity or notional far above the usual.

Two levels, both configurable (``APP__ORDERS__*``):
    confirm   the order is held until the trader confirms it a second time, with each problem named
              ("LIMIT price ₹99,999,999.00 is 26,455,457 % above the last price ₹378.00")
    refuse    beyond the hard cap it is refused outright, confirmed or not
The last price is the latest tick the service stored (latest_prices) when it is at most two minutes old; without
one the price band is not checked (nothing to compare with), while the lot and notional limits still apply, the
notional taken from the order's own price: a LIMIT at ₹99,999,999 is refused by the notional cap either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from config import OrderGuardSettings
from db.models import Instrument
from db.prices import fresh_ltp

@dataclass
class GuardResult:
    confirm: list[str] = field(default_factory=list)  # problems the trader must confirm
    refuse: list[str] = field(default_factory=list)  # problems no confirmation overrides


def _rupees(v: float) -> str:
    return f"₹{v:,.2f}"


def check_order(s, fields: dict, cfg: OrderGuardSettings) -> GuardResult:
    """Guard one validated order (``fields`` as db.commands.validate_order returns them)."""
    out = GuardResult()
    inst = s.get(Instrument, (fields["symbol"], fields["exchange"]))
    lotsize = max(1, int(inst.lotsize or 1)) if inst is not None else 1
    qty, price = fields["requested_qty"], fields["limit_price"] or 0.0
    ltp = fresh_ltp(s, fields["symbol"], fields["exchange"])
    if price and ltp:
        off = price / ltp - 1.0
        where = f"{fields['pricetype']} price {_rupees(price)} is {abs(off) * 100:,.0f} % " \
                f"{'above' if off > 0 else 'below'} the last price {_rupees(ltp)}"
        if price > ltp * cfg.price_cap_x or price < ltp / cfg.price_cap_x:
            out.refuse.append(f"{where} (beyond {cfg.price_cap_x:g}x the last price)")
        elif abs(off) * 100 > cfg.price_band_pct:
            out.confirm.append(f"{where} (band ±{cfg.price_band_pct:g} %)")
    if lotsize > 1:
        lots = qty // lotsize
        if lots > cfg.max_lots:
            out.refuse.append(f"{lots} lots (the cap is {cfg.max_lots})")
        elif lots > cfg.confirm_lots:
            out.confirm.append(f"{lots} lots (more than {cfg.confirm_lots})")
    ref = price or ltp
    if ref:
        notional = qty * ref
        if notional > cfg.max_notional:
            out.refuse.append(f"notional {_rupees(notional)} (the cap is {_rupees(cfg.max_notional)})")
        elif notional > cfg.confirm_notional:
            out.confirm.append(f"notional {_rupees(notional)} (more than {_rupees(cfg.confirm_notional)})")
    return out
