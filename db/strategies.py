"""Strategies: save with legs, resolve legs to tradable symbols, execute on accounts (writes intents).

Resolution uses the symbol master cached in ``instruments`` and the live prices in ``latest_prices`` (both written
by the service). ATM is the listed strike nearest the underlying's LTP; ITMn / OTMn step n listed strikes away
(CE: ITM = lower strikes; PE: ITM = higher strikes); PREMIUM / DELTA pick the strike whose price / |delta| is
closest to the leg's target (db/leg_pick.py). A relative expiry (current week, ..., next month) is resolved from
the listed expiries at that moment (db/expiry_rules.py). Editing, cloning and deleting saved strategies:
db/strategy_admin.py.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select

from config import MarketSettings
from db import Database
from db import margin
from db.clock import entry_denial, today_ist
from db.commands import CommandError, check_multiplier, split_qty
from db.expiry_rules import LABELS, ExpiryMode, NoSuchExpiry, resolve
from db.intents import new_client_order_id
from db.wake import notify
from db.leg_pick import by_delta, by_premium, chain_ltps, limit_price, no_prices
from db.models import (Account, Execution, Instrument, OrderIntent, Strategy, StrategyLeg,
                       StrategyRun, utcnow)
from db.prices import fresh_ltp
from db.rawsql import insert_row, raw_cursor, update_rows
from db.strategy_specs import (  # noqa: F401 - LegSpec and OPTION_EXCHANGE are named from here by callers
    LEG_FIELDS, LEG_STOP_FIELDS, NAME_RE, OPTION_EXCHANGE, LegSpec, check_definition, check_legs, check_limits,
    leg_rows, leg_stop_fields)
from db.vocab import ENTRIES_DENIED


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
    pricetype: str = "MARKET"
    limit_price: float = 0.0
    convert_after_s: int | None = None


def _check_expiry(s, underlying: str, exchange: str, expiry: str, expiry_mode: str) -> str:
    """The expiry to store: the fixed date (which must be listed) or '' for a relative mode (which must resolve
    today, so a strategy that could not execute is not saved)."""
    opt_exch = OPTION_EXCHANGE[exchange]
    if expiry_mode != ExpiryMode.FIXED:
        listed = listed_expiries(s, underlying, opt_exch)
        if not listed:
            raise CommandError(f"No {underlying} options in the symbol master")
        try:
            resolve(expiry_mode, listed, today_ist())
        except NoSuchExpiry as exc:
            raise CommandError(f"{underlying}: {exc}") from None
        return ""
    if not s.scalar(select(func.count()).select_from(Instrument).where(
            Instrument.name == underlying, Instrument.exchange == opt_exch, Instrument.expiry == expiry)):
        raise CommandError(f"No {underlying} contracts expiring {expiry or '(none)'} in the symbol master")
    return expiry


def save_strategy(db: Database, name: str, underlying: str, exchange: str, expiry: str, legs: list[LegSpec], *,
                  product: str = "NRML", max_loss=None, max_profit=None, trailing_sl=None,
                  expiry_mode: str = ExpiryMode.FIXED, strategy_id: int | None = None) -> int:
    """Save a new strategy, or (``strategy_id``) replace a saved one's definition under the same id. Every check
    comes before the write; a bad value raises CommandError and nothing is written. Runs already started keep
    what they copied (limits, symbols, quantities): an edit changes only later executions."""
    name = (name or "").strip()
    legs = check_definition(name, exchange, product, expiry_mode, legs)
    limits = check_limits(max_loss, max_profit, trailing_sl)
    with db.write() as s:
        expiry = _check_expiry(s, underlying, exchange, expiry, expiry_mode)
        st = None
        if strategy_id is not None:
            st = s.get(Strategy, strategy_id)
            if st is None or st.deleted_at is not None:
                raise CommandError(f"Unknown strategy {strategy_id}")
        clash = s.scalar(select(Strategy.id).where(Strategy.name == name))
        if clash is not None and clash != strategy_id:
            raise CommandError(f"A strategy named '{name}' already exists")
        if st is None:
            st = Strategy(name=name)
            s.add(st)
        for k, v in dict(name=name, underlying=underlying, exchange=exchange, expiry=expiry,
                         expiry_mode=str(expiry_mode), product=product, **limits).items():
            setattr(st, k, v)
        st.legs = leg_rows(legs)
        s.flush()
        return st.id


def listed_expiries(s, underlying: str, opt_exchange: str) -> list[str]:
    return list(s.scalars(select(Instrument.expiry).distinct().where(
        Instrument.name == underlying, Instrument.exchange == opt_exchange,
        Instrument.instrumenttype.in_(("CE", "PE")), Instrument.expiry != "")))


def strategy_expiry(s, strategy: Strategy) -> str:
    """The expiry the strategy trades now: its fixed date, or its relative mode resolved on today's IST date."""
    mode = strategy.expiry_mode or ExpiryMode.FIXED
    if mode == ExpiryMode.FIXED:
        return strategy.expiry
    listed = listed_expiries(s, strategy.underlying, OPTION_EXCHANGE[strategy.exchange])
    try:
        return resolve(mode, listed, today_ist())
    except NoSuchExpiry as exc:
        raise CommandError(f"{strategy.underlying} {LABELS[ExpiryMode(mode)].lower()}: {exc}") from None


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
    """Each leg as the contract and order it trades now (strike, quantity, MARKET or LIMIT price)."""
    exch = OPTION_EXCHANGE[strategy.exchange]
    expiry = strategy_expiry(s, strategy) if any(leg.instrument != "FUT" for leg in strategy.legs) else ""
    out, chains = [], {}  # legs of one type share their chain (an iron condor reads two, not four)
    for leg in strategy.legs:
        if leg.instrument == "FUT":
            futs = sorted(_contracts(s, strategy.underlying, exch, "FUT"), key=lambda i: parse_expiry(i.expiry))
            inst = futs[0] if futs else None
            if inst is None:
                raise CommandError(f"Leg {leg.leg_no}: no {strategy.underlying} future in the symbol master")
        else:
            chain = chains.get(leg.instrument)
            if chain is None:
                chain = chains[leg.instrument] = _contracts(s, strategy.underlying, exch, leg.instrument, expiry)
            if not chain:
                raise CommandError(f"Leg {leg.leg_no}: no {leg.instrument} strikes for {expiry}")
            inst = _pick_strike(s, chain, leg, ltp, strategy.underlying, expiry)
        out.append(_order_of(s, leg, inst, strategy.underlying, expiry))
    return out


