"""square_off_position control commands (Positions & Orders: Square off on one position's row).

The page showed the stored positionbook, which may be seconds old or out of date (an order placed elsewhere, a
fill since). So the service reads the account's positionbook from the broker NOW and closes the quantity it
reports for that symbol / exchange / product, through the dispatcher's one exit writer (``submit_now``: the exit
intents, and the first one claimed and sent, in one transaction; db/row_actions.py says what is written): units a
live strategy leg holds exit through that leg's exit, the rest with one MARKET exit. Nothing is sent for a
position already flat (the command's result says so), nor while an exit of ours is still working on it.

It holds the account's close lock (services/flatten.py) from the read to the write: a flatten or a square-off of
the account running meanwhile would read the same positionbook and close the same units a second time.
It runs on a thread of its own, like a margin check: a slow positionbook read (reads back off and retry) must not
hold up the control commands queued behind it (a manual exit among them). The command stays queued until it has
finished, so a service killed in the middle carries it out again at start-up; its exits' client_order_ids derive
from the command, so the second time finds them and sends nothing more.
"""
from __future__ import annotations

import logging

from broker.errors import BrokerError
from db.clock import ist_now_str
from db.row_actions import square_off_written, write_square_off
from db.vocab import CommandStatus
from services.context import ServiceContext
from services.control import DeferredRuns, finish_deferred
from services.dispatcher import Written

log = logging.getLogger("services.position_exit")


def broker_quantity(book: list[dict], symbol: str, exchange: str, product: str) -> int:
    """The signed net quantity the positionbook reports for the position (0 when it is not listed)."""
    total = 0
    for p in book:
        if (str(p.get("symbol", "")).upper(), str(p.get("exchange", "")).upper(),
                str(p.get("product", "")).upper()) == (symbol, exchange, product):
            try:
                total += int(float(p.get("quantity") or 0))
            except (TypeError, ValueError):
                raise RuntimeError(f"the positionbook's quantity for {symbol} is not a number "
                                   f"({str(p.get('quantity'))[:20]!r}); nothing sent") from None
    return total


class PositionSquareOffs:
    def __init__(self, ctx: ServiceContext, exits, risk, account_lock):
        """``exits``: the dispatcher (its ``submit_now``, the one exit writer); ``risk``: a getter for the risk
        manager (None until it runs), told to reload after a leg exit; ``account_lock(account_id)``: the lock the
        account's flattens and square-offs hold (services.flatten.Flattener.account_lock). Each of them reads the
        positionbook, then writes exits for what it shows: two at once would close the same units twice."""
        self.ctx, self.exits, self.risk, self.account_lock = ctx, exits, risk, account_lock
        self._runs = DeferredRuns("square-off")

    def start(self, command_id: int, payload: dict) -> bool:
        """Carry out command ``command_id`` (a clean payload) on a thread (once: False if it runs already)."""
        return self._runs.start(command_id, self._run, payload)

    def _run(self, command_id: int, payload: dict) -> None:
        try:
            summary, status = self.square_off(command_id, payload), CommandStatus.DONE
        except Exception as exc:  # noqa: BLE001 - the page shows it as the command's result
            log.warning("square-off %s failed: %s", command_id, exc)
            summary, status = f"{exc}" if isinstance(exc, RuntimeError | ValueError) else \
                f"{type(exc).__name__}: {exc}", CommandStatus.FAILED
        finish_deferred(self.ctx.db, command_id, status, summary, "square-off", 10)

    def square_off(self, command_id: int, p: dict) -> str:
        """Read the positionbook, close what it reports; returns the command's result (raises if nothing was)."""
        with self.account_lock(p["account_id"]):
            return self._square_off(command_id, p)

    def _square_off(self, command_id: int, p: dict) -> str:
        account_id, symbol, exchange, product = p["account_id"], p["symbol"], p["exchange"], p["product"]
        what = f"{symbol} {exchange} {product}"
        with self.ctx.db.read() as s:
            before = square_off_written(s, command_id)
        if before:  # carried out already (the service restarted before the command was marked done)
            return f"{what}: carried out already: " + "; ".join(
                f"order #{i} {a} {q} {sym} ({st})" for i, a, q, sym, st in before)
        try:
            book = self.ctx.client(account_id).positionbook()
        except (BrokerError, KeyError) as exc:
            raise RuntimeError(f"{what}: the positionbook could not be read ({exc}); nothing sent") from None
        qty = broker_quantity(book, symbol, exchange, product)
        if qty == 0:
            return f"{what}: already flat at the broker; nothing sent"

        def write(s) -> Written:
            done = write_square_off(s, command_id, account_id, symbol, exchange, product, qty, ist_now_str())
            return Written(done, (account_id,) if done.ids else ())

        done = self.exits.submit_now(write)
        log.warning("square-off %s (account %s): %s", command_id, account_id, done.summary)
        risk = self.risk()
        if done.runs and risk is not None:
            risk.reload()  # the legs it exited are 'exiting' now: the risk manager stops watching their stops
        return done.summary
