"""Minimal marshmallow-compatible validation producing OpenAlgo's error messages."""

from __future__ import annotations

import math
import re

VALID_EXCHANGES = ["NSE", "NFO", "CDS", "BSE", "BFO", "BCD", "MCX", "NCDEX", "NCO",
                   "NSE_INDEX", "BSE_INDEX", "MCX_INDEX", "GLOBAL_INDEX", "CRYPTO"]
CRYPTO = ("CRYPTO",)
ACTIONS = ["BUY", "SELL", "buy", "sell"]
PRICETYPES = ["MARKET", "LIMIT", "SL", "SL-M"]
PRODUCTS = ["MIS", "NRML", "CNC"]
INTERVALS = ["1s", "5s", "10s", "15s", "30s", "45s", "1m", "2m", "3m", "5m", "10m", "15m", "20m",
             "30m", "1h", "2h", "3h", "4h", "D", "W", "M", "Q", "Y"]
MISSING = object()
REQ = "Missing data for required field."
OFFSET_RE = re.compile(r"^(ATM|ITM([1-9]|[1-4][0-9]|50)|OTM([1-9]|[1-4][0-9]|50))$")


class F:
    def __init__(self, kind: str, required: bool = False, default=MISSING, choices=None,
                 lo=None, lo_incl: bool = True, hi=None, err: str | None = None, none_ok: bool = False,
                 check=None, nested: dict | None = None):
        self.kind, self.required, self.default, self.choices = kind, required, default, choices
        self.lo, self.lo_incl, self.hi, self.err, self.none_ok = lo, lo_incl, hi, err, none_ok
        self.check, self.nested = check, nested

    def load(self, v):
        """Return (value, error_list_or_None)."""
        if v is None:
            return (None, None) if self.none_ok else (None, ["Field may not be null."])
        v, e = _coerce(self.kind, v, self.nested)
        if e:
            return None, e
        if self.choices is not None and v not in self.choices:
            return None, [f"Must be one of: {', '.join(self.choices)}."]
        if self.lo is not None and (v < self.lo or (v == self.lo and not self.lo_incl)) or \
                self.hi is not None and v > self.hi:
            return None, [self.err or _range_msg(self)]
        if self.check:
            msg = self.check(v)
            if msg:
                return None, [msg]
        return v, None


def _range_msg(f: F) -> str:
    if f.hi is not None and f.lo is not None:
        return f"Must be greater than or equal to {f.lo} and less than or equal to {f.hi}."
    return f"Must be greater than {'or equal to ' if f.lo_incl else ''}{f.lo}."


def _coerce(kind: str, v, nested):
    if kind == "str":
        return (v, None) if isinstance(v, str) else (None, ["Not a valid string."])
    if kind in ("float", "int"):
        if isinstance(v, bool):
            return None, ["Not a valid number." if kind == "float" else "Not a valid integer."]
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None, ["Not a valid number." if kind == "float" else "Not a valid integer."]
        if math.isnan(f) or math.isinf(f):
            return None, ["Special numeric values (nan or infinity) are not permitted."]
        if kind == "int":
            if not f.is_integer() or (isinstance(v, str) and not re.fullmatch(r"\s*-?\d+\s*", v)):
                return None, ["Not a valid integer."]
            return int(f), None
        return f, None
    if kind == "bool":
        truthy = {True, "true", "True", "TRUE", "1", "yes", "on"}
        falsy = {False, "false", "False", "FALSE", "0", "no", "off"}
        if isinstance(v, (bool, int, str)) and v in truthy:
            return True, None
        if isinstance(v, (bool, int, str)) and v in falsy:
            return False, None
        return None, ["Not a valid boolean."]
    if kind == "list":
        if not isinstance(v, list):
            return None, ["Not a valid list."]
        if nested is None:
            return v, None
        out, errs = [], {}
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                errs[i] = {"_schema": ["Invalid input type."]}
                continue
            data, e = validate(nested, item)
            if e:
                errs[i] = e
            out.append(data)
        return (None, errs) if errs else (out, None)
    return v, None


