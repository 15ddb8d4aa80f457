"""Strategies: save with legs, resolve legs to tradable symbols, execute on accounts (writes intents).

Resolution uses the symbol master cached in ``instruments`` and the underlying's live price in
``latest_prices`` (both written by the service). ATM is the listed strike nearest the underlying's LTP;
ITMn / OTMn step n listed strikes away (CE: ITM = lower strikes; PE: ITM = higher strikes).
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from config import MarketSettings
from db import Database
from db import margin
from db.clock import entry_denial
from db.commands import CommandError, check_multiplier, split_qty
from db.intents import new_client_order_id
from db.models import (Account, Execution, Instrument, OrderIntent, Strategy, StrategyLeg,
                       StrategyRun)
from db.prices import fresh_ltp
from db.vocab import ENTRIES_DENIED

OPTION_EXCHANGE = {"NSE_INDEX": "NFO", "NSE": "NFO", "BSE_INDEX": "BFO", "BSE": "BFO"}
NAME_RE = re.compile(r"^[A-Za-z0-9 _\-]{1,64}$")


@dataclass
class LegSpec:
    instrument: str  # CE | PE | FUT
    action: str  # BUY | SELL
    lots: int = 1
    strike_mode: str = "ATM"  # ATM | ITM | OTM | STRIKE
    offset: int = 0
    strike: float | None = None


@dataclass(frozen=True)
class ResolvedLeg:
    leg_no: int
    symbol: str
    exchange: str
    action: str
    quantity: int
    lotsize: int
    freeze_qty: int | None
    strike: float


def _positive_or_none(v, what: str) -> float | None:
    if v in (None, "", 0, 0.0):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise CommandError(f"{what} must be a number") from None
    if not (0 < f < 1e9):
        raise CommandError(f"{what} must be a positive amount in rupees")
    return f


def _check_leg(i: int, leg: LegSpec) -> LegSpec:
    if leg.instrument not in ("CE", "PE", "FUT"):
        raise CommandError(f"Leg {i}: instrument must be CE, PE or FUT")
    if leg.action not in ("BUY", "SELL"):
        raise CommandError(f"Leg {i}: action must be BUY or SELL")
    if isinstance(leg.lots, bool) or not isinstance(leg.lots, int) or not (1 <= leg.lots <= 500):
        raise CommandError(f"Leg {i}: lots must be a whole number from 1 to 500")
    if leg.instrument != "FUT":
        if leg.strike_mode not in ("ATM", "ITM", "OTM", "STRIKE"):
            raise CommandError(f"Leg {i}: strike must be ATM, ITM, OTM or a fixed strike")
        if leg.strike_mode in ("ITM", "OTM") and not (1 <= int(leg.offset) <= 50):
            raise CommandError(f"Leg {i}: ITM/OTM offset must be 1-50")
        if leg.strike_mode == "STRIKE" and not (leg.strike and leg.strike > 0):
            raise CommandError(f"Leg {i}: a fixed strike must be a positive number")
    return leg


def save_strategy(db: Database, name: str, underlying: str, exchange: str, expiry: str, legs: list[LegSpec], *,
                  product: str = "NRML", max_loss=None, max_profit=None, trailing_sl=None) -> int:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise CommandError("Strategy name must be 1-64 characters: letters, digits, space, _ or -")
    if exchange not in OPTION_EXCHANGE:
        raise CommandError("Underlying exchange must be NSE_INDEX, BSE_INDEX, NSE or BSE")
    if product not in ("NRML", "MIS"):
        raise CommandError("Product must be NRML or MIS")
    if not legs or len(legs) > 20:
        raise CommandError("A strategy needs 1 to 20 legs")
    legs = [_check_leg(i, leg) for i, leg in enumerate(legs, start=1)]
    limits = dict(max_loss=_positive_or_none(max_loss, "Max loss"),
                  max_profit=_positive_or_none(max_profit, "Max profit"),
                  trailing_sl=_positive_or_none(trailing_sl, "Trailing stop"))
    with db.write() as s:
        opt_exch = OPTION_EXCHANGE[exchange]
        if not s.scalar(select(func.count()).select_from(Instrument).where(
                Instrument.name == underlying, Instrument.exchange == opt_exch, Instrument.expiry == expiry)):
            raise CommandError(f"No {underlying} contracts expiring {expiry or '(none)'} in the symbol master")
        if s.scalar(select(func.count()).select_from(Strategy).where(Strategy.name == name)):
            raise CommandError(f"A strategy named '{name}' already exists")
        st = Strategy(name=name, underlying=underlying, exchange=exchange, expiry=expiry, product=product, **limits)
        st.legs = [StrategyLeg(leg_no=i, instrument=leg.instrument, action=leg.action, strike_mode=leg.strike_mode,
                               offset=int(leg.offset or 0), strike=leg.strike, lots=leg.lots)
                   for i, leg in enumerate(legs, start=1)]
        s.add(st)
        s.flush()
        return st.id


def parse_expiry(expiry: str) -> datetime:
    """'30-DEC-25' (symbol-master format) -> datetime; unparseable sorts last."""
    try:
        return datetime.strptime(expiry.title(), "%d-%b-%y")
    except ValueError:
        return datetime.max


def underlying_ltp(s, strategy: Strategy) -> float:
    ltp = fresh_ltp(s, strategy.underlying, strategy.exchange)
    if ltp is None:
        raise CommandError(f"No live price for {strategy.underlying}; is the background service running?")
    return ltp


def resolve_legs(s, strategy: Strategy, ltp: float) -> list[ResolvedLeg]:
    exch = OPTION_EXCHANGE[strategy.exchange]
    out = []
    for leg in strategy.legs:
        if leg.instrument == "FUT":
            futs = sorted(s.scalars(select(Instrument).where(
                Instrument.name == strategy.underlying, Instrument.exchange == exch,
                Instrument.instrumenttype == "FUT")), key=lambda i: parse_expiry(i.expiry))
            inst = futs[0] if futs else None
            if inst is None:
                raise CommandError(f"Leg {leg.leg_no}: no {strategy.underlying} future in the symbol master")
        else:
            chain = list(s.scalars(select(Instrument).where(
                Instrument.name == strategy.underlying, Instrument.exchange == exch,
                Instrument.expiry == strategy.expiry, Instrument.instrumenttype == leg.instrument)
                .order_by(Instrument.strike)))
            if not chain:
                raise CommandError(f"Leg {leg.leg_no}: no {leg.instrument} strikes for {strategy.expiry}")
            inst = _pick_strike(chain, leg, ltp)
        out.append(ResolvedLeg(leg.leg_no, inst.symbol, inst.exchange, leg.action, leg.lots * inst.lotsize,
                               inst.lotsize, inst.freeze_qty, inst.strike))
    return out


def _pick_strike(chain: list[Instrument], leg: StrategyLeg, ltp: float) -> Instrument:
    if leg.strike_mode == "STRIKE":
        for inst in chain:
            if abs(inst.strike - leg.strike) < 1e-6:
                return inst
        raise CommandError(f"Leg {leg.leg_no}: strike {leg.strike:g} is not listed")
    atm = min(range(len(chain)), key=lambda i: abs(chain[i].strike - ltp))
    step = 0 if leg.strike_mode == "ATM" else leg.offset
    # CE: ITM = lower strikes; PE: ITM = higher strikes. OTM is the opposite.
    sign = -1 if (leg.strike_mode == "ITM") == (leg.instrument == "CE") else 1
    idx = atm + sign * step
    if not 0 <= idx < len(chain):
        raise CommandError(f"Leg {leg.leg_no}: {leg.strike_mode}{leg.offset} is outside the listed strikes")
    return chain[idx]


def entry_priority(action: str, leg_no: int) -> int:
    """Entries: BUY legs before SELL legs (hedges first: margin benefit), then leg order."""
    return (10 if action == "BUY" else 50) + leg_no


EXECUTE_KEY = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class ExecuteResult:
    group_id: str
    run_ids: list[int]
    refused: dict[int, str] = field(default_factory=dict)  # account_id -> why it got no run (margin shortfall)


def _multipliers(account_ids: list[int], multipliers: dict | None) -> dict[int, int]:
    multipliers = multipliers if multipliers is not None else {}
    if not isinstance(multipliers, dict) or any(a not in account_ids for a in multipliers):
        raise CommandError("Multipliers must be given for the chosen accounts only")
    return {a: check_multiplier(multipliers.get(a, 1), f"account {a}") for a in account_ids}


def _check_ids(strategy_id, account_ids, execute_key) -> list[int]:
    if not account_ids or not isinstance(account_ids, list | tuple):
        raise CommandError("Choose at least one account")
    if execute_key is not None and (not isinstance(execute_key, str) or not EXECUTE_KEY.match(execute_key)):
        raise CommandError("execute key must be 32 hex characters")
    if isinstance(strategy_id, bool) or not str(strategy_id).isdigit():
        raise CommandError(f"Unknown strategy '{str(strategy_id)[:20]}'")
    if any(isinstance(a, bool) or not str(a).isdigit() for a in account_ids):
        raise CommandError("Unknown or deactivated account selected")
    return [int(a) for a in dict.fromkeys(account_ids)]


def _strategy(s, strategy_id) -> Strategy:
    st = s.get(Strategy, int(strategy_id))
    if st is None:
        raise CommandError(f"Unknown strategy {strategy_id}")
    if not st.legs:
        raise CommandError(f"Strategy '{st.name}' has no legs")
    return st


def strategy_ref(s, ref) -> int:
    """A strategy's id from its id or its exact name (the local API and webhook alerts name strategies either
    way); CommandError for anything else."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        found = s.get(Strategy, ref)
    elif isinstance(ref, str) and ref.strip():
        found = s.scalar(select(Strategy).where(Strategy.name == ref.strip()))
    else:
        found = None
    if found is None:
        raise CommandError(f"Unknown strategy '{str(ref)[:64]}'")
    return found.id


