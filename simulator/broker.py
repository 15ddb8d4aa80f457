"""Paper broker: accounts, orders, fills, positions, funds (pure Python, sandbox semantics)."""

from __future__ import annotations

import json
import random
import secrets
import time
from dataclasses import dataclass, field
from math import floor

from .fills import (
    CANCELLED,
    COMPLETE,
    OPEN,
    REJECTED,
    TRIGGER_PENDING,
    Position,
    initial_fill,
    later_fill,
    limit_ok,
    reducing_qty,
)
from .instruments import Instrument
from .market import Market
from .timeutil import ist_stamp, now_ist, session_day

DEFAULT_CAPITAL = 10_000_000.0
EQUITY = ("NSE", "BSE")
DERIV = ("NFO", "BFO", "MCX", "CDS", "BCD", "NCDEX", "DELTAIN")
LOT_EXCH = ("NFO", "BFO", "CDS", "BCD", "MCX", "NCDEX", "DELTAIN")
AN = {"mode": "analyze"}


class PreEncoded(str):
    """A response body already encoded exactly as the REST layer would encode it (sorted keys, compact)."""


def compact_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def with_rows(envelope: dict, rows: list[str]) -> PreEncoded:
    """``envelope`` encoded with its one ``ROWS`` placeholder replaced by the JSON array of the encoded ``rows``."""
    return PreEncoded(compact_json(envelope).replace(f'"{ROWS}"', "[" + ",".join(rows) + "]", 1))


ROWS = "@@rows@@"


def err(msg: str, code: int = 400, **extra) -> tuple[int, dict]:
    return code, {"status": "error", "message": msg, **extra, **AN}


def leverage(inst: Instrument, product: str) -> float:
    if inst.is_option:
        return 1.0
    if inst.itype == "FUT":
        return 10.0
    return 5.0 if product == "MIS" else 1.0


@dataclass
class Order:
    orderid: str
    account: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    pricetype: str
    product: str
    price: float
    trigger_price: float
    strategy: str
    status: str = OPEN
    average_price: float = 0.0
    filled_quantity: int = 0
    rejection_reason: str = ""
    timestamp: str = field(default_factory=ist_stamp)
    updated: str = field(default_factory=ist_stamp)
    triggered: bool = False
    blocked: float = 0.0
    # A /_sim/partial rule taken at placement: the first fill is only part of the quantity, the rest fills at
    # ``rest_at`` (time.monotonic) or never (None). Only in the simulator, never in OpenAlgo responses.
    partial: dict | None = field(default=None, repr=False, compare=False)
    rest_at: float | None = field(default=None, repr=False, compare=False)
    # epoch ms (time.time()) when the sim's handler created the order: benchmarks measure latency to the broker.
    # Only in the /_sim/orders log, never in OpenAlgo responses.
    received_at_ms: float = field(default_factory=lambda: time.time() * 1000.0)
    _book_json: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.exchange, self.symbol)

    @property
    def pending_quantity(self) -> int:
        return self.quantity - self.filled_quantity if self.status in (OPEN, TRIGGER_PENDING) else 0

    def _common(self) -> dict:
        return {"action": self.action, "average_price": round(self.average_price, 2),
                "exchange": self.exchange, "filled_quantity": self.filled_quantity,
                "order_status": self.status, "orderid": self.orderid,
                "pending_quantity": self.pending_quantity, "price": round(self.price, 2),
                "product": self.product, "quantity": self.quantity, "strategy": self.strategy,
                "symbol": self.symbol, "timestamp": self.timestamp,
                "trigger_price": round(self.trigger_price, 2)}

    def book_row(self) -> dict:
        d = self._common()
        d.update(pricetype=self.pricetype, rejection_reason=self.rejection_reason)
        return dict(sorted(d.items()))

    def book_json(self) -> str:
        """``book_row()`` encoded as the orderbook response encodes it, re-encoded only when the order changed:
        the poller asks for the whole day's book every second, and nearly all of it is unchanged."""
        state = (self.action, self.average_price, self.exchange, self.filled_quantity, self.status, self.orderid,
                 self.price, self.product, self.quantity, self.strategy, self.symbol, self.timestamp,
                 self.trigger_price, self.pricetype, self.rejection_reason)
        if self._book_json is None or self._book_json[0] != state:
            self._book_json = (state, compact_json(self.book_row()))
        return self._book_json[1]

    def status_row(self) -> dict:
        d = self._common()
        d["price_type"] = self.pricetype
        return dict(sorted(d.items()))

    def log_row(self) -> dict:
        d = self.book_row()
        d.update(account=self.account, updated=self.updated, received_at_ms=self.received_at_ms)
        return d


