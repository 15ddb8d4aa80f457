"""/optiongreeks and /margin (the model is in simulator/risk.py)."""

from __future__ import annotations

from . import schema as S
from .risk import margin_with_benefit, option_greeks
from .rest_registry import endpoint


@endpoint("optiongreeks", S.OPTIONGREEKS, "G")
def optiongreeks(sim, acct, d):
    inst = sim.market.get(d["exchange"], d["symbol"])
    if inst is None:
        return 404, {"status": "error", "message": f"Symbol {d['symbol']} not found in exchange {d['exchange']}"}
    if not inst.is_option:
        return 400, {"status": "error", "message": f"{d['symbol']} is not an option (CE/PE) symbol"}
    return 200, option_greeks(sim.market, inst, d.get("interest_rate") or 0.0, d.get("forward_price"))


def _number(text: str, what: str, positive: bool) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"Invalid {what}: {text}") from None
    if v != v or v in (float("inf"), float("-inf")) or v < 0 or (positive and v == 0):
        raise ValueError(f"Invalid {what}: {text}")
    return v


def _position(sim, p: dict):
    inst = sim.market.get(p["exchange"], p["symbol"])
    if inst is None:
        raise ValueError(f"Symbol {p['symbol']} not found on {p['exchange']}")
    qty = _number(p["quantity"], "quantity", True)
    if not qty.is_integer():
        raise ValueError(f"Invalid quantity: {p['quantity']}")
    if inst.lotsize > 1 and int(qty) % inst.lotsize:
        raise ValueError(f"Quantity for {inst.symbol} must be in multiples of lot size {inst.lotsize}")
    price = _number(p["price"], "price", False)
    trigger = _number(p["trigger_price"], "trigger_price", False)
    ltp = sim.market.state(inst.key).ltp
    used = {"MARKET": ltp, "LIMIT": price, "SL": price, "SL-M": trigger}[p["pricetype"]] or ltp
    return inst, p["action"], int(qty), p["product"], used


@endpoint("margin", S.MARGIN, "A")
def margin(sim, acct, d):
    try:
        positions = [_position(sim, p) for p in d["positions"]]
    except ValueError as e:
        return 400, {"status": "error", "message": str(e)}
    return 200, {"status": "success", "data": margin_with_benefit(sim.market, positions)}
