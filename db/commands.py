"""Command rows written by the UI (and the risk manager): orders to place, control commands.

Every entry point validates first and raises ``CommandError`` with a clear message; on error nothing is
written. An order intent is written with a ``client_order_id`` the form created when it rendered, so a double
click hits the UNIQUE constraint and returns the first intent instead of placing twice.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from config import MarketSettings, OrderGuardSettings
from db import Database
from db.clock import entry_denial
from db.wake import notify
from db.models import Account, ControlCommand, Instrument, OrderIntent, QuickStop, Strategy, StrategyRun, utcnow
from db.order_guards import check_order
from db.prices import fresh_ltp
from db.stop_levels import STOP_LOSS, TARGET, StopSpec, level
from db.vocab import ENTRIES_DENIED, CommandStatus, StopMode, StopStatus

EXCHANGES = {"NSE", "BSE", "NFO", "BFO", "CDS", "BCD", "MCX", "NCDEX"}
DERIVATIVE_EXCHANGES = {"NFO", "BFO", "CDS", "BCD", "MCX", "NCDEX"}
PRICETYPES = {"MARKET", "LIMIT", "SL", "SL-M"}
PRODUCTS = {"MIS", "CNC", "NRML"}
ACTIONS = {"BUY", "SELL"}
MAX_QTY = 1_000_000


class CommandError(ValueError):
    """User-facing validation error; nothing was written."""


@dataclass
class OrderRequest:
    account_id: int
    symbol: str
    exchange: str
    action: str
    quantity: object
    pricetype: str = "MARKET"
    product: str = "MIS"
    price: object = 0.0
    trigger_price: object = 0.0
    strategy_tag: str = "AlgoMirror"


def _number(value, what: str) -> float:
    if isinstance(value, bool):
        raise CommandError(f"{what} must be a number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CommandError(f"{what} must be a number (got '{str(value)[:20]}')") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise CommandError(f"{what} must be a finite number")
    return v


def _quantity(value) -> int:
    q = _number(value, "Quantity")
    if q != int(q):
        raise CommandError(f"Quantity must be a whole number (got {value})")
    if q <= 0:
        raise CommandError("Quantity must be greater than zero")
    if q > MAX_QTY:
        raise CommandError(f"Quantity must be at most {MAX_QTY}")
    return int(q)


def validate_order(s, req: OrderRequest, market: MarketSettings | None = None) -> dict:
    """Return the normalised intent fields or raise CommandError. Reads the account and symbol master.
    ``market``: the time rules to check a new entry against (no new entries after the cut-off); None = not
    checked here (the dispatcher checks every entry again before sending it)."""
    symbol = (req.symbol or "").strip().upper()
    exchange = (req.exchange or "").strip().upper()
    action = (req.action or "").strip().upper()
    pricetype, product = (req.pricetype or "").strip().upper(), (req.product or "").strip().upper()
    tag = (req.strategy_tag or "AlgoMirror").strip()
    if not symbol or len(symbol) > 64 or not symbol.replace("-", "").replace("&", "").replace(".", "").isalnum():
        raise CommandError("Symbol must be 1-64 characters: letters, digits, '-', '&' or '.'")
    if exchange not in EXCHANGES:
        raise CommandError(f"Exchange must be one of {', '.join(sorted(EXCHANGES))}")
    if action not in ACTIONS:
        raise CommandError("Action must be BUY or SELL")
    if pricetype not in PRICETYPES:
        raise CommandError("Price type must be MARKET, LIMIT, SL or SL-M")
    if product not in PRODUCTS:
        raise CommandError("Product must be MIS, CNC or NRML")
    if len(tag) > 64 or not tag.replace(" ", "").replace("_", "").replace("-", "").isalnum():
        raise CommandError("Strategy tag must be 1-64 characters: letters, digits, space, _ or -")
    qty = _quantity(req.quantity)
    price, trigger = _number(req.price or 0, "Price"), _number(req.trigger_price or 0, "Trigger price")
    if price < 0 or trigger < 0:
        raise CommandError("Price and trigger price cannot be negative")
    if pricetype in ("LIMIT", "SL") and price <= 0:
        raise CommandError(f"{pricetype} orders need a price greater than zero")
    if pricetype in ("SL", "SL-M") and trigger <= 0:
        raise CommandError(f"{pricetype} orders need a trigger price greater than zero")
    if pricetype in ("MARKET", "SL-M"):
        price = 0.0
    if pricetype in ("MARKET", "LIMIT"):
        trigger = 0.0
    if exchange in ("NSE", "BSE") and product == "NRML":
        raise CommandError("NRML is not allowed for equity; use CNC for delivery or MIS for intraday")
    if exchange in DERIVATIVE_EXCHANGES and product == "CNC":
        raise CommandError("CNC is not allowed for derivatives; use NRML or MIS")
    acct = s.get(Account, int(req.account_id)) if str(req.account_id).lstrip("-").isdigit() else None
    if acct is None:
        raise CommandError(f"Unknown account '{req.account_id}'")
    if not acct.is_active:
        raise CommandError(f"Account '{acct.name}' is deactivated")
    if acct.trading_state in ENTRIES_DENIED:  # the dispatcher would deny it: say so before it is queued
        raise CommandError(f"Account '{acct.name}' is {acct.trading_state}: {acct.trading_reason or 'by the trader'}"
                           " (re-arm it in Accounts to trade)")
    late = entry_denial(market, product) if market is not None else ""
    if late:
        raise CommandError(f"Not queued: {late}")
    inst = s.get(Instrument, (symbol, exchange))
    if inst is None:
        raise CommandError(f"Unknown symbol {symbol} on {exchange} (not in the symbol master)")
    if inst.lotsize > 1 and qty % inst.lotsize:
        raise CommandError(f"Quantity must be a multiple of the lot size {inst.lotsize}")
    for value, what in ((price, "Price"), (trigger, "Trigger price")):
        tick = inst.tick_size or 0.05
        if value and abs(round(value / tick) * tick - value) > 1e-6:
            raise CommandError(f"{what} must be a multiple of the tick size {tick}")
    return dict(account_id=acct.id, symbol=symbol, exchange=exchange, action=action, requested_qty=qty,
                pricetype=pricetype, product=product, limit_price=price, trigger_price=trigger, strategy_tag=tag)


def validate_stops(spec: StopSpec | None, action: str, ltp: float | None) -> StopSpec | None:
    """The clean stop-loss / target of a ticket (None when neither is set) or CommandError. Each is a positive
    number of points or a % of the price; a level below the price (a long's stop, a short's target) must stay
    above zero: under 100 %, and, when the last price is known, fewer points than it."""
    if spec is None:
        return None
    clean = {}
    for kind, what, mode, value in ((STOP_LOSS, "Stop-loss", spec.sl_mode, spec.sl_value),
                                    (TARGET, "Target", spec.tp_mode, spec.tp_value)):
        prefix = "sl" if kind == STOP_LOSS else "tp"
        if value is None:
            clean[f"{prefix}_mode"], clean[f"{prefix}_value"] = StopMode.POINTS.value, None
            continue
        if mode not in tuple(StopMode):
            raise CommandError(f"{what} must be given in points or % (got '{str(mode)[:12]}')")
        v = _number(value, what)
        if v <= 0:
            raise CommandError(f"{what} must be a positive number (got {value})")
        below = (action == "BUY") == (kind == STOP_LOSS)
        if mode == StopMode.PCT and (v >= 100 if below else v > 1000):
            raise CommandError(f"{what} of {v:g} % is out of range (must be below {100 if below else 1000} %)")
        if below and mode == StopMode.POINTS and ltp and level(action, kind, mode, v, ltp) <= 0:
            raise CommandError(f"{what} of {v:g} points from the last price ₹{ltp:,.2f} would be at or below zero")
        clean[f"{prefix}_mode"], clean[f"{prefix}_value"] = str(mode), v
    out = StopSpec(**clean)
    return out or None


def split_qty(qty: int, freeze_qty: int | None, lotsize: int) -> list[int]:
    """Slices no larger than the exchange freeze quantity, each a whole number of lots."""
    if not freeze_qty or qty <= freeze_qty:
        return [qty]
    size = max(lotsize, (freeze_qty // lotsize) * lotsize)
    parts = [size] * (qty // size)
    if qty % size:
        parts.append(qty % size)
    return parts


class NeedsConfirmation(CommandError):
    """The order passed validation but trips a fat-finger guard (db/order_guards.py): it is written only when the
    trader confirms it again. ``problems`` names each one."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Confirm this order: " + "; ".join(problems))