def validate(schema: dict, body) -> tuple[dict, dict]:
    """Validate a body against a schema: returns (data, errors)."""
    if not isinstance(body, dict):
        return {}, {"_schema": ["Invalid input type."]}
    data, errors = {}, {}
    for name, f in schema.items():
        if name not in body:
            if f.required:
                errors[name] = [REQ]
            elif f.default is not MISSING:
                data[name] = f.default
            continue
        val, e = f.load(body[name])
        if e:
            errors[name] = e
        else:
            data[name] = val
    if not errors and "quantity" in data and "exchange" in data and data["exchange"] not in CRYPTO:
        q = data["quantity"]
        if isinstance(q, float):
            if not q.is_integer():
                return data, {"quantity": [f"Fractional quantity ({q}) is not allowed for non-crypto exchanges."]}
            data["quantity"] = int(q)
    if "action" in data and isinstance(data["action"], str):
        data["action"] = data["action"].upper()
    return data, errors


def offset_check(v: str):
    return None if OFFSET_RE.match(v.upper()) else "Offset must be ATM, ITM1-ITM50, or OTM1-OTM50"


def expiry_check(v: str):
    return None if re.fullmatch(r"\d{2}[A-Za-z]{3}\d{2}", v) else \
        "Invalid expiry date format. Use DDMMMYY (e.g., 28OCT25)"


APIKEY = F("str", True, lo=None, check=lambda v: None if 1 <= len(v) <= 256 else "Length must be between 1 and 256.")
STRAT = F("str", True)
EXCH = F("str", True, choices=VALID_EXCHANGES)
SYM = F("str", True)
ACTION = F("str", True, choices=ACTIONS)
POS_QTY = F("float", True, lo=0, lo_incl=False, err="Quantity must be a positive number.")
PRICE = F("float", default=0.0, lo=0, err="Price must be a non-negative number.")
TRIG = F("float", default=0.0, lo=0, err="Trigger price must be a non-negative number.")
DISC = F("int", default=0, lo=0, err="Disclosed quantity must be a non-negative integer.")
PT = F("str", default="MARKET", choices=PRICETYPES)
PROD = F("str", default="MIS", choices=PRODUCTS)

ORDER_ITEM = dict(exchange=EXCH, symbol=SYM, action=ACTION, quantity=POS_QTY, pricetype=PT, product=PROD,
                  price=PRICE, trigger_price=TRIG, disclosed_quantity=DISC)
ORDER = dict(apikey=APIKEY, strategy=STRAT, **ORDER_ITEM, underlying_ltp=F("float", default=None, none_ok=True))
SMART = dict(apikey=APIKEY, strategy=STRAT, exchange=EXCH, symbol=SYM, action=ACTION,
             quantity=F("float", True, lo=0, err="Quantity must be a non-negative number."),
             position_size=F("float", True), pricetype=PT, product=PROD, price=PRICE, trigger_price=TRIG,
             disclosed_quantity=DISC)
MODIFY = dict(apikey=APIKEY, strategy=STRAT, exchange=EXCH, symbol=SYM, orderid=F("str", True), action=ACTION,
              product=F("str", True, choices=PRODUCTS), pricetype=F("str", True, choices=PRICETYPES),
              price=F("float", True, lo=0, err="Price must be a non-negative number."), quantity=POS_QTY,
              disclosed_quantity=F("int", True, lo=0, err="Disclosed quantity must be a non-negative integer."),
              trigger_price=F("float", True, lo=0, err="Trigger price must be a non-negative number."))
ORDERID = dict(apikey=APIKEY, strategy=STRAT, orderid=F("str", True))
STRATEGY_ONLY = dict(apikey=APIKEY, strategy=STRAT)
BASKET = dict(apikey=APIKEY, strategy=STRAT, orders=F("list", True, nested=ORDER_ITEM))
SPLIT = dict(apikey=APIKEY, strategy=STRAT, exchange=EXCH, symbol=SYM, action=ACTION,
             quantity=F("float", True, lo=0, lo_incl=False, err="Total quantity must be a positive number."),
             splitsize=F("int", True, lo=1, err="Split size must be a positive integer."),
             pricetype=PT, product=PROD, price=PRICE, trigger_price=TRIG, disclosed_quantity=DISC)