@dataclass
class Trade:
    orderid: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    price: float
    product: str
    strategy: str
    timestamp: str
    tradeid: str
    _row_json: str | None = field(default=None, init=False, repr=False, compare=False)

    def row_json(self) -> str:
        """``row()`` encoded once: a trade never changes."""
        if self._row_json is None:
            self._row_json = compact_json(self.row())
        return self._row_json

    def row(self) -> dict:
        return {"action": self.action, "average_price": self.price, "exchange": self.exchange,
                "orderid": self.orderid, "price": self.price, "product": self.product,
                "quantity": self.quantity, "strategy": self.strategy, "symbol": self.symbol,
                "timestamp": self.timestamp, "trade_value": round(self.price * self.quantity, 2),
                "tradeid": self.tradeid}


@dataclass
class Account:
    name: str
    apikey: str
    capital: float = DEFAULT_CAPITAL
    orders: dict[str, Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    positions: dict[tuple[str, str, str], Position] = field(default_factory=dict)

    def position(self, symbol: str, exchange: str, product: str) -> Position:
        k = (symbol, exchange, product)
        if k not in self.positions:
            self.positions[k] = Position(symbol, exchange, product)
        return self.positions[k]

    def net_qty(self, symbol: str, exchange: str, product: str) -> int:
        p = self.positions.get((symbol, exchange, product))
        return p.quantity if p else 0

    def realized(self) -> float:
        return sum(p.realized for p in self.positions.values())


class Broker:
    def __init__(self, market: Market, mis_gate: bool = False):
        self.market = market
        self.mis_gate = mis_gate
        self.by_key: dict[str, Account] = {}
        self.by_name: dict[str, Account] = {}
        self.log: list[dict | Order] = []  # every accepted/rejected order, placement order
        self.pending: dict[tuple[str, str], list[tuple[Account, Order]]] = {}
        self.ids: set[str] = set()
        self.rng = random.Random()
        self.listeners: list = []  # callables(order) on status change
        self.partials: dict[tuple[str, str], dict] = {}  # (exchange, symbol) -> partial-fill rule (/_sim/partial)
        self.session = session_day()

    # ----- accounts ------------------------------------------------------
    def add_account(self, name: str, capital: float | None = None, apikey: str | None = None) -> Account:
        if name in self.by_name:
            raise ValueError(f"Account {name} already exists")
        key = apikey or secrets.token_hex(32)
        if key in self.by_key:
            raise ValueError("API key already in use")
        acct = Account(name, key, float(capital) if capital is not None else DEFAULT_CAPITAL)
        self.by_key[key] = acct
        self.by_name[name] = acct
        return acct

    def reset(self) -> None:
        for a in self.by_key.values():
            a.orders.clear(), a.trades.clear(), a.positions.clear()
        self.log.clear()
        self.pending.clear()
        self.partials.clear()

    def roll_session(self) -> bool:
        """At a new session (03:00 IST on the sim's clock, or a clock moved past it) the positionbook starts the
        day afresh, as the sandbox's does: closed positions drop out, open ones carry forward with no realised
        P&L of the new day (yesterday's is booked into the capital). Orders and trades stay listed. True if it
        rolled."""
        day = session_day()
        if day == self.session:
            return False
        self.session = day
        for acct in self.by_key.values():
            for k, p in list(acct.positions.items()):
                acct.capital += p.realized
                p.realized = 0.0
                if not p.quantity:
                    del acct.positions[k]
        return True

    # ----- helpers -------------------------------------------------------
    def new_orderid(self) -> str:
        while True:
            now = now_ist()
            oid = f"{now:%y%m%d}{now.microsecond:06d}{self.rng.randint(0, 99):02d}"
            if oid not in self.ids:
                self.ids.add(oid)
                return oid

    def ltp(self, inst: Instrument) -> float:
        return self.market.state(inst.key).ltp

    def used_margin(self, acct: Account) -> float:
        total = sum(o.blocked for o in acct.orders.values() if o.status in (OPEN, TRIGGER_PENDING))
        for p in acct.positions.values():
            if p.quantity:
                inst = self.market.get(p.exchange, p.symbol)
                total += abs(p.quantity) * p.average_price / leverage(inst, p.product)
        return total

    def available(self, acct: Account) -> float:
        return acct.capital + acct.realized() - self.used_margin(acct)

    def _log_reject(self, acct: Account, p: dict, msg: str, orderid: str | None = None) -> None:
        row = {k: p.get(k) for k in ("symbol", "exchange", "action", "quantity", "pricetype",
                                     "product", "price", "trigger_price", "strategy")}
        row.update(account=acct.name, orderid=orderid, order_status=REJECTED,
                   rejection_reason=msg, timestamp=ist_stamp(), updated=ist_stamp(),
                   received_at_ms=time.time() * 1000.0)
        self.log.append(row)

    def log_rows(self) -> list[dict]:
        return [x.log_row() if isinstance(x, Order) else dict(x) for x in self.log]

    # ----- placement -----------------------------------------------------
    def check_rules(self, acct: Account, p: dict, inst: Instrument | None) -> str | None:
        ex, prod, pt = p["exchange"], p["product"], p["pricetype"]
        if ex in EQUITY and prod == "NRML":
            return f"NRML product not allowed for {ex} equity segment. Use CNC for delivery or MIS for intraday."
        if ex in DERIV and prod == "CNC":
            return (f"CNC product not allowed for {ex} derivatives segment. "
                    "Use NRML for carryforward or MIS for intraday.")
        if pt in ("LIMIT", "SL") and not p["price"]:
            return f"{pt} orders require price"
        if pt in ("SL", "SL-M") and not p["trigger_price"]:
            return f"{pt} orders require trigger_price"
        if ex.endswith("_INDEX"):
            return "Invalid exchange. Must be one of NSE, BSE, NFO, BFO, CDS, BCD, MCX, NCDEX, DELTAIN"
        if inst is None:
            return f"Symbol {p['symbol']} not found on {ex}"
        if ex in LOT_EXCH and p["quantity"] % inst.lotsize:
            return f"Quantity must be in multiples of lot size {inst.lotsize}"
        if self.mis_gate and prod == "MIS":
            return self._mis_gate(acct, p)
        return None

    def _mis_gate(self, acct: Account, p: dict) -> str | None:
        t = now_ist().time()
        if not (t.hour * 60 + t.minute >= 15 * 60 + 15 or t.hour < 9):
            return None
        signed = p["quantity"] * (1 if p["action"] == "BUY" else -1)
        if reducing_qty(acct.net_qty(p["symbol"], p["exchange"], "MIS"), signed):
            return None
        return ("MIS orders cannot be placed after square-off time (15:15 IST). "
                "Trading resumes at 09:00 AM IST.")

    def place(self, acct: Account, p: dict) -> tuple[int, dict]:
        """Place a schema-validated order (action upper-cased, quantity int)."""
        inst = self.market.get(p["exchange"], p["symbol"])
        msg = self.check_rules(acct, p, inst)
        if msg:
            self._log_reject(acct, p, msg)
            return err(msg)
        if p["action"] == "SELL" and p["product"] == "CNC":
            have = max(0, acct.net_qty(p["symbol"], p["exchange"], "CNC"))
            if have <= 0 or p["quantity"] > have:
                return self._cnc_reject(acct, p, have)
        st = self.market.state(inst.key)
        ref = {"MARKET": st.ltp, "LIMIT": p["price"]}.get(p["pricetype"], p["trigger_price"])
        signed = p["quantity"] * (1 if p["action"] == "BUY" else -1)
        excess = abs(signed) - reducing_qty(acct.net_qty(p["symbol"], p["exchange"], p["product"]), signed)
        need = 0.0
        if not (p["action"] == "SELL" and p["product"] == "CNC"):
            need = excess * ref / leverage(inst, p["product"])
        avail = self.available(acct)
        if need > avail:
            msg = (f"Insufficient funds. Required: ₹{need:.2f}, Available: ₹{avail:.2f}, "
                   f"Shortage: ₹{need - avail:.2f}")
            self._log_reject(acct, p, msg)
            return err(msg)
        o = Order(self.new_orderid(), acct.name, p["symbol"], p["exchange"], p["action"], p["quantity"],
                  p["pricetype"], p["product"], ref if p["pricetype"] == "MARKET" else p["price"],
                  p["trigger_price"], p.get("strategy", ""), blocked=need)
        acct.orders[o.orderid] = o
        self.log.append(o)
        if o.pricetype in ("MARKET", "LIMIT"):
            o.partial = self._take_partial(o.key)
        bid, ask = self.market.bid_ask(inst, st)
        status, px = initial_fill(o.action, o.pricetype, o.price, o.trigger_price, st.ltp, bid, ask)
        self._settle(acct, o, status, px)
        return 200, {"orderid": o.orderid, "status": "success", **AN}

    def _cnc_reject(self, acct: Account, p: dict, have: int) -> tuple[int, dict]:
        sym = p["symbol"]
        if have <= 0:
            msg = (f"Cannot sell {sym} in CNC. No positions or holdings available. CNC (delivery) "
                   "requires existing shares. Use MIS for intraday short selling.")
        else:
            msg = (f"Cannot sell {p['quantity']} shares of {sym} in CNC. Only {have} shares "
                   f"available (Position: {have}, Holdings: 0)")
        o = Order(self.new_orderid(), acct.name, sym, p["exchange"], p["action"], p["quantity"],
                  p["pricetype"], p["product"], p["price"], p["trigger_price"], p.get("strategy", ""),
                  status=REJECTED, rejection_reason=msg)
        acct.orders[o.orderid] = o
        self.log.append(o)
        self._notify(o)
        return err(msg, orderid=o.orderid)

    # ----- partial fills (a simulator option: the OpenAlgo sandbox never fills partly, real brokers do) -----
    def set_partial(self, key: tuple[str, str], rule: dict) -> dict:
        """Orders placed on ``key`` from now on fill part first (``fill_qty`` units, or ``fill_ratio`` of the
        quantity rounded down to whole lots) and the rest ``rest_after_s`` seconds later, or never (None: the
        remainder rests open until cancelled). ``count``: how many orders the rule applies to (None = all)."""
        qty, ratio = rule.get("fill_qty"), rule.get("fill_ratio")
        if (qty is None) == (ratio is None):
            raise ValueError("exactly one of fill_qty or fill_ratio is required")
        if qty is not None and (not isinstance(qty, int) or isinstance(qty, bool) or qty < 1):
            raise ValueError("fill_qty must be a positive integer")
        if ratio is not None and not (isinstance(ratio, (int, float)) and 0 < ratio < 1):
            raise ValueError("fill_ratio must be a number between 0 and 1 (exclusive)")
        rest = rule.get("rest_after_s")
        if rest is not None and (not isinstance(rest, (int, float)) or rest < 0):
            raise ValueError("rest_after_s must be a number >= 0, or null for never")
        count = rule.get("count")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer, or null for every order")
        self.partials[key] = dict(fill_qty=qty, fill_ratio=ratio, rest_after_s=rest, count=count)
        return dict(self.partials[key])

    def _take_partial(self, key: tuple[str, str]) -> dict | None:
        rule = self.partials.get(key)
        if rule is None:
            return None
        if rule["count"] is not None:
            rule["count"] -= 1
            if rule["count"] <= 0:
                del self.partials[key]
        return dict(rule)

    def _part_qty(self, o: Order) -> int:
        """Units of the first fill under the order's partial rule: whole lots, at least one, less than all."""
        inst = self.market.get(o.exchange, o.symbol)
        lot = inst.lotsize if inst is not None and o.exchange in LOT_EXCH else 1
        rule = o.partial
        want = rule["fill_qty"] if rule["fill_qty"] is not None else floor(o.quantity * rule["fill_ratio"])
        part = max(lot, (int(want) // lot) * lot)
        return part if part < o.quantity else 0  # nothing to hold back: the order fills whole

    def _rest_price(self, o: Order) -> float | None:
        """Price the remainder of a partly filled order fills at, once due (None: not now)."""
        inst = self.market.get(o.exchange, o.symbol)
        st = self.market.state(o.key)
        if o.pricetype == "MARKET":
            bid, ask = self.market.bid_ask(inst, st)
            px = ask if o.action == "BUY" else bid
            return px if px > 0 else st.ltp
        return st.ltp if limit_ok(o.action == "BUY", o.price, st.ltp) else None

    def rests_due(self) -> bool:
        now = time.monotonic()
        return any(o.rest_at is not None and o.rest_at <= now and o.status == OPEN
                   for lst in self.pending.values() for _, o in lst)

    def _settle(self, acct: Account, o: Order, status: str, px: float | None) -> None:
        if status == COMPLETE and o.partial is not None and o.filled_quantity == 0:
            part = self._part_qty(o)
            if part:
                self._fill(acct, o, px, part)
                rest = o.partial["rest_after_s"]
                o.rest_at = None if rest is None else time.monotonic() + float(rest)
                status = OPEN
        if status == OPEN and o.pricetype == "SL":
            o.triggered = True
        changed = status != o.status or (status == OPEN and o.filled_quantity > 0)
        o.status = status
        o.updated = ist_stamp()
        if status == COMPLETE:
            self._fill(acct, o, px, o.quantity - o.filled_quantity)
        elif status in (OPEN, TRIGGER_PENDING):
            lst = self.pending.setdefault(o.key, [])
            if all(x[1] is not o for x in lst):
                lst.append((acct, o))
        if changed or status != OPEN:
            self._notify(o)

    def _fill(self, acct: Account, o: Order, px: float, qty: int) -> None:
        """Fill ``qty`` more units at ``px``: average_price is the average of everything filled so far."""
        done = o.filled_quantity
        o.blocked = o.blocked * (o.quantity - done - qty) / (o.quantity - done) if o.quantity > done else 0.0
        o.average_price = (o.average_price * done + px * qty) / (done + qty)
        o.filled_quantity = done + qty
        signed = qty * (1 if o.action == "BUY" else -1)
        pos = acct.position(o.symbol, o.exchange, o.product)
        pos.apply(signed, px)
        now = now_ist()
        acct.trades.append(Trade(o.orderid, o.symbol, o.exchange, o.action, qty, px, o.product,
                                 o.strategy, ist_stamp(now),
                                 f"TRADE-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"))

    def _notify(self, o: Order) -> None:
        for fn in self.listeners:
            fn(o)

    # ----- engine --------------------------------------------------------
    def on_prices(self, keys) -> int:
        """Check resting orders of the given instruments against current LTP. Returns fills."""
        fills = 0
        for key in keys:
            lst = self.pending.get(key)
            if not lst:
                continue
            ltp = self.market.state(key).ltp
            keep = []
            for acct, o in lst:
                if o.status not in (OPEN, TRIGGER_PENDING):
                    continue
                if o.filled_quantity:  # partly filled: the remainder fills only when its rule says so
                    px = self._rest_price(o) if o.rest_at is not None and o.rest_at <= time.monotonic() else None
                    if px is None:
                        keep.append((acct, o))
                        continue
                    fills += 1
                    self._settle(acct, o, COMPLETE, px)
                    continue
                status, px = later_fill(o.action, o.pricetype, o.status, o.price, o.trigger_price,
                                        ltp, o.triggered)
                if status == COMPLETE:
                    fills += 1
                    self._settle(acct, o, status, px)
                else:
                    if status != o.status:
                        self._settle(acct, o, status, px)
                    keep.append((acct, o))
            if keep:
                self.pending[key] = keep
            else:
                self.pending.pop(key, None)
        return fills

    def check_all(self) -> int:
        return self.on_prices(list(self.pending.keys()))

    def cancel(self, acct: Account, orderid: str) -> tuple[int, dict]:
        o = acct.orders.get(orderid)
        if o is None:
            return err(f"Order {orderid} not found", 404)
        if o.status not in (OPEN, TRIGGER_PENDING):
            return err(f"Cannot cancel order in {o.status} status")
        o.status, o.blocked, o.updated = CANCELLED, 0.0, ist_stamp()
        self._notify(o)
        return 200, {"message": "Order cancelled successfully", "orderid": orderid, "status": "success", **AN}

    def modify(self, acct: Account, p: dict) -> tuple[int, dict]:
        o = acct.orders.get(p["orderid"])
        if o is None:
            return err(f"Order {p['orderid']} not found", 404)
        if o.status not in (OPEN, TRIGGER_PENDING):
            return err(f"Cannot modify order in {o.status} status")
        inst = self.market.get(o.exchange, o.symbol)
        if o.exchange in LOT_EXCH and p["quantity"] % inst.lotsize:
            return err(f"Quantity must be in multiples of lot size {inst.lotsize}")
        if p["quantity"] < o.filled_quantity:
            return err(f"Quantity cannot be below the filled quantity {o.filled_quantity}")
        if p.get("pricetype") == "MARKET" and o.pricetype == "LIMIT":
            return self._to_market(acct, o, p["quantity"])
        o.quantity = p["quantity"]
        if p["price"] and o.pricetype in ("LIMIT", "SL"):
            o.price = p["price"]
        if p["trigger_price"] and o.pricetype in ("SL", "SL-M"):
            o.trigger_price = p["trigger_price"]
        o.updated = ist_stamp()
        self.on_prices([o.key])
        return 200, {"message": "Order modified successfully", "orderid": o.orderid, "status": "success", **AN}

    def _to_market(self, acct: Account, o: Order, quantity: int) -> tuple[int, dict]:
        """A resting LIMIT order modified to MARKET, as live brokers allow (the OpenAlgo sandbox applies only
        quantity, price and trigger): it fills now at the touch, like a MARKET order placed now."""
        inst = self.market.get(o.exchange, o.symbol)
        st = self.market.state(o.key)
        o.quantity, o.pricetype, o.updated = quantity, "MARKET", ist_stamp()
        self.pending[o.key] = [x for x in self.pending.get(o.key, []) if x[1] is not o]
        if not self.pending[o.key]:
            self.pending.pop(o.key)
        bid, ask = self.market.bid_ask(inst, st)
        status, px = initial_fill(o.action, "MARKET", 0.0, 0.0, st.ltp, bid, ask)
        self._settle(acct, o, status, px)
        return 200, {"message": "Order modified successfully", "orderid": o.orderid, "status": "success", **AN}
