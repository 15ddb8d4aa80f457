"""Timed strategies: a saved strategy's entry and exit at their IST times on NSE/BSE trading days
(db/schedules.py holds the schedules and the statements).

    every square_off_check_s (1 s), on the market clock (db.clock), on trading days only (XBOM: weekends and
    exchange holidays never fire):
      entry  once its time has come and today has no entry row for the strategy:
               within timed_entry_grace_s of the time: on a thread of its own, the accounts' brokers are asked
               for the basket's margin and their cash (as Check margin does), then ONE write transaction writes
               the runs and their queued entry intents (db.strategies.execute_in: halted / deactivated accounts,
               the entry cut-off, live prices; an account short of margin gets no run) together with the
               'entered' latch row, or the refusal with a 'failed' one (alerted); past the grace by then (slow
               brokers, a busy database) it is 'missed' instead, decided in that transaction;
               later than that (the service was not running at the time): a 'missed' row and an alert, nothing
               placed: a late entry is a different trade.
      exit   once its time has come, until today's exit row is 'exited': the row is written 'exiting', every live
             run of the strategy started today is exited through the risk manager's one exit path (reason
             'time_exit', the same as the manual exit command), then the row is 'exited'. It fires however late
             (it is protective); a restart with the row still 'exiting' exits again, which is a no-op for runs
             already exiting.
A restart before the time fires at the time; after the entry row exists nothing enters again that day (the row
and the runs are one transaction, unique on strategy, day and kind).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import date, datetime

from db.clock import now_ist
from db.commands import CommandError
from db.errors import DbError
from db.schedules import DaySchedule, begin_exit, day_schedules, enter_once, finish_exit, live_runs_started_on
from db.vocab import TimedState
from services.context import ServiceContext
from services.daily import report, trading_now, write_retrying

log = logging.getLogger("services.timed")
TIME_EXIT = "time_exit"


class TimedStrategies:
    def __init__(self, ctx: ServiceContext, risk: Callable, margin_answers: Callable, notifier=None,
                 wake: Callable[[], None] = lambda: None):
        """``risk``: the risk manager (or None before it runs); ``margin_answers(strategy_id, accounts)``:
        services.margin_check.MarginChecker.answers; ``wake``: the dispatcher's, after entries are queued."""
        self.ctx, self.risk, self.margin_answers, self.notifier, self.wake = ctx, risk, margin_answers, notifier, wake
        self._entering: set[int] = set()
        self._lock = threading.Lock()

    def run_once(self) -> None:
        moment = trading_now()
        if moment is None:
            return
        now, day = moment
        with self.ctx.db.read() as s:
            scheds = day_schedules(s, day)
        wall = now.replace(tzinfo=None)
        for d in scheds:
            with self._lock:
                entering = d.strategy_id in self._entering
            if d.entry is None and d.due(d.entry_at, day) and wall >= datetime.combine(day, d.entry_at) \
                    and not entering:
                late = _late_s(d, day)
                if late > self.ctx.settings.market.timed_entry_grace_s:
                    self.miss(d, day, late)
                else:
                    self.start_entry(d, day)
                continue  # the exit waits for the entry's runs to exist
            exited = d.exit is not None and d.exit.status == TimedState.EXITED
            if not entering and not exited and d.due(d.exit_at, day) and wall >= datetime.combine(day, d.exit_at):
                self.exit(d, day)

    # ---- the entry ---------------------------------------------------------------------------------------------
    def _missed_text(self, d: DaySchedule, late_s: float, what: str = "the service reached") -> str:
        return (f"not entered: {what} the {d.entry_at:%H:%M} IST entry {late_s:.0f} s late (grace "
                f"{self.ctx.settings.market.timed_entry_grace_s:g} s); nothing placed")

    def miss(self, d: DaySchedule, day: date, late_s: float) -> None:
        with self.ctx.db.write() as s:
            *_, written = enter_once(s, d, day.isoformat(), self.ctx.settings.market,
                                     missed=self._missed_text(d, late_s))
        if written:
            report(self.notifier, log, "timed_entry_missed", f"{d.name}: {self._missed_text(d, late_s)}",
                   _subject(d, day), error=True)

    def start_entry(self, d: DaySchedule, day: date) -> bool:
        """The entry on a thread of its own (the brokers' margin answers may take seconds): once per strategy."""
        with self._lock:
            if d.strategy_id in self._entering:
                return False
            self._entering.add(d.strategy_id)
        threading.Thread(target=self._enter, args=(d, day), name=f"timed-entry-{d.strategy_id}", daemon=True).start()
        return True

    def _enter(self, d: DaySchedule, day: date) -> None:
        try:
            try:
                answers = self.margin_answers(d.strategy_id, d.accounts)
            except CommandError:  # no live price: Execute's own check says so below, in the latch row
                answers = None
            done: list = []

            def write(s) -> None:
                # the brokers' answers (their reads back off) or a busy database may have taken the entry past
                # its grace: then it is a miss, decided in the transaction that would have written it
                late = _late_s(d, day)
                missed = self._missed_text(d, late, "writing") \
                    if late > self.ctx.settings.market.timed_entry_grace_s else ""
                done[:] = enter_once(s, d, day.isoformat(), self.ctx.settings.market, answers, missed=missed)

            if not write_retrying(self.ctx.db, write, f"timed entry {d.name} {day}", log, 5):
                report(self.notifier, log, "timed_entry_failed", f"{d.name}: the {d.entry_at:%H:%M} IST entry "
                       "could not be written (database busy or full); tried again on the next check",
                       _subject(d, day), error=True)
                return
            state, runs, text, now = done
            if now and state == TimedState.MISSED:
                report(self.notifier, log, "timed_entry_missed", f"{d.name}: {text}", _subject(d, day), error=True)
            elif now:
                self.wake()
                self._entered(d, day, state, runs, text)
        except Exception:  # noqa: BLE001 - the job tries again on its next check (no row: nothing was written)
            log.exception("timed entry of %s failed", d.name)
        finally:
            with self._lock:
                self._entering.discard(d.strategy_id)

    def _entered(self, d: DaySchedule, day: date, state: str, runs: list[int], text: str) -> None:
        if state == TimedState.ENTERED:
            msg = f"{d.name}: timed entry {d.entry_at:%H:%M} IST queued run(s) {', '.join(map(str, runs))}"
            report(self.notifier, log, "timed_entry", msg + (f" ({text})" if text else ""), _subject(d, day),
                   error=bool(text))
        elif state == TimedState.FAILED:
            report(self.notifier, log, "timed_entry_failed", f"{d.name}: timed entry {d.entry_at:%H:%M} IST "
                   f"refused, nothing placed: {text}", _subject(d, day), error=True)

    # ---- the exit ----------------------------------------------------------------------------------------------
    def exit(self, d: DaySchedule, day: date) -> None:
        risk = self.risk()
        if risk is None:  # not started yet: the next check
            return
        with self.ctx.db.write() as s:
            status = begin_exit(s, d.strategy_id, day.isoformat())
            runs = live_runs_started_on(s, d.strategy_id, day)
        if status == TimedState.EXITED:
            return
        errors = []
        for run_id in runs:
            try:
                risk.exit_run(run_id, TIME_EXIT)
            except DbError as exc:  # the risk manager keeps retrying it and alarms; the row stays 'exiting'
                errors.append(f"run {run_id}: {exc}")
        if errors:
            report(self.notifier, log, "timed_exit_failed", f"{d.name}: time exit not written yet for "
                   + "; ".join(errors), _subject(d, day), error=True)
            return
        with self.ctx.db.write() as s:
            finish_exit(s, d.strategy_id, day.isoformat(), runs)
        if runs:
            report(self.notifier, log, "timed_exit", f"{d.name}: timed exit {d.exit_at:%H:%M} IST of run(s) "
                   f"{', '.join(map(str, runs))}", _subject(d, day))
        else:
            log.info("%s: timed exit %s IST, no live run of today", d.name, f"{d.exit_at:%H:%M}")


def _late_s(d: DaySchedule, day: date) -> float:
    """How far the market clock is past the schedule's entry time today, in seconds."""
    return (now_ist().replace(tzinfo=None) - datetime.combine(day, d.entry_at)).total_seconds()


def _subject(d: DaySchedule, day: date) -> str:
    return f"timed {d.name} {day}"