def guarded(s, fields: dict, guards: OrderGuardSettings | None, confirmed: bool) -> None:
    """Raise CommandError for a guard no confirmation overrides, NeedsConfirmation for one not yet confirmed."""
    result = check_order(s, fields, guards or OrderGuardSettings())
    if result.refuse:
        raise CommandError("Refused: " + "; ".join(result.refuse))
    if result.confirm and not confirmed:
        raise NeedsConfirmation(result.confirm)


def enqueue_order(db: Database, req: OrderRequest, client_order_id: str, *, purpose: str = "manual",
                  source: str = "ui", priority: int = 100, confirmed: bool = False,
                  guards: OrderGuardSettings | None = None, stops: StopSpec | None = None,
                  market: MarketSettings | None = None) -> tuple[int, bool]:
    """Write the queued intent(s) for one order. Returns (first intent id, created). A repeated client_order_id
    returns the first intent with created=False: the double click is absorbed, never sent twice.
    A quantity above the exchange freeze quantity becomes several intents (ids ``<cid>``, ``<cid>.2``, ...).
    The fat-finger guards (``guards``, default settings if None) hold an unusual order until ``confirmed``
    (NeedsConfirmation) and refuse one beyond their hard caps (CommandError). ``stops`` (a stop-loss and/or
    target) become one 'pending' quick_stops row per intent in the same transaction (the service arms each when its
    entry fills); invalid ones raise CommandError and nothing is written. ``market``: the time rules a new entry
    is checked against (no new entries after the cut-off; default settings if None); an exit
    (``purpose='exit'``) is never refused by the time of day."""
    try:
        with db.write() as s:
            out = enqueue_order_in(s, req, client_order_id, purpose=purpose, source=source, priority=priority,
                                   confirmed=confirmed, guards=guards, stops=stops, market=market)
        notify(db.path)
        return out
    except IntegrityError:  # a concurrent writer inserted the same client_order_id first
        with db.read() as s:
            existing = s.scalar(select(OrderIntent.id).where(OrderIntent.client_order_id == client_order_id))
        if existing:
            return existing, False
        raise


