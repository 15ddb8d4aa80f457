"""A strategy's definition as the builder, the local API and the tests give it (LegSpec), and every check of it
that needs no database: each bad value is a CommandError naming the leg and the field, raised before anything is
written (db/strategies.save_strategy). Nothing is coerced: 2.5 lots, 0 lots, 100000 lots, a negative or zero max
loss are errors, never rounded, clamped or dropped."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields

from db.commands import CommandError
from db.expiry_rules import ExpiryMode
from db.models import StrategyLeg
from db.vocab import ReentryMode, StopMode

OPTION_EXCHANGE = {"NSE_INDEX": "NFO", "NSE": "NFO", "BSE_INDEX": "BFO", "BSE": "BFO"}
NAME_RE = re.compile(r"^[A-Za-z0-9 _\-]{1,64}$")
STRIKE_MODES = ("ATM", "ITM", "OTM", "STRIKE", "PREMIUM", "DELTA")
ENTRY_TYPES = ("MARKET", "LIMIT")
MAX_LEG_LOTS = 500
MAX_CONVERT_S = 3600
MAX_OFFSET_PCT = 50.0


@dataclass
class LegSpec:
    instrument: str  # CE | PE | FUT
    action: str  # BUY | SELL
    lots: int = 1
    strike_mode: str = "ATM"  # ATM | ITM | OTM | STRIKE | PREMIUM | DELTA
    offset: int = 0
    strike: float | None = None
    target: float | None = None  # PREMIUM: rupees; DELTA: |delta| 0..1
    entry_type: str = "MARKET"  # MARKET | LIMIT
    entry_offset: float = 0.0  # LIMIT: rupees (or % of LTP) added to the LTP; negative = below it
    entry_offset_pct: bool = False
    convert_after_s: int = 0  # LIMIT still working after this many seconds -> MARKET (0 = stays LIMIT)
    # the leg's own stop-loss / target: points or % (db.vocab.StopMode) of the leg's entry price; None = off
    sl_mode: str = StopMode.POINTS.value
    sl_value: float | None = None
    tp_mode: str = StopMode.POINTS.value
    tp_value: float | None = None
    trail_points: float | None = None  # trailing stop: points from the best price since entry
    reentry_count: int = 0  # re-enter up to this many times after the leg's stop (0 = never)
    reentry_mode: str = ReentryMode.SAME.value  # the same contract, or the ATM strike at re-entry time
    reentry_wait: bool = False  # re-enter only once the price is back at the first entry's level


LEG_FIELDS = tuple(f.name for f in fields(LegSpec))


def _amount_or_none(v, what: str) -> float | None:
    """A risk limit in rupees: empty (None / '') = none; anything else must be a positive number."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    f = _float(v, what)
    if math.isnan(f):
        raise CommandError(f"{what} must be a number")
    if not (0 < f < 1e9):
        raise CommandError(f"{what} must be a positive amount in rupees (got {f:g}); leave it empty for none")
    return f


def _whole(v, what: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi] (a float like 3.0 counts; 2.5, True, NaN or text do not)."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        shown = f"{v:g}" if isinstance(v, float) else str(v)[:20]
        raise CommandError(f"{what} must be a whole number from {lo} to {hi} (got {shown})")
    return v


def _float(v, what: str, got: bool = False) -> float:
    """float(v), or CommandError: True / False, None and text are not numbers (``got``: the message quotes v)."""
    if isinstance(v, bool):
        raise CommandError(f"{what} must be a number")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise CommandError(f"{what} must be a number" + (f" (got '{str(v)[:20]}')" if got else "")) from None


def _number(v, what: str) -> float:
    f = _float(v, what)
    if not math.isfinite(f):
        raise CommandError(f"{what} must be a number")
    return f


def _check_strike(i: int, leg: LegSpec) -> None:
    if leg.strike_mode not in STRIKE_MODES:
        raise CommandError(f"Leg {i}: strike must be ATM, ITM, OTM, a fixed strike, PREMIUM or DELTA")
    if leg.strike_mode in ("ITM", "OTM"):
        leg.offset = _whole(leg.offset, f"Leg {i}: ITM/OTM offset (strikes away)", 1, 50)
    if leg.strike_mode == "STRIKE":
        leg.strike = _number(leg.strike, f"Leg {i}: a fixed strike")
        if leg.strike <= 0:
            raise CommandError(f"Leg {i}: a fixed strike must be a positive number")
    if leg.strike_mode == "PREMIUM":
        leg.target = _number(leg.target, f"Leg {i}: the target premium (₹)")
        if not 0 < leg.target < 1e6:
            raise CommandError(f"Leg {i}: the target premium must be a positive amount in rupees")
    if leg.strike_mode == "DELTA":
        leg.target = _number(leg.target, f"Leg {i}: the target delta")
        if not 0 < leg.target < 1:
            raise CommandError(f"Leg {i}: the target delta must be between 0 and 1 (e.g. 0.30), got {leg.target:g}")