class Contract(NamedTuple):
    """What resolving a leg reads of a listed contract (Instrument's attribute names)."""
    symbol: str
    exchange: str
    strike: float
    lotsize: int
    freeze_qty: int | None
    tick_size: float
    instrumenttype: str
    expiry: str


# Plain SQL into plain rows: a chain is ~120 contracts per leg, and loading them as ORM Instrument entities was
# most of a webhook's CPU in the API (3.7 ms of a 2-leg strategy's resolve; 1.7 ms as ORM column rows).
CONTRACTS_SQL = ("SELECT symbol, exchange, strike, lotsize, freeze_qty, tick_size, instrumenttype, expiry "
                 "FROM instruments WHERE name = ? AND exchange = ? AND instrumenttype = ?")


def _contracts(s, underlying: str, exchange: str, itype: str, expiry: str | None = None) -> list[Contract]:
    """The listed contracts of one type (and expiry), by strike."""
    sql, args = CONTRACTS_SQL, [underlying, exchange, itype]
    if expiry is not None:
        sql, args = sql + " AND expiry = ?", args + [expiry]
    return [Contract(*r) for r in raw_cursor(s).execute(sql + " ORDER BY strike", args)]


def _order_of(s, leg: StrategyLeg, inst: Contract, underlying: str, expiry: str) -> ResolvedLeg:
    base = dict(leg_no=leg.leg_no, symbol=inst.symbol, exchange=inst.exchange, action=leg.action,
                quantity=leg.lots * inst.lotsize, lotsize=inst.lotsize, freeze_qty=inst.freeze_qty,
                strike=inst.strike)
    if (leg.entry_type or "MARKET") == "MARKET":
        return ResolvedLeg(**base)
    ltp = fresh_ltp(s, inst.symbol, inst.exchange)
    if ltp is None:
        raise CommandError(f"Leg {leg.leg_no}: no live price for {inst.symbol} to set its LIMIT price: "
                           f"open the {underlying} {expiry or 'futures'} chain or wait for the service")
    price = limit_price(ltp, leg.entry_offset or 0.0, bool(leg.entry_offset_pct), inst.tick_size)
    return ResolvedLeg(**base, pricetype="LIMIT", limit_price=price, convert_after_s=leg.convert_after_s or None)