def resolved_strategy(db: Database, strategy_id: int) -> tuple[str, list[ResolvedLeg]]:
    """(product, legs resolved at the underlying's live price now): what a margin check prices."""
    with db.read() as s:
        st = _strategy(s, strategy_id)
        return st.product, resolve_legs(s, st, underlying_ltp(s, st))


def preview_execution(db: Database, strategy_id: int, multipliers: dict[int, int]) -> list[dict]:
    """What Execute would send now (no writes), per account and leg: account_id, multiplier, leg_no, action,
    symbol, lots, quantity, orders (freeze-quantity slices). CommandError for a bad multiplier or no live price."""
    ids = _check_ids(strategy_id, list(multipliers), None)
    mult = _multipliers(ids, multipliers)
    with db.read() as s:
        st = _strategy(s, strategy_id)
        legs = resolve_legs(s, st, underlying_ltp(s, st))
        return [dict(account_id=a, multiplier=m, leg_no=leg.leg_no, action=leg.action, symbol=leg.symbol,
                     lots=leg.quantity * m // leg.lotsize, quantity=leg.quantity * m,
                     orders=len(split_qty(leg.quantity * m, leg.freeze_qty, leg.lotsize)))
                for a, m in mult.items() for leg in legs]


def execute_strategy(db: Database, strategy_id: int, account_ids: list[int], execute_key: str | None = None,
                     multipliers: dict[int, int] | None = None,
                     market: MarketSettings | None = None) -> tuple[str, list[int]]:
    """execute_plan without a margin check: (group_id, run ids)."""
    r = execute_plan(db, strategy_id, account_ids, execute_key, multipliers, market=market)
    return r.group_id, r.run_ids


