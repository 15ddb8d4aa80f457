"""Control commands written by the UI (db.commands.enqueue_control) and carried out by the service.

    exit_run         {"run_id"}       -> risk.exit_run(run_id, "manual")
    refresh_account  {"account_id"}   -> account sync now
    cancel_intent    {"intent_id"}    -> queued: cancelled here; placed/partially filled: cancelorder at the
                                         broker (the poller then sees 'cancelled'); in flight: refused
    reload_accounts  {}               -> cached broker clients dropped (new keys/URLs take effect); the feed
                                         re-reads its failover list (primary, then backups) on every reconnect
                                         and, if it has no account yet, tries at once; the symbol master is
                                         loaded if start-up could not (no primary account then)
    flatten_account  {"account_id"}   -> services/flatten.py: cancel working orders, exit runs, close every
                                         broker position, halt; finishes on its own thread (stays queued
                                         until done, so a restart runs it again: idempotent)
    flatten_all      {}               -> the same for every account, in parallel
    cancel_stop      {"stop_id"}      -> a Quick Order stop-loss / target pending or armed -> cancelled (the
                                         position stays open); one already triggered is refused
    margin_check     {"strategy_id", "accounts": [[account_id, multiplier], ...]}
                                      -> services/margin_check.py: the broker's /margin for the strategy's
                                         basket and /funds per account, answered in margin_checks; finishes on
                                         its own thread (db/margin.py: how Execute is gated on it)
    summarise_day    {}               -> today's day summary written now (services/day_summary.py; idempotent)
    close_leg        {"run_id", "leg_no"} -> risk.exit_leg: that leg's entered executions exit at market (its
                                         waiting re-entries withdrawn); the run goes on with its other legs
    modify_order     {"intent_id", "price", "quantity"?} -> modifyorder at the broker for a LIMIT / SL intent
                                         working there (a quantity only for a Quick Order; a price beyond the
                                         fat-finger caps refused); the intent carries the new price (quantity)
                                         once the broker accepted it
    square_off_position {"account_id", "symbol", "exchange", "product"} -> services/position_exit.py: a fresh
                                         positionbook, then the quantity it reports closed through the one exit
                                         writer (a strategy leg's units through its leg exit); finishes on its
                                         own thread, idempotent by the command id
    roll_leg         {"run_id", "leg_no", "strike" | "offset", "expiry"?} -> risk.roll_leg: the leg's exits and
                                         the new contract's entries in one transaction (BUY orders first);
                                         client_order_ids from the command id, so a repeat places nothing
    halt_account     {"account_id"}   -> trading state 'halted': new entries denied with the reason, exits sent
    reduce_account   {"account_id"}   -> trading state 'reducing' (exits only), the same gate
    rearm_account    {"account_id"}   -> trading state 'active' again
Each handler returns a short result string or raises; the runner stores either on the command row. The kinds
are db.commands.COMMANDS, the registry the UI enqueues from: each handler says which kind it carries out
(``@handles``), and the runner refuses to start unless every registered kind has exactly one handler and every
handler a registered kind (db.commands.check_handlers). The payload is validated by the same function as the
UI's (db.commands.control_payload): a row written into control_commands by anything else is carried out only if
it passes, so {"run_id": 2.9} fails, never exits run 2, and an unregistered kind fails, doing nothing.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from db.accounts import list_accounts, set_trading_state
from db.clock import ist_now_str
from db.commands import check_handlers, control_payload, finish_control, guarded
from db.errors import DbError
from db.executions import apply_intent_outcome
from db.intents import transition
from db.leg_exits import modifiable, record_modified
from db.models import OrderIntent
from db.order_fsm import Status
from db.row_actions import modify_fields
from db.stops import cancel_stop_in, stop_status
from db.vocab import TradingState
from broker.errors import BrokerError
from services.cancels import CANCELLABLE, send_cancel
from services.daily import write_retrying

if TYPE_CHECKING:
    from services.account_sync import AccountSync
    from services.context import ServiceContext
    from services.market_data import MarketDataManager
    from services.risk import RiskManager


@dataclass(frozen=True)
class ControlDeps:
    """What the handlers work with, handed over by whoever runs them (the runner). The risk manager and market
    data are built only when the service starts, after the handlers: getters, None until then."""
    ctx: ServiceContext
    account_sync: AccountSync
    risk: Callable[[], RiskManager | None]
    market_data: Callable[[], MarketDataManager | None]
    instruments_loaded: Callable[[], bool]
    load_instruments_soon: Callable[[], None]  # the symbol master, in a job of its own (may take seconds)
    flatten: Callable[[int, list[int]], bool] = lambda command_id, accounts: False  # services.flatten.Flattener.start
    margin_check: Callable[[int, dict], bool] = lambda command_id, payload: False  # MarginChecker.start
    summarise_day: Callable[[], str] = lambda: "day summaries not running"  # services.day_summary.DaySummaries
    # services.position_exit.PositionSquareOffs.start
    square_off_position: Callable[[int, dict], bool] = lambda command_id, payload: False


log = logging.getLogger("services.control")
DEFERRED = "deferred"  # a handler's result: the command finishes later (its worker marks it done or failed)


def finish_deferred(db, command_id: int, status, summary: str, what: str, attempts: int) -> bool:
    """A deferred command's worker marks its row done / failed. The database may be busy or full for a while after
    the work itself is done, so the write is tried ``attempts`` times a second apart. True once written."""
    return write_retrying(db, lambda s: finish_control(s, command_id, status, summary), f"{what} {command_id}", log,
                          attempts)


def handles(kind: str, wants_command_id: bool = False) -> Callable:
    """Marks a ControlHandlers method as the handler of control command ``kind`` (a db.commands.COMMANDS key);
    ``wants_command_id``: it is called with the command's id too (a handler that finishes the command later)."""
    def mark(fn: Callable) -> Callable:
        fn.control_kind, fn.wants_command_id = kind, wants_command_id
        return fn
    return mark