def _pick_strike(s, chain: list[Contract], leg: StrategyLeg, ltp: float, underlying: str,
                 expiry: str) -> Contract:
    if leg.strike_mode == "STRIKE":
        for inst in chain:
            if abs(inst.strike - leg.strike) < 1e-6:
                return inst
        raise CommandError(f"Leg {leg.leg_no}: strike {leg.strike:g} is not listed")
    if leg.strike_mode in ("PREMIUM", "DELTA"):
        ltps = chain_ltps(s, chain)
        inst = (by_premium(chain, ltps, leg.target) if leg.strike_mode == "PREMIUM"
                else by_delta(chain, ltps, ltp, expiry, leg.target))
        if inst is None:
            raise no_prices(underlying, expiry)
        return inst
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
    if st.deleted_at is not None:
        raise CommandError(f"Strategy '{st.name}' was deleted")
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
    if found is None or found.deleted_at is not None:
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
        out = execute_in(s, strategy_id, account_ids, group_id, multipliers, margin_check_id, margin_max_age_s,
                         market)
    notify(db.path)
    return out


def execute_in(s, strategy_id, account_ids: list[int], group_id: str, multipliers: dict[int, int] | None = None,
               margin_check_id: int | None = None, margin_max_age_s: float = 120.0,
               market: MarketSettings | None = None,
               margin_answers: list[margin.CheckResult] | None = None) -> ExecuteResult:
    """execute_plan inside the caller's write transaction (the local API and webhooks write their own record of
    the call in the same one). The runs an earlier call wrote for ``group_id`` are returned, writing nothing,
    when there are any. Every check comes before the first row is added. The time rules (``market``, default
    settings if None) refuse the entries after their product's cut-off, whichever way the call came in (the UI,
    the API, a webhook); the dispatcher checks every entry again before sending it. ``margin_answers``: the
    broker's answers the service asked for itself just before (a timed entry, services/timed.py), instead of a
    margin_check command's: an account short of margin gets no run, as with ``margin_check_id``."""
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
    if margin_check_id is not None:
        refused = margin.gate(
            s, int(margin_check_id), st.id, {a.id: (mult[a.id], margin.plan_of(legs, mult[a.id])) for a in accounts},
            {a.id: a.name for a in accounts}, margin_max_age_s)
    else:
        refused = margin.refuse_short(s, st.id, [r for r in margin_answers or [] if r.account_id in mult], "service")
    runs = [_write_run(s, st, acct, group_id, legs, mult[acct.id]) for acct in accounts if acct.id not in refused]
    return ExecuteResult(group_id, runs, refused)


def _write_run(s, st: Strategy, acct: Account, group_id: str, legs: list[ResolvedLeg], multiplier: int) -> int:
    # plain INSERTs (db/rawsql.py) inside the caller's write transaction: through the ORM a 2-leg run was five
    # flushes, ~3 ms of CPU with the write gate held (the service's order claims wait behind it)
    cur, now = raw_cursor(s), utcnow()
    run_id = insert_row(cur, StrategyRun.__table__, dict(
        strategy_id=st.id, account_id=acct.id, group_id=group_id, max_loss=st.max_loss, max_profit=st.max_profit,
        trailing_sl=st.trailing_sl, multiplier=multiplier), now)
    stops = {leg.leg_no: leg_stop_fields(leg) for leg in st.legs}  # copied: a later edit never changes this run
    for leg in legs:
        for qty in split_qty(leg.quantity * multiplier, leg.freeze_qty, leg.lotsize):
            ex_id = insert_row(cur, Execution.__table__, dict(
                run_id=run_id, account_id=acct.id, leg_no=leg.leg_no, symbol=leg.symbol, exchange=leg.exchange,
                action=leg.action, quantity=qty, product=st.product, **stops[leg.leg_no]), now)
            intent_id = insert_row(cur, OrderIntent.__table__, dict(
                client_order_id=new_client_order_id(), account_id=acct.id, run_id=run_id, execution_id=ex_id,
                purpose="entry", source="strategy", priority=entry_priority(leg.action, leg.leg_no),
                strategy_tag=st.name[:64], symbol=leg.symbol, exchange=leg.exchange, action=leg.action,
                requested_qty=qty, pricetype=leg.pricetype, limit_price=leg.limit_price,
                convert_after_s=leg.convert_after_s, product=st.product), now)
            update_rows(cur, Execution.__table__, dict(entry_intent_id=intent_id), "id = ?", (ex_id,))
    return run_id