def execute_plan(db: Database, strategy_id: int, account_ids: list[int], execute_key: str | None = None,
                 multipliers: dict[int, int] | None = None, margin_check_id: int | None = None,
                 margin_max_age_s: float = 120.0, market: MarketSettings | None = None) -> ExecuteResult:
    """Create one run per account with its executions and queued entry intents, in one transaction.

    ``multipliers`` {account_id: 1..50} (default 1): that account trades each leg's lots times it (stored on the
    run), split into freeze-quantity slices per account. ``margin_check_id``: the margin_check command whose
    answers gate the accounts (db/margin.py): one short of margin gets no run and is named in ``refused``.

    ``execute_key`` (a uuid4 hex minted when the form renders, as Quick Order does with its client_order_id) makes
    the call idempotent: it becomes the runs' group id, and a second call with the same key returns the runs the
    first one wrote, writing nothing (a double click, a resubmitted form). The check and the write are one
    BEGIN IMMEDIATE transaction, so two racing calls cannot both write."""
    _check_ids(strategy_id, account_ids, execute_key)
    group_id = execute_key or uuid.uuid4().hex
    with db.write() as s:
        return execute_in(s, strategy_id, account_ids, group_id, multipliers, margin_check_id, margin_max_age_s,
                          market)


def execute_in(s, strategy_id, account_ids: list[int], group_id: str, multipliers: dict[int, int] | None = None,
               margin_check_id: int | None = None, margin_max_age_s: float = 120.0,
               market: MarketSettings | None = None) -> ExecuteResult:
    """execute_plan inside the caller's write transaction (the local API and webhooks write their own record of
    the call in the same one). The runs an earlier call wrote for ``group_id`` are returned, writing nothing,
    when there are any. Every check comes before the first row is added. The time rules (``market``, default
    settings if None) refuse the entries after their product's cut-off, whichever way the call came in (the UI,
    the API, a webhook); the dispatcher checks every entry again before sending it."""
    ids = _check_ids(strategy_id, account_ids, None)
    mult = _multipliers(ids, multipliers)
    done = list(s.scalars(select(StrategyRun.id).where(StrategyRun.group_id == group_id).order_by(StrategyRun.id)))
    if done:
        return ExecuteResult(group_id, done)
    st = _strategy(s, strategy_id)
    late = entry_denial(market or MarketSettings(), st.product)
    if late:
        raise CommandError(f"Not executed: {late}")
    accounts = [s.get(Account, a) for a in ids]
    if any(a is None or not a.is_active for a in accounts):
        raise CommandError("Unknown or deactivated account selected")
    stopped = [a for a in accounts if a.trading_state in ENTRIES_DENIED]
    if stopped:
        raise CommandError("; ".join(f"account '{a.name}' is {a.trading_state}: "
                                     f"{a.trading_reason or 'by the trader'}" for a in stopped)
                           + " (re-arm it in Accounts to trade)")
    legs = resolve_legs(s, st, underlying_ltp(s, st))
    refused = {} if margin_check_id is None else margin.gate(
        s, int(margin_check_id), st.id, {a.id: (mult[a.id], margin.plan_of(legs, mult[a.id])) for a in accounts},
        {a.id: a.name for a in accounts}, margin_max_age_s)
    runs = [_write_run(s, st, acct, group_id, legs, mult[acct.id]) for acct in accounts if acct.id not in refused]
    return ExecuteResult(group_id, runs, refused)