def _check_entry(i: int, leg: LegSpec) -> None:
    if leg.entry_type not in ENTRY_TYPES:
        raise CommandError(f"Leg {i}: entry must be MARKET or LIMIT")
    if leg.entry_type == "MARKET":
        leg.entry_offset, leg.entry_offset_pct, leg.convert_after_s = 0.0, False, 0
        return
    leg.entry_offset = _number(leg.entry_offset or 0.0, f"Leg {i}: the LIMIT offset")
    leg.entry_offset_pct = bool(leg.entry_offset_pct)
    if leg.entry_offset_pct and not -MAX_OFFSET_PCT < leg.entry_offset < MAX_OFFSET_PCT:
        raise CommandError(f"Leg {i}: a LIMIT offset in % must be between -{MAX_OFFSET_PCT:g} and "
                           f"{MAX_OFFSET_PCT:g}")
    if not leg.entry_offset_pct and abs(leg.entry_offset) >= 1e5:
        raise CommandError(f"Leg {i}: the LIMIT offset is not a sensible amount in rupees")
    leg.convert_after_s = _whole(leg.convert_after_s or 0, f"Leg {i}: convert to MARKET after (s)", 0,
                                 MAX_CONVERT_S)


def _check_leg(i: int, leg: LegSpec) -> LegSpec:
    if leg.instrument not in ("CE", "PE", "FUT"):
        raise CommandError(f"Leg {i}: instrument must be CE, PE or FUT")
    if leg.action not in ("BUY", "SELL"):
        raise CommandError(f"Leg {i}: action must be BUY or SELL")
    leg.lots = _whole(leg.lots, f"Leg {i}: lots", 1, MAX_LEG_LOTS)
    if leg.instrument != "FUT":
        _check_strike(i, leg)
    _check_entry(i, leg)
    return _check_leg_stops(i, leg)


def _leg_number(v, what: str) -> float | None:
    """A positive number, or None for 'not set' (empty, 0)."""
    if v is None or v == "" or (isinstance(v, float) and v != v):
        return None
    f = _float(v, what, got=True)
    if f == 0:
        return None
    if not (0 < f < 1e9):
        raise CommandError(f"{what} must be a positive number (got {v})")
    return f


def _check_leg_stops(i: int, leg: LegSpec) -> LegSpec:
    """The leg's stop-loss / target / trailing / re-entry, cleaned, or CommandError naming the leg. A stop-loss in %
    must be under 100, and so must a SELL leg's target (below the entry: at 100 % it would be zero); a BUY leg's
    target in % is capped at 1000."""
    for what, mode_attr, value_attr, cap in (("stop-loss", "sl_mode", "sl_value", 100),
                                             ("target", "tp_mode", "tp_value", 100 if leg.action == "SELL" else 1000)):
        value = _leg_number(getattr(leg, value_attr), f"Leg {i}: {what}")
        mode = getattr(leg, mode_attr) or StopMode.POINTS.value
        if mode not in tuple(StopMode):
            raise CommandError(f"Leg {i}: {what} must be in points or % (got '{str(mode)[:12]}')")
        if value is not None and mode == StopMode.PCT and value >= cap:
            raise CommandError(f"Leg {i}: a {what} of {value:g} % is out of range (must be below {cap} %)")
        setattr(leg, value_attr, value)
        setattr(leg, mode_attr, str(mode))
    leg.trail_points = _leg_number(leg.trail_points, f"Leg {i}: trailing stop (points)")
    n = leg.reentry_count or 0
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10:
        raise CommandError(f"Leg {i}: re-entries must be a whole number from 0 to 10 (got {str(n)[:12]})")
    if n and leg.sl_value is None and leg.trail_points is None:
        raise CommandError(f"Leg {i}: re-entry follows the leg's stop: set a stop-loss or a trailing stop")
    if (leg.reentry_mode or ReentryMode.SAME.value) not in tuple(ReentryMode):
        raise CommandError(f"Leg {i}: re-entry must be at the same strike or the ATM strike")
    if n and leg.reentry_mode == ReentryMode.ATM and leg.instrument == "FUT":
        raise CommandError(f"Leg {i}: a future has no ATM strike to re-enter at")
    leg.reentry_count, leg.reentry_mode = n, str(leg.reentry_mode or ReentryMode.SAME.value)
    leg.reentry_wait = bool(leg.reentry_wait) and n > 0
    return leg


LEG_STOP_FIELDS = ("sl_mode", "sl_value", "tp_mode", "tp_value", "trail_points", "reentry_count", "reentry_mode",
                   "reentry_wait")