OPENPOS = dict(apikey=APIKEY, strategy=STRAT, symbol=SYM, exchange=EXCH, product=F("str", True, choices=PRODUCTS))
APIKEY_ONLY = dict(apikey=APIKEY)
QUOTE = dict(apikey=APIKEY, symbol=SYM, exchange=EXCH)
MULTI = dict(apikey=APIKEY, symbols=F("list", True, nested=dict(symbol=SYM, exchange=EXCH),
                                     check=lambda v: None if v else "Shorter than minimum length 1."))
HISTORY = dict(apikey=APIKEY, symbol=SYM, exchange=EXCH, interval=F("str", True, choices=INTERVALS),
               start_date=F("str", True), end_date=F("str", True), source=F("str", default="api",
                                                                              choices=["api", "db"]))
SEARCH = dict(apikey=APIKEY, query=F("str", True), exchange=F("str", default=None, none_ok=True,
                                                              choices=VALID_EXCHANGES))
EXPIRY = dict(apikey=APIKEY, symbol=SYM, exchange=F("str", True, choices=["NFO", "BFO", "MCX", "CDS", "NCO",
                                                                          "BCD", "NCDEX", "CRYPTO"]),
              instrumenttype=F("str", True, choices=["futures", "options"]))
OPT_BASE = dict(apikey=APIKEY, underlying=F("str", True), exchange=EXCH,
                expiry_date=F("str", check=expiry_check), strike_int=F("int", lo=1, none_ok=True),
                offset=F("str", True, check=offset_check), option_type=F("str", True, choices=["CE", "PE", "ce", "pe"]))
OPTIONSYMBOL = dict(OPT_BASE, strategy=F("str", none_ok=True))
OPTIONSORDER = dict(OPT_BASE, strategy=STRAT, action=ACTION,
                    quantity=F("int", True, lo=1, err="Quantity must be a positive integer."),
                    splitsize=F("int", default=0, lo=0, none_ok=True, err="Split size must be a non-negative integer."),
                    pricetype=PT, product=F("str", default="MIS", choices=["MIS", "NRML"]), price=PRICE,
                    trigger_price=TRIG, disclosed_quantity=DISC)
OPTIONCHAIN = dict(apikey=APIKEY, underlying=F("str", True), exchange=EXCH,
                   expiry_date=F("str", True, check=expiry_check),
                   strike_count=F("int", default=None, none_ok=True, lo=1, hi=100),
                   with_greeks=F("bool", default=False), interest_rate=F("float", default=None, none_ok=True))
ANALYZER_TOGGLE = dict(apikey=APIKEY, mode=F("bool", True))
FO_EXCHANGES = ["NFO", "BFO", "MCX", "CDS", "NCO", "BCD", "NCDEX", "CRYPTO"]


def _hhmm(v: str):
    return None if re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v) else "Expiry time must be in HH:MM format"


OPTIONGREEKS = dict(apikey=APIKEY, symbol=SYM, exchange=F("str", True, choices=FO_EXCHANGES),
                    interest_rate=F("float", default=0.0, none_ok=True, lo=0, hi=100),
                    forward_price=F("float", default=None, none_ok=True, lo=0, lo_incl=False),
                    underlying_symbol=F("str", default=None, none_ok=True),
                    underlying_exchange=F("str", default=None, none_ok=True, choices=VALID_EXCHANGES),
                    expiry_time=F("str", default=None, none_ok=True, check=_hhmm))
# OpenAlgo's margin schema takes quantity and prices as strings (the SDK sends them so).
MARGIN_ITEM = dict(symbol=F("str", True, check=lambda v: None if 1 <= len(v) <= 50 else
                            "Length must be between 1 and 50."),
                   exchange=EXCH, action=ACTION, quantity=F("str", True),
                   product=F("str", True, choices=PRODUCTS), pricetype=F("str", True, choices=PRICETYPES),
                   price=F("str", default="0"), trigger_price=F("str", default="0"))
MARGIN = dict(apikey=APIKEY, positions=F("list", True, nested=MARGIN_ITEM,
                                         check=lambda v: None if 1 <= len(v) <= 50 else
                                         "Length must be between 1 and 50."))
