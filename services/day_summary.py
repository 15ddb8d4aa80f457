"""Day summaries (db/history.py): written for the current trading day at ``day_summary_at`` IST (the end-of-day
job) and on demand (control command ``summarise_day``, the History page's button). Writing a day again replaces
its rows, so the job, a restart after the close and a click all leave one summary per day, account and strategy.
"""
from __future__ import annotations

import logging
from datetime import date, datetime

from config import parse_hhmm
from db.clock import now_ist
from db.history import has_closed_summary, trading_day_of, write_day_summary
from services.context import ServiceContext

log = logging.getLogger("services.day_summary")


class DaySummaries:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self.close_at = parse_hhmm(ctx.settings.service.day_summary_at, "APP__SERVICE__DAY_SUMMARY_AT", ())
        self._done: date | None = None  # the last day summarised after its close by this process

    def summarise(self, moment: datetime | None = None) -> str:
        """Write the summary of the trading day ``moment`` (default: now, IST) belongs to; its rows are marked
        closed when written at or after the close. Returns what was done (the control command's result)."""
        moment = moment or now_ist()
        day = trading_day_of(moment)
        if day is None:
            return f"{moment:%a %Y-%m-%d} is not a trading day: nothing to summarise"
        closed = moment.time() >= self.close_at
        with self.ctx.db.write() as s:
            n = write_day_summary(s, day, closed)
        if closed and n:
            self._done = day
        what = "final" if closed else "so far"
        return f"{day}: {n} summary row(s) written ({what})" if n else f"{day}: nothing traded, nothing written"

    def end_of_day(self) -> None:
        """The periodic job: once the close has passed on a trading day, summarise it (once per day, and again after
        a restart only if no closed summary of that day is stored)."""
        moment = now_ist()
        day = trading_day_of(moment)
        if day is None or moment.time() < self.close_at or self._done == day:
            return
        with self.ctx.db.read() as s:
            if has_closed_summary(s, day):
                self._done = day
                return
        log.info("end of trading day: %s", self.summarise(moment))
