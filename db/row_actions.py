"""The statements behind the Positions & Orders page's row actions: square off one position, modify one working
order.

square_off_position (services/position_exit.py reads a FRESH positionbook, then writes through the dispatcher's
one exit writer, ``write_square_off`` in its transaction):
  * an exit of ours still live on the position (a flatten's, a stop's, a leg's) is closing it already: refused,
    nothing written (a second close computed from the positionbook would trade the same units twice);
  * the units strategy legs hold there (entered legs of live runs) exit through their leg exit
    (db.leg_exits.write_leg_exit, kind ``close_leg``): the run goes on with its other legs;
  * what the broker shows beyond the legs (a Quick Order position, an order placed outside the app) gets one
    MARKET exit, opposite side, that quantity;
  * legs holding more than the broker shows, or the other way round: refused with both numbers (an exit computed
    from either would trade units that are not there);
  * the Quick Order stops on the position are cancelled with it (what they protect is being closed).
The exits' client_order_ids derive from the command (``sqp-<command>-...``): a command carried out twice (the
service restarted in the middle) finds its first orders and writes nothing more. Exits are never refused by the
account's trading state.

modify_order from the page: ``check_modify`` runs the service's own checks (a LIMIT / SL order working at the
broker, the price on the tick, a Quick Order's quantity in lots) and the fat-finger guards (db/order_guards.py)
before the command is queued, so a bad price is an error on the page and nothing is queued.
"""
from __future__ import annotations

import json
from typing import NamedTuple

from sqlalchemy import select

from config import OrderGuardSettings
from db import Database
from db.commands import CommandError, guarded, modify_order_payload
from db.exits import exit_priority
from db.leg_exits import modifiable, write_leg_exit
from db.models import Execution, OrderIntent, RiskEvent, StrategyRun, utcnow
from db.order_fsm import LIVE
from db.run_fsm import LIVE_RUN, UNFINISHED_RUN, LegStatus
from db.stops import cancel_position_stops
from db.vocab import LegExit

SQUARE_OFF_EVENT = "square_off_position"


def square_off_coid(command_id: int, part: str) -> str:
    return f"sqp-{command_id}-{part}"[:40]


def square_off_written(s, command_id: int) -> list[tuple[int, str, int, str, str]]:
    """(intent id, action, quantity, symbol, status) of every exit command ``command_id`` wrote already."""
    return [tuple(r) for r in s.execute(
        select(OrderIntent.id, OrderIntent.action, OrderIntent.requested_qty, OrderIntent.symbol, OrderIntent.status)
        .where(OrderIntent.client_order_id.like(f"sqp-{int(command_id)}-%")).order_by(OrderIntent.id))]


class SquareOff(NamedTuple):
    ids: list[int]  # exit intents written (legs' and the free position's)
    runs: list[int]  # runs whose legs exit
    summary: str


def _on(model, account_id: int, symbol: str, exchange: str, product: str) -> tuple:
    return (model.account_id == account_id, model.symbol == symbol, model.exchange == exchange,
            model.product == product)


def _signed(action: str, qty: int) -> int:
    return qty if action == "BUY" else -qty


def _legs_on(s, account_id: int, symbol: str, exchange: str, product: str) -> list[tuple[int, int, str, int]]:
    """(run id, leg no, action, quantity) of the entered legs of live runs on the position."""
    return [tuple(r) for r in s.execute(
        select(Execution.run_id, Execution.leg_no, Execution.action, Execution.quantity)
        .join(StrategyRun, StrategyRun.id == Execution.run_id)
        .where(*_on(Execution, account_id, symbol, exchange, product), Execution.status == LegStatus.ENTERED,
               StrategyRun.status.in_(LIVE_RUN)).order_by(Execution.run_id, Execution.leg_no))]


def _refusal(s, account_id: int, symbol: str, exchange: str, product: str) -> str:
    """Why nothing may be written for the position now ('' = nothing in the way)."""
    exits = list(s.scalars(select(OrderIntent.id).where(
        *_on(OrderIntent, account_id, symbol, exchange, product), OrderIntent.purpose == "exit",
        OrderIntent.status.in_(LIVE))))
    if exits:
        return f"an exit of ours is already working on it (order #{', #'.join(map(str, exits))})"
    exiting = s.execute(select(Execution.run_id, Execution.leg_no).join(StrategyRun, StrategyRun.id == Execution.run_id)
                        .where(*_on(Execution, account_id, symbol, exchange, product),
                               Execution.status == LegStatus.EXITING,
                               StrategyRun.status.in_(UNFINISHED_RUN))).first()
    if exiting:
        return f"run #{exiting[0]} leg {exiting[1]} on it is exiting (the risk manager retries its exit)"
    return ""


