"""Strategies: save with legs, resolve legs to tradable symbols, execute on accounts (writes intents).

Resolution uses the symbol master cached in ``instruments`` and the underlying's live price in
``latest_prices`` (both written by the service). ATM is the listed strike nearest the underlying's LTP;
ITMn / OTMn step n listed strikes away (CE: ITM = lower strikes; PE: ITM = higher strikes).
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from config import MarketSettings
from db import Database
from db.clock import entry_denial
from db.commands import CommandError, split_qty
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


def execute_strategy(db: Database, strategy_id: int, account_ids: list[int],
                     execute_key: str | None = None, market: MarketSettings | None = None) -> tuple[str, list[int]]:
    """Create one run per account with its executions and queued entry intents, in one transaction.
    Returns (group_id, run ids).

    ``execute_key`` (a uuid4 hex minted when the form renders, as Quick Order does with its client_order_id) makes
    the call idempotent: it becomes the runs' group id, and a second call with the same key returns the runs the
    first one wrote, writing nothing (a double click, a resubmitted form). The check and the write are one
    BEGIN IMMEDIATE transaction, so two racing calls cannot both write."""
    if not account_ids:
        raise CommandError("Choose at least one account")
    if execute_key is not None and (not isinstance(execute_key, str) or not EXECUTE_KEY.match(execute_key)):
        raise CommandError("execute key must be 32 hex characters")
    if isinstance(strategy_id, bool) or not str(strategy_id).isdigit():
        raise CommandError(f"Unknown strategy '{str(strategy_id)[:20]}'")
    if any(isinstance(a, bool) or not str(a).isdigit() for a in account_ids):
        raise CommandError("Unknown or deactivated account selected")
    group_id = execute_key or uuid.uuid4().hex
    with db.write() as s:
        done = list(s.scalars(select(StrategyRun.id).where(StrategyRun.group_id == group_id).order_by(StrategyRun.id)))
        if done:
            return group_id, done
        st = s.get(Strategy, int(strategy_id))
        if st is None:
            raise CommandError(f"Unknown strategy {strategy_id}")
        if not st.legs:
            raise CommandError(f"Strategy '{st.name}' has no legs")
        late = entry_denial(market, st.product) if market is not None else ""  # the dispatcher checks again
        if late:
            raise CommandError(f"Not executed: {late}")
        accounts = [s.get(Account, int(a)) for a in dict.fromkeys(account_ids)]
        if any(a is None or not a.is_active for a in accounts):
            raise CommandError("Unknown or deactivated account selected")
        stopped = [a for a in accounts if a.trading_state in ENTRIES_DENIED]
        if stopped:
            raise CommandError("; ".join(f"account '{a.name}' is {a.trading_state}: "
                                         f"{a.trading_reason or 'by the trader'}" for a in stopped)
                               + " (re-arm it in Accounts to trade)")
        legs = resolve_legs(s, st, underlying_ltp(s, st))
        runs = []
        for acct in accounts:
            run = StrategyRun(strategy_id=st.id, account_id=acct.id, group_id=group_id, max_loss=st.max_loss,
                              max_profit=st.max_profit, trailing_sl=st.trailing_sl)
            s.add(run)
            s.flush()
            runs.append(run.id)
            for leg in legs:
                for qty in split_qty(leg.quantity, leg.freeze_qty, leg.lotsize):
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
        return group_id, runs