def enqueue_order_in(s, req: OrderRequest, client_order_id: str, *, purpose: str = "manual", source: str = "ui",
                     priority: int = 100, confirmed: bool = False, guards: OrderGuardSettings | None = None,
                     stops: StopSpec | None = None, market: MarketSettings | None = None) -> tuple[int, bool]:
    """enqueue_order inside the caller's write transaction (the local API and webhooks write their record in the
    same one). Everything is validated before the first row is added, so a CommandError leaves the session as it
    was and the caller may go on with it. The time rules (``market``, default settings if None) refuse a new
    entry after its cut-off here, so every way in (the UI, the API, webhooks) says so before queueing; the
    dispatcher checks again before sending."""
    if not client_order_id or len(client_order_id) > 36:
        raise CommandError("client_order_id must be 1-36 characters")
    existing = s.scalar(select(OrderIntent.id).where(OrderIntent.client_order_id == client_order_id))
    if existing:
        return existing, False
    fields = validate_order(s, req, None if purpose == "exit" else (market or MarketSettings()))
    guarded(s, fields, guards, confirmed)
    spec = validate_stops(stops, fields["action"], fresh_ltp(s, fields["symbol"], fields["exchange"]))
    inst = s.get(Instrument, (fields["symbol"], fields["exchange"]))
    ids = []
    for n, qty in enumerate(split_qty(fields["requested_qty"], inst.freeze_qty, inst.lotsize), start=1):
        cid = client_order_id if n == 1 else f"{client_order_id}.{n}"
        intent = OrderIntent(client_order_id=cid, purpose=purpose, source=source, priority=priority,
                             **{**fields, "requested_qty": qty})
        s.add(intent)
        s.flush()
        ids.append(intent.id)
        if spec:
            s.add(QuickStop(account_id=intent.account_id, entry_intent_id=intent.id, client_order_id=cid,
                            symbol=intent.symbol, exchange=intent.exchange, product=intent.product,
                            side=intent.action, status=StopStatus.PENDING.value, quantity=qty,
                            sl_mode=spec.sl_mode if spec.sl_value is not None else "", sl_value=spec.sl_value,
                            tp_mode=spec.tp_mode if spec.tp_value is not None else "", tp_value=spec.tp_value))
    return ids[0], True