def write_square_off(s, command_id: int, account_id: int, symbol: str, exchange: str, product: str,
                     broker_qty: int, ts_ist: str) -> SquareOff:
    """In the caller's (the exit writer's) transaction: close the position the broker reports as ``broker_qty``
    (signed: + long, - short), as the module's docstring says. CommandError (nothing written) when it cannot."""
    what = f"{symbol} {exchange} {product}"
    why = _refusal(s, account_id, symbol, exchange, product)
    if why:
        raise CommandError(f"{what} not squared off: {why}; nothing sent")
    legs = _legs_on(s, account_id, symbol, exchange, product)
    groups = sorted({(run_id, leg_no) for run_id, leg_no, _, _ in legs})
    held = sum(_signed(action, qty) for _, _, action, qty in legs)
    elsewhere = s.scalar(select(Execution.id).where(
        Execution.status == LegStatus.ENTERED, Execution.run_id.in_([r for r, _ in groups] or [0]),
        Execution.leg_no.in_([n for _, n in groups] or [0]),
        ~((Execution.symbol == symbol) & (Execution.exchange == exchange) & (Execution.product == product))).limit(1))
    if (held and (held * broker_qty <= 0 or abs(held) > abs(broker_qty))) or elsewhere is not None:
        legs_txt = ", ".join(f"run #{r} leg {n}" for r, n in groups)
        raise CommandError(f"{what} not squared off: the broker shows {broker_qty:+d} but strategy legs ({legs_txt}) "
                           f"hold {held:+d}; exit the run or the leg on the Risk Monitor, or Flatten the account")
    ids: list[int] = []
    for run_id, leg_no in groups:
        done = write_leg_exit(s, run_id, leg_no, LegExit.CLOSE.value, None, None, ts_ist,
                              coid_of=lambda ex_id: square_off_coid(command_id, f"x{ex_id}"))
        if done:
            ids += done[0]
    rest = broker_qty - held
    parts = [f"run #{r} leg {n}" for r, n in groups]
    if rest:
        action = "SELL" if rest > 0 else "BUY"
        intent = OrderIntent(client_order_id=square_off_coid(command_id, "pos"), account_id=account_id,
                             purpose="exit", source="ui", priority=exit_priority(action, 0),
                             strategy_tag=f"squareoff-{command_id}"[:64], symbol=symbol, exchange=exchange,
                             action=action, requested_qty=abs(rest), pricetype="MARKET", product=product)
        s.add(intent)
        s.flush()
        ids.append(intent.id)
        parts.append(f"{action} {abs(rest)} at market (order #{intent.id})")
    stops = cancel_position_stops(s, account_id, symbol, exchange, product,
                                  f"position squared off (command #{command_id}) at {ts_ist}")
    working = list(s.scalars(select(OrderIntent.id).where(
        *_on(OrderIntent, account_id, symbol, exchange, product), OrderIntent.purpose != "exit",
        OrderIntent.status.in_(LIVE))))
    summary = (f"{what}: the broker shows {broker_qty:+d}; closing: {'; '.join(parts)}"
               + (f"; {stops} stop(s) cancelled" if stops else "")
               + (f"; order(s) #{', #'.join(map(str, working))} of ours still working on it: cancel them to stay flat"
                  if working else ""))
    coids = list(s.scalars(select(OrderIntent.client_order_id).where(OrderIntent.id.in_(ids))))
    s.add(RiskEvent(account_id=account_id, event_type=SQUARE_OFF_EVENT, action="exit", message=summary[:512],
                    ts_ist=ts_ist, exit_order_ids=json.dumps(coids), ts_utc=utcnow()))
    return SquareOff(ids, [r for r, _ in groups], summary)


def check_modify(db: Database, payload: dict, guards: OrderGuardSettings | None = None,
                 confirmed: bool = False) -> dict:
    """The clean modify_order payload, after the checks the service makes (CommandError naming the problem) and the
    fat-finger guards: beyond their caps CommandError, within their confirmation band NeedsConfirmation until
    ``confirmed``. Nothing is written."""
    clean = modify_order_payload(payload)
    with db.read() as s:
        intent = modifiable(s, clean["intent_id"], clean["price"], clean.get("quantity"))
        guarded(s, modify_fields(intent, clean["price"], clean.get("quantity")), guards, confirmed)
    return clean


def modify_fields(intent: OrderIntent, price: float, quantity: int | None) -> dict:
    """The order a modify would leave working, as the fat-finger guards read an order."""
    return dict(symbol=intent.symbol, exchange=intent.exchange, pricetype=intent.pricetype, limit_price=price,
                requested_qty=quantity or intent.requested_qty)
