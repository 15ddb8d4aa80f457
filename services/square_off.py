"""Time-based protection: the square-off of a product at its time on NSE/BSE trading days, and the re-arm of
accounts a daily limit halted, on the next trading day.

    every square_off_check_s (1 s), on the market clock (db.clock: IST, moved by tests and the demo):
      1. halted accounts whose halt lasted through an earlier day (a daily limit: its trading day) are re-armed,
         on a trading day from 09:00 IST (db.clock.REARM_FROM: the broker's positionbook, which the limit reads,
         has started the new day by then), with an audit row + risk event like the trader's re-arm;
      2. not a trading day (the XBOM calendar: weekends, exchange holidays): nothing else happens;
      3. for each product with a square-off time (MIS 15:15 by default; NRML optional; CNC never) once the time
         has come: the square_offs row for (trading day, product) is written 'running' (the latch), and every
         account (deactivated and halted ones included: an exit is never denied) is closed for that product by
         the flatten machinery (services/flatten.py, CloseJob.square_off): queued entries of the product
         withdrawn, its working orders cancelled, its positions in the positionbook closed at MARKET (BUY exits
         first), its strategy runs exited (reason 'square_off'); the account's trading state is left alone.
      4. the row becomes 'done' or 'incomplete' (with what is still open); 'incomplete' and any square-off that
         did something are alerted (square_off_done / square_off_incomplete) and written as risk events.
A service that starts (or restarts) before the time squares off at the time; one that starts after it on that
day with the row absent or still 'running' squares off at once (the exits' client_order_ids derive from the day
and product, so a second run never places anything twice); once the row is finished nothing more happens that
day.
"""
from __future__ import annotations

import logging
import threading

from db.accounts import list_accounts, rearm_due, set_trading_state
from db.clock import REARM_FROM, SQUARED_OFF_PRODUCTS, square_off_time
from db.square_offs import begin_square_off, finish_square_off
from db.vocab import SquareOffStatus, TradingState
from services.context import ServiceContext
from services.daily import report, trading_now, write_retrying
from services.flatten import CloseJob, Flattener

log = logging.getLogger("services.square_off")


class SquareOffs:
    def __init__(self, ctx: ServiceContext, flattener: Flattener, notifier=None):
        self.ctx, self.flattener, self.notifier = ctx, flattener, notifier
        self._running: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def run_once(self) -> None:
        moment = trading_now()
        if moment is None:
            return
        now, today = moment
        if now.time() >= REARM_FROM:
            self.rearm(today.isoformat())
        for product in SQUARED_OFF_PRODUCTS:
            at = square_off_time(self.ctx.settings.market, product)
            if at is not None and now.time() >= at:
                self.start(today.isoformat(), product)

    # ---- next trading day: the daily limits' halts lift ---------------------------------------------------------
    def rearm(self, today: str) -> list[int]:
        with self.ctx.db.write() as s:
            due = rearm_due(s, today)
            for account_id, _name, reason in due:
                set_trading_state(s, account_id, TradingState.ACTIVE,
                                  f"re-armed on the next trading day {today} (was: {reason})"[:256], "service")
        for account_id, name, reason in due:
            msg = f"{name}: re-armed on the next trading day {today} (halted: {reason})"
            log.warning("%s", msg)
            self._alert("account_rearmed", msg, f"account {account_id}")
        return [a for a, _, _ in due]

    # ---- the square-off ----------------------------------------------------------------------------------------
    def start(self, day: str, product: str) -> bool:
        """Start the (day, product) square-off on a thread of its own unless it finished or runs already."""
        with self._lock:
            if (day, product) in self._running:
                return False
            with self.ctx.db.write() as s:
                status = begin_square_off(s, day, product)
            if status != SquareOffStatus.RUNNING:
                return False
            self._running.add((day, product))
        threading.Thread(target=self._run, args=(day, product), name=f"square-off-{product}", daemon=True).start()
        return True

    def _run(self, day: str, product: str) -> None:
        job = CloseJob.square_off(day, product)
        try:
            accounts = [a.id for a in list_accounts(self.ctx.db)]
            try:
                summary, ok, idle = self.flattener.close_all(job, accounts)
            except Exception as exc:  # noqa: BLE001 - reported as incomplete and alerted
                log.exception("%s failed", job.label)
                summary, ok, idle = f"{type(exc).__name__}: {exc}", False, False
            status = SquareOffStatus.DONE if ok else SquareOffStatus.INCOMPLETE
            self._finish(day, product, status, summary)
            if not (ok and idle):
                self._alert("square_off_done" if ok else "square_off_incomplete", f"{job.label}: {summary}",
                            f"square-off {day} {product}")
            else:
                log.info("%s: nothing to close", job.label)
        finally:
            with self._lock:
                self._running.discard((day, product))

    def _finish(self, day: str, product: str, status: SquareOffStatus, summary: str) -> None:
        write_retrying(self.ctx.db, lambda s: finish_square_off(s, day, product, status, summary),
                       f"square-off {day} {product}", log)

    def _alert(self, kind: str, message: str, subject: str) -> None:
        report(self.notifier, log, kind, message, subject, error=kind == "square_off_incomplete")