class ControlHandlers:
    def __init__(self, deps: ControlDeps):
        self.deps = deps
        self.handlers: dict[str, Callable[[dict], str]] = {
            kind: getattr(self, name) for name, kind in self._marked()}

    @classmethod
    def _marked(cls) -> list[tuple[str, str]]:
        """(method name, kind) of every method marked with @handles."""
        return [(name, kind) for name in dir(cls) if (kind := getattr(getattr(cls, name), "control_kind", None))]

    @classmethod
    def handled_kinds(cls) -> list[str]:
        """The kind of every handler, once per handler (so a kind handled twice is listed twice)."""
        return [kind for _name, kind in cls._marked()]

    @classmethod
    def check(cls) -> None:
        """RegistryError unless every registered command has exactly one handler here, and each handler a
        registered command: the runner calls this before it builds anything."""
        check_handlers(cls.handled_kinds())

    def handle(self, kind: str, payload: dict, command_id: int | None = None) -> str:
        """Carry out one command; returns its result, or DEFERRED for one that finishes on a worker of its own
        (it stays 'queued' meanwhile, so a restart carries it out again)."""
        clean = control_payload(kind, payload)  # CommandError: the command is marked failed, nothing done
        fn = self.handlers[kind]
        return fn(clean, command_id) if getattr(fn, "wants_command_id", False) else fn(clean)

    @handles("exit_run")
    def exit_run(self, p: dict) -> str:
        risk = self.deps.risk()
        if risk is None:
            raise RuntimeError("risk manager not running")
        try:
            ids = risk.exit_run(int(p["run_id"]), "manual")
        except DbError as exc:
            raise RuntimeError(f"exit could not be written ({exc}); the service keeps retrying it") from exc
        return f"{len(ids)} exit order(s) queued" if ids else "run is not active (already exiting or finished)"

    @handles("refresh_account")
    def refresh_account(self, p: dict) -> str:
        sync = self.deps.account_sync
        if not sync.refresh(int(p["account_id"])):
            raise RuntimeError(sync.errors.get(int(p["account_id"]), "refresh failed"))
        return "refreshed"

    @handles("cancel_intent")
    def cancel_intent(self, p: dict) -> str:
        ctx, iid = self.deps.ctx, int(p["intent_id"])
        with ctx.db.write() as s:
            intent = s.get(OrderIntent, iid)
            if intent is None:
                raise ValueError(f"unknown intent {iid}")
            status, oid, acct, tag = intent.status, intent.broker_order_id, intent.account_id, intent.strategy_tag
            if status == Status.QUEUED.value:
                if not transition(s, iid, Status.QUEUED, Status.CANCELLED, "ui", "cancelled by the user"):
                    raise RuntimeError("intent was picked up for sending; try again")
                apply_intent_outcome(s, iid)
                return "cancelled before sending"
        if status in CANCELLABLE and oid:
            send_cancel(ctx, acct, oid, tag)
            return f"cancel sent for broker order {oid}"
        raise RuntimeError(f"intent is '{status}'; it cannot be cancelled now")

    @handles("reload_accounts")
    def reload_accounts(self, p: dict) -> str:
        ctx = self.deps.ctx
        for acct in list_accounts(ctx.db):
            ctx.drop_client(acct.id)  # calls already running finish on the old client (closed later)
        md = self.deps.market_data()
        if md is not None:
            md.reload_accounts()
        if not self.deps.instruments_loaded():  # the first account was added after start: load the master now
            self.deps.load_instruments_soon()
            return "broker clients reloaded; symbol master loading"
        return "broker clients reloaded"

    @handles("halt_account")
    def halt_account(self, p: dict) -> str:
        # until='': the trader's halt waits for the trader's re-arm, even on an account a daily limit halted
        return self._trading_state(p["account_id"], TradingState.HALTED, "halted by the trader", until="")

    @handles("reduce_account")
    def reduce_account(self, p: dict) -> str:
        return self._trading_state(p["account_id"], TradingState.REDUCING, "exits only, set by the trader")

    @handles("rearm_account")
    def rearm_account(self, p: dict) -> str:
        return self._trading_state(p["account_id"], TradingState.ACTIVE, "re-armed by the trader")

    def _trading_state(self, account_id: int, state: TradingState, reason: str, until: str | None = None) -> str:
        """Entries queued already are denied by the dispatcher when their turn comes (it reads the state in the
        transaction that would send them), so nothing here needs to chase them."""
        with self.deps.ctx.db.write() as s:
            changed = set_trading_state(s, account_id, state, f"{reason} at {ist_now_str()}", "ui", until=until)
        return f"account {account_id} {state.value}" if changed else f"account {account_id} was already {state.value}"

    @handles("flatten_account", wants_command_id=True)
    def flatten_account(self, p: dict, command_id: int | None = None) -> str:
        self.deps.flatten(command_id, [p["account_id"]])
        return DEFERRED

    @handles("summarise_day")
    def summarise_day(self, p: dict) -> str:
        return self.deps.summarise_day()

    @handles("flatten_all", wants_command_id=True)
    def flatten_all(self, p: dict, command_id: int | None = None) -> str:
        self.deps.flatten(command_id, [a.id for a in list_accounts(self.deps.ctx.db)])
        return DEFERRED

    @handles("cancel_stop")
    def cancel_stop(self, p: dict) -> str:
        sid = int(p["stop_id"])
        with self.deps.ctx.db.write() as s:
            if cancel_stop_in(s, sid, f"cancelled by the trader at {ist_now_str()}"):
                return f"stop {sid} cancelled; the position stays open"
            now = stop_status(s, sid)
        if now is None:
            raise ValueError(f"unknown stop {sid}")
        raise RuntimeError(f"stop {sid} is '{now[0]}' ({now[1]}); it cannot be cancelled now")

    @handles("margin_check", wants_command_id=True)
    def margin_check(self, p: dict, command_id: int | None = None) -> str:
        self.deps.margin_check(command_id, p)
        return DEFERRED

    def _risk(self):
        risk = self.deps.risk()
        if risk is None:
            raise RuntimeError("risk manager not running")
        return risk

    @handles("close_leg")
    def close_leg(self, p: dict) -> str:
        run_id, leg_no = int(p["run_id"]), int(p["leg_no"])
        try:
            ids = self._risk().exit_leg(run_id, leg_no)
        except DbError as exc:
            raise RuntimeError(f"exit could not be written ({exc}); the service keeps retrying it") from exc
        if ids:
            return f"run {run_id} leg {leg_no}: {len(ids)} exit order(s) queued; the other legs stay"
        return f"run {run_id} leg {leg_no}: nothing entered to close (run not live, or the leg exited already)"

    @handles("roll_leg", wants_command_id=True)
    def roll_leg(self, p: dict, command_id: int | None = None) -> str:
        return self._risk().roll_leg(int(command_id or 0), int(p["run_id"]), int(p["leg_no"]), p.get("strike"),
                                     p.get("offset"), p.get("expiry"))

    @handles("modify_order")
    def modify_order(self, p: dict) -> str:
        ctx, iid, price, qty = self.deps.ctx, int(p["intent_id"]), float(p["price"]), p.get("quantity")
        with ctx.db.read() as s:
            i = modifiable(s, iid, price, qty)
            # the fat-finger caps no confirmation overrides (the page asked for the band's confirmation already)
            guarded(s, modify_fields(i, price, qty), ctx.settings.orders, confirmed=True)
            order = dict(orderid=i.broker_order_id, strategy=i.strategy_tag, symbol=i.symbol, exchange=i.exchange,
                         action=i.action, product=i.product, pricetype=i.pricetype, quantity=qty or i.requested_qty,
                         trigger_price=i.trigger_price or 0.0)
            account_id, old, old_qty = i.account_id, i.limit_price, i.requested_qty
        try:
            ctx.client(account_id).modifyorder(price=price, **order)
        except BrokerError as exc:
            raise RuntimeError(f"the broker did not modify order {order['orderid']}: {exc.message}") from exc
        with ctx.db.write() as s:
            record_modified(s, iid, price, old, qty)
        return f"order {order['orderid']} price {old:g} -> {price:g}" + (
            f", quantity {old_qty} -> {qty}" if qty and qty != old_qty else "")

    @handles("square_off_position", wants_command_id=True)
    def square_off_position(self, p: dict, command_id: int | None = None) -> str:
        self.deps.square_off_position(command_id, p)
        return DEFERRED


class DeferredRuns:
    """The threads of a deferred command kind (a flatten, a margin check, a position's square-off): the work of
    one command runs on a thread of its own, and never twice at once (the control job sees the command still
    queued while it runs, and a restart finds it queued again)."""

    def __init__(self, name: str):
        self.name = name
        self._running: set[int] = set()
        self._lock = threading.Lock()

    def start(self, command_id: int, work, *args) -> bool:
        """``work(command_id, *args)`` on a new thread; False (nothing started) if that command runs already."""
        with self._lock:
            if command_id in self._running:
                return False
            self._running.add(command_id)

        def run() -> None:
            try:
                work(command_id, *args)
            finally:
                with self._lock:
                    self._running.discard(command_id)
        threading.Thread(target=run, name=f"{self.name}-{command_id}", daemon=True).start()
        return True