def leg_stop_fields(leg) -> dict:
    """The stop and re-entry settings of a LegSpec / StrategyLeg / Execution, to copy onto another row (modes are
    kept only beside a value)."""
    out = {f: getattr(leg, f) for f in LEG_STOP_FIELDS}
    out["sl_mode"] = out["sl_mode"] if out["sl_value"] is not None else ""
    out["tp_mode"] = out["tp_mode"] if out["tp_value"] is not None else ""
    out["reentry_count"], out["reentry_wait"] = int(out["reentry_count"] or 0), bool(out["reentry_wait"])
    return out


def check_legs(legs: list[LegSpec]) -> list[LegSpec]:
    if not legs or len(legs) > 20:
        raise CommandError("A strategy needs 1 to 20 legs")
    return [_check_leg(i, leg) for i, leg in enumerate(legs, start=1)]


def check_limits(max_loss, max_profit, trailing_sl) -> dict:
    """The strategy's risk limits, each a positive amount in rupees or None; CommandError naming the field."""
    return dict(max_loss=_amount_or_none(max_loss, "Max loss"), max_profit=_amount_or_none(max_profit, "Max profit"),
                trailing_sl=_amount_or_none(trailing_sl, "Trailing stop"))


def check_definition(name: str, exchange: str, product: str, expiry_mode: str, legs: list[LegSpec]) -> list[LegSpec]:
    """Every check of a strategy's definition that needs no database; returns the checked legs."""
    if not NAME_RE.match(name):
        raise CommandError("Strategy name must be 1-64 characters: letters, digits, space, _ or -")
    if exchange not in OPTION_EXCHANGE:
        raise CommandError("Underlying exchange must be NSE_INDEX, BSE_INDEX, NSE or BSE")
    if product not in ("NRML", "MIS"):
        raise CommandError("Product must be NRML or MIS")
    if expiry_mode not in set(ExpiryMode):
        raise CommandError("Expiry must be a fixed date, current week, next week, current month or next month")
    return check_legs(legs)


def leg_rows(legs: list[LegSpec]) -> list[StrategyLeg]:
    return [StrategyLeg(leg_no=i, instrument=leg.instrument, action=leg.action, strike_mode=leg.strike_mode,
                        offset=int(leg.offset or 0), strike=leg.strike, lots=leg.lots,
                        target=leg.target if leg.strike_mode in ("PREMIUM", "DELTA") else None,
                        entry_type=leg.entry_type, entry_offset=leg.entry_offset,
                        entry_offset_pct=leg.entry_offset_pct, convert_after_s=leg.convert_after_s,
                        **leg_stop_fields(leg))
            for i, leg in enumerate(legs, start=1)]


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def leg_from_row(i: int, row: dict) -> LegSpec:
    """One row of the builder's legs table (keys = LegSpec's fields; a blank cell is None or NaN) as a LegSpec,
    unchecked: save_strategy checks it. Only the blanks that mean 'not used' get a default, never a number."""
    for key in ("instrument", "action", "lots"):
        if _blank(row.get(key)):
            raise CommandError(f"Leg {i}: fill instrument, action, strike and a whole number of lots")
    vals = {k: row.get(k) for k in LEG_FIELDS if k in row}
    for key, default in (("strike_mode", "ATM"), ("entry_type", "MARKET"), ("offset", 0), ("strike", None),
                         ("target", None), ("entry_offset", 0.0), ("entry_offset_pct", False),
                         ("convert_after_s", 0), ("sl_mode", StopMode.POINTS.value), ("sl_value", None),
                         ("tp_mode", StopMode.POINTS.value), ("tp_value", None), ("trail_points", None),
                         ("reentry_count", 0), ("reentry_mode", ReentryMode.SAME.value), ("reentry_wait", False)):
        if _blank(vals.get(key)):
            vals[key] = default
    for key in ("instrument", "action", "strike_mode", "entry_type"):
        vals[key] = str(vals[key]).strip().upper()
    return LegSpec(**vals)


def describe_leg(leg) -> str:
    """'SELL 1×CE ATM', 'BUY 2×PE OTM2', 'SELL 1×CE ₹50', 'SELL 1×PE Δ0.30', 'BUY 1×FUT', '... LIMIT −2 → MKT 30s'."""
    what = f"{leg.action} {leg.lots}×{leg.instrument}"
    if leg.instrument != "FUT":
        mode = leg.strike_mode
        what += {"STRIKE": f" {leg.strike or 0:g}", "PREMIUM": f" ₹{leg.target or 0:g}",
                 "DELTA": f" Δ{leg.target or 0:.2f}", "ITM": f" ITM{leg.offset}",
                 "OTM": f" OTM{leg.offset}"}.get(mode, f" {mode}")
    if (leg.entry_type or "MARKET") == "LIMIT":
        off = leg.entry_offset or 0.0
        what += f" LIMIT {off:+g}{'%' if leg.entry_offset_pct else ''}"
        if leg.convert_after_s:
            what += f" → MKT {leg.convert_after_s}s"
    return what