def _write_run(s, st: Strategy, acct: Account, group_id: str, legs: list[ResolvedLeg], multiplier: int) -> int:
    run = StrategyRun(strategy_id=st.id, account_id=acct.id, group_id=group_id, max_loss=st.max_loss,
                      max_profit=st.max_profit, trailing_sl=st.trailing_sl, multiplier=multiplier)
    s.add(run)
    s.flush()
    for leg in legs:
        for qty in split_qty(leg.quantity * multiplier, leg.freeze_qty, leg.lotsize):
            ex = Execution(run_id=run.id, account_id=acct.id, leg_no=leg.leg_no, symbol=leg.symbol,
                           exchange=leg.exchange, action=leg.action, quantity=qty, product=st.product)
            s.add(ex)
            s.flush()
            intent = OrderIntent(client_order_id=new_client_order_id(), account_id=acct.id, run_id=run.id,
                                 execution_id=ex.id, purpose="entry", source="strategy",
                                 priority=entry_priority(leg.action, leg.leg_no),
                                 strategy_tag=st.name[:64], symbol=leg.symbol, exchange=leg.exchange,
                                 action=leg.action, requested_qty=qty, pricetype="MARKET",
                                 product=st.product)
            s.add(intent)
            s.flush()
            ex.entry_intent_id = intent.id
    return run.id
