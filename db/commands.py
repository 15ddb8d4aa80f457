"""Command rows written by the UI (and the risk manager): orders to place, control commands.

Every entry point validates first and raises ``CommandError`` with a clear message; on error nothing is
written. An order intent is written with a ``client_order_id`` the form created when it rendered, so a double
click hits the UNIQUE constraint and returns the first intent instead of placing twice.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from config import MarketSettings, OrderGuardSettings
from db import Database
from db.clock import entry_denial
from db.models import Account, ControlCommand, Instrument, OrderIntent, StrategyRun, utcnow
from db.order_guards import check_order
from db.vocab import ENTRIES_DENIED, CommandStatus

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
                  guards: OrderGuardSettings | None = None,
                  market: MarketSettings | None = None) -> tuple[int, bool]:
    """Write the queued intent(s) for one order. Returns (first intent id, created). A repeated client_order_id
    returns the first intent with created=False: the double click is absorbed, never sent twice.
    A quantity above the exchange freeze quantity becomes several intents (ids ``<cid>``, ``<cid>.2``, ...).
    The fat-finger guards (``guards``, default settings if None) hold an unusual order until ``confirmed``
    (NeedsConfirmation) and refuse one beyond their hard caps (CommandError). ``market``: see validate_order;
    an exit (``purpose='exit'``) is never refused by the time of day."""
    if not client_order_id or len(client_order_id) > 36:
        raise CommandError("client_order_id must be 1-36 characters")
    try:
        with db.write() as s:
            existing = s.scalar(select(OrderIntent.id).where(OrderIntent.client_order_id == client_order_id))
            if existing:
                return existing, False
            fields = validate_order(s, req, market if purpose != "exit" else None)
            guarded(s, fields, guards, confirmed)
            inst = s.get(Instrument, (fields["symbol"], fields["exchange"]))
            ids = []
            for n, qty in enumerate(split_qty(fields["requested_qty"], inst.freeze_qty, inst.lotsize), start=1):
                cid = client_order_id if n == 1 else f"{client_order_id}.{n}"
                intent = OrderIntent(client_order_id=cid, purpose=purpose, source=source, priority=priority,
                                     **{**fields, "requested_qty": qty})
                s.add(intent)
                s.flush()
                ids.append(intent.id)
            return ids[0], True
    except IntegrityError:  # a concurrent writer inserted the same client_order_id first
        with db.read() as s:
            existing = s.scalar(select(OrderIntent.id).where(OrderIntent.client_order_id == client_order_id))
        if existing:
            return existing, False
        raise


class RegistryError(RuntimeError):
    """The command registry and the service's handlers disagree; the service refuses to start."""


@dataclass(frozen=True)
class CommandSpec:
    """A control command kind: the id field its payload must carry (if any) and the table that id names."""
    summary: str
    id_field: str = ""
    model: type | None = None


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
    spec = COMMANDS[kind]
    with db.write() as s:
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