class RegistryError(RuntimeError):
    """The command registry and the service's handlers disagree; the service refuses to start."""


@dataclass(frozen=True)
class CommandSpec:
    """A control command kind: the id field its payload must carry (if any) and the table that id names;
    ``check``: the whole payload's validator (returns the clean payload, which carries ``id_field`` too) for a
    command with more than one id."""
    summary: str
    id_field: str = ""
    model: type | None = None
    check: object = None


MAX_MULTIPLIER = 50
MAX_CHECK_ACCOUNTS = 100


def check_multiplier(value, who: str) -> int:
    """A per-account lots multiplier: a whole number 1..MAX_MULTIPLIER, or CommandError naming ``who``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MULTIPLIER:
        raise CommandError(f"Multiplier for {who} must be a whole number from 1 to {MAX_MULTIPLIER} "
                           f"(got {str(value)[:20]!r})")
    return value


def _whole_id(value, what: str, kind: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CommandError(f"'{kind}' needs a whole-number '{what}' (got {value!r:.20})")
    return value


def margin_check_payload(payload: dict) -> dict:
    """{"strategy_id": id, "accounts": [[account_id, multiplier], ...]}: 1..100 distinct accounts."""
    sid = _whole_id(payload.get("strategy_id"), "strategy_id", "margin_check")
    accts = payload.get("accounts")
    if not isinstance(accts, list) or not 1 <= len(accts) <= MAX_CHECK_ACCOUNTS:
        raise CommandError(f"'margin_check' needs 'accounts': 1 to {MAX_CHECK_ACCOUNTS} [account_id, multiplier]")
    clean = []
    for item in accts:
        if not isinstance(item, list) or len(item) != 2:
            raise CommandError("'margin_check' accounts must be [account_id, multiplier] pairs")
        aid = _whole_id(item[0], "account_id", "margin_check")
        clean.append([aid, check_multiplier(item[1], f"account {aid}")])
    if len({a for a, _ in clean}) != len(clean):
        raise CommandError("'margin_check' lists an account twice")
    return {"strategy_id": sid, "accounts": clean}


def _leg_no(payload: dict, kind: str) -> int:
    leg = payload.get("leg_no")
    if not isinstance(leg, int) or isinstance(leg, bool) or not 1 <= leg <= 20:
        raise CommandError(f"'{kind}' needs a whole-number 'leg_no' from 1 to 20 (got {leg!r:.20})")
    return leg


def close_leg_payload(payload: dict) -> dict:
    """{"run_id": id, "leg_no": 1..20}."""
    return {"run_id": _whole_id(payload.get("run_id"), "run_id", "close_leg"), "leg_no": _leg_no(payload, "close_leg")}


def modify_order_payload(payload: dict) -> dict:
    """{"intent_id": id, "price": a positive number, "quantity"?: a whole number > 0}: the new limit price (and
    quantity) of a working LIMIT / SL order."""
    iid = _whole_id(payload.get("intent_id"), "intent_id", "modify_order")
    price = payload.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float):
        raise CommandError(f"'modify_order' needs a number 'price' (got {price!r:.20})")
    price = _number(price, "Price")
    if not 0 < price < 1e8:
        raise CommandError(f"'modify_order' price must be a positive amount (got {price:g})")
    clean = {"intent_id": iid, "price": float(price)}
    qty = payload.get("quantity")
    if qty is not None:
        if isinstance(qty, bool) or not isinstance(qty, int) or not 0 < qty <= MAX_QTY:
            raise CommandError(f"'modify_order' quantity must be a whole number from 1 to {MAX_QTY} "
                               f"(got {qty!r:.20})")
        clean["quantity"] = qty
    return clean


SYMBOL_RE = re.compile(r"^[A-Z0-9&.\-]{1,64}$")


def square_off_position_payload(payload: dict) -> dict:
    """{"account_id": id, "symbol", "exchange", "product"}: one position as the positionbook names it."""
    clean = {"account_id": _whole_id(payload.get("account_id"), "account_id", "square_off_position")}
    for name, allowed in (("symbol", None), ("exchange", EXCHANGES), ("product", PRODUCTS)):
        value = payload.get(name)
        text = value.strip().upper() if isinstance(value, str) else None
        if text is None or (allowed is None and not SYMBOL_RE.match(text)) or (allowed and text not in allowed):
            what = ("1-64 letters, digits, '-', '&' or '.'" if allowed is None
                    else f"one of {', '.join(sorted(allowed))}")
            raise CommandError(f"'square_off_position' {name} must be {what} (got {str(value)[:20]!r})")
        clean[name] = text
    return clean


def roll_leg_payload(payload: dict) -> dict:
    """{"run_id", "leg_no", and "strike" (a listed strike) or "offset" (listed strikes from the leg's own, + higher,
    not 0), optional "expiry" (DD-MMM-YY as the symbol master spells it)}."""
    clean = {"run_id": _whole_id(payload.get("run_id"), "run_id", "roll_leg"), "leg_no": _leg_no(payload, "roll_leg")}
    strike, offset = payload.get("strike"), payload.get("offset")
    if (strike is None) == (offset is None):
        raise CommandError("'roll_leg' needs exactly one of 'strike' or 'offset'")
    if strike is not None:
        if isinstance(strike, bool) or not isinstance(strike, int | float) or not 0 < strike < 1e7:
            raise CommandError(f"'roll_leg' strike must be a positive number (got {strike!r:.20})")
        clean["strike"] = float(strike)
    else:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset == 0 or not -50 <= offset <= 50:
            raise CommandError(f"'roll_leg' offset must be a whole number of strikes, -50..50 and not 0 "
                               f"(got {offset!r:.20})")
        clean["offset"] = offset
    expiry = payload.get("expiry")
    if expiry is not None:
        if not isinstance(expiry, str) or not EXPIRY_RE.match(expiry.strip().upper()):
            raise CommandError(f"'roll_leg' expiry must look like 30-DEC-25 (got {str(expiry)[:20]!r})")
        clean["expiry"] = expiry.strip().upper()
    return clean


EXPIRY_RE = re.compile(r"^\d{2}-[A-Z]{3}-\d{2}$")


# The one list of control commands: the UI enqueues only these (enqueue_control), the service carries out only
# these, and refuses to start unless it has exactly one handler for each (check_handlers).
COMMANDS: dict[str, CommandSpec] = {
    "exit_run": CommandSpec("exit a strategy run now (manual exit)", "run_id", StrategyRun),
    "refresh_account": CommandSpec("sync an account's funds, positions and orders now", "account_id", Account),
    "cancel_intent": CommandSpec("cancel an order intent (queued: here; working: at the broker)", "intent_id",
                                 OrderIntent),
    "reload_accounts": CommandSpec("take new account keys/URLs into use; load the symbol master if missing"),
    "halt_account": CommandSpec("deny the account's new entries (exits always allowed) until re-armed", "account_id",
                                Account),
    "reduce_account": CommandSpec("exits only: deny the account's new entries until re-armed", "account_id",
                                  Account),
    "rearm_account": CommandSpec("allow the account's new entries again", "account_id", Account),
    "flatten_account": CommandSpec("cancel every working order, close every position, then halt the account",
                                   "account_id", Account),
    "flatten_all": CommandSpec("flatten every account"),
    "cancel_stop": CommandSpec("cancel a Quick Order stop-loss / target (the position stays open)", "stop_id",
                               QuickStop),
    "margin_check": CommandSpec("ask the broker the margin a strategy needs on accounts (at their multipliers) and "
                                "their available cash; answered in margin_checks", "strategy_id", Strategy,
                                margin_check_payload),
    "summarise_day": CommandSpec("write today's day summary now (the History page; replaces today's rows)"),
    "close_leg": CommandSpec("exit one leg of a live strategy run at market (its other legs stay)", "run_id",
                             StrategyRun, close_leg_payload),
    "modify_order": CommandSpec("change the price (and the quantity of a Quick Order) of a LIMIT / SL order "
                                "working at the broker (modifyorder)", "intent_id", OrderIntent, modify_order_payload),
    "square_off_position": CommandSpec("close one position (account, symbol, exchange, product) at market: the "
                                       "quantity a fresh positionbook shows; a strategy leg's through its leg exit",
                                       "account_id", Account, square_off_position_payload),
    "roll_leg": CommandSpec("close one leg of a live run and open the same lots at another strike / expiry "
                            "(BUY orders first)", "run_id", StrategyRun, roll_leg_payload),
}


def control_payload(kind: str, payload) -> dict:
    """The clean payload of a control command, or CommandError: a registered kind, and its id field (if it has
    one) a JSON integer > 0. Strict on purpose: 2.9, "2" and true are refused, not read as run 2 or run 1. The
    one validation of both sides: enqueue_control, and the service before it carries a command out (rows can be
    written by hand)."""
    spec = COMMANDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise CommandError(f"Unknown control command '{str(kind)[:40]}'")
    if not isinstance(payload, dict):
        raise CommandError("Control command payload must be a mapping")
    if spec.check is not None:
        return spec.check(payload)
    if not spec.id_field:
        return {}
    value = payload.get(spec.id_field)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CommandError(f"'{kind}' needs a whole-number '{spec.id_field}' (got {value!r:.20})")
    return {spec.id_field: int(value)}


def check_handlers(kinds: list[str]) -> None:
    """RegistryError unless ``kinds`` (the kind of each handler the service has) names every registered command
    exactly once and nothing else."""
    missing = sorted(set(COMMANDS) - set(kinds))
    unknown = sorted(set(kinds) - set(COMMANDS))
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    problems = [f"{what}: {', '.join(ks)}" for what, ks in (("no handler for", missing), ("handler for an "
                "unregistered command", unknown), ("more than one handler for", twice)) if ks]
    if problems:
        raise RegistryError("control commands and their handlers disagree (db/commands.py COMMANDS vs "
                            "services/control.py): " + "; ".join(problems))


def enqueue_control(db: Database, kind: str, payload: dict) -> int:
    """Validate and write one control command. Only the validated field is stored (nothing else reaches the
    service), and the referenced row must exist, so the service never gets a command it cannot carry out."""
    clean = control_payload(kind, payload)
    with db.write() as s:
        cid = enqueue_control_in(s, kind, clean)
    notify(db.path)
    return cid


def enqueue_control_in(s, kind: str, payload: dict) -> int:
    """enqueue_control inside the caller's write transaction; nothing is added when it raises CommandError."""
    clean = control_payload(kind, payload)
    spec = COMMANDS[kind]
    if spec.model is not None and s.get(spec.model, clean[spec.id_field]) is None:
        raise CommandError(f"'{kind}': no {spec.id_field.removesuffix('_id')} with id {clean[spec.id_field]}")
    cmd = ControlCommand(kind=kind, payload_json=json.dumps(clean))
    s.add(cmd)
    s.flush()
    return cmd.id


# ---- the service's side of control_commands ---------------------------------------------------------------------
def queued_controls(s) -> list[tuple[int, str, str]]:
    """(id, kind, payload_json) of every queued control command, oldest first."""
    return [(c.id, c.kind, c.payload_json) for c in s.scalars(
        select(ControlCommand).where(ControlCommand.status == CommandStatus.QUEUED.value).order_by(ControlCommand.id))]


def finish_control(s, command_id: int, status: CommandStatus | str, result: str) -> None:
    """Mark a queued control command ``status`` (done / failed) with its result (cut to 512) and the time; a row no
    longer queued is left as it is. Returns nothing."""
    s.execute(update(ControlCommand).where(ControlCommand.id == command_id,
                                          ControlCommand.status == CommandStatus.QUEUED.value)
              .values(status=status, result=str(result)[:512], processed_at=utcnow()))
