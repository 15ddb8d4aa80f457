"""Timed strategies: a saved strategy's schedule (an entry time and an exit time, IST, on NSE/BSE trading days,
the accounts and lots multipliers the entry executes on, on / off) and the once-per-day latch of each timed
action (``timed_fires``, unique on strategy, day and kind).

The schedule is validated here for every way in (the Strategies page, tests, anything later): times of day
within market hours 09:15-15:30 IST, the exit after the entry, at least one account for an entry; a bad value is
a CommandError naming it, and nothing is written.

The service's side (services/timed.py): ``enter_once`` writes the entry's latch row in the SAME transaction as
the runs and queued intents the execute creates (or as the refusal), so a crash can give neither zero nor two
entries; ``begin_exit`` / ``finish_exit`` latch the exit like the square-off's row.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import NamedTuple
from datetime import date, datetime, time, timedelta

from sqlalchemy import select

from config import MarketSettings
from db import Database
from db.clock import IST_OFFSET, entries_cutoff, is_trading_day, now_ist, offset
from db.commands import MAX_CHECK_ACCOUNTS, CommandError, check_multiplier
from db.models import Account, Strategy, StrategyRun, StrategySchedule, TimedFire, utcnow
from db.order_fsm import values
from db.run_fsm import LIVE_RUN
from db.strategies import execute_in
from db.vocab import TimedKind, TimedState

MARKET_OPEN, MARKET_CLOSE = time(9, 15), time(15, 30)
HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


# ---- the schedule: validation and storage (the page) ---------------------------------------------------------
def parse_time(text, what: str) -> time | None:
    """'09:20' -> time(9, 20); '' / None -> None (no such time); CommandError for anything else, or a time outside
    market hours."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    m = HHMM.match(text.strip()) if isinstance(text, str) else None
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise CommandError(f"{what} must be a time of day HH:MM (IST, e.g. 09:20) or empty (got {str(text)[:12]!r})")
    t = time(int(m.group(1)), int(m.group(2)))
    if not MARKET_OPEN <= t <= MARKET_CLOSE:
        raise CommandError(f"{what} {t:%H:%M} is outside market hours ({MARKET_OPEN:%H:%M}-{MARKET_CLOSE:%H:%M} IST)")
    return t


def check_schedule(entry_at, exit_at, accounts, enabled=True) -> dict:
    """The clean schedule or CommandError: entry_at / exit_at 'HH:MM' ('' = none), the exit after the entry;
    accounts [[account_id, multiplier 1..50], ...], distinct, at least one for an entry time; enabled a bool."""
    entry, exit_ = parse_time(entry_at, "Entry time"), parse_time(exit_at, "Exit time")
    if entry is None and exit_ is None:
        raise CommandError("Give an entry time, an exit time or both (HH:MM IST); Remove schedule deletes it")
    if entry is not None and exit_ is not None and exit_ <= entry:
        raise CommandError(f"Exit time {exit_:%H:%M} must be after the entry time {entry:%H:%M}")
    if not isinstance(enabled, bool):
        raise CommandError("Enabled must be true or false")
    if not isinstance(accounts, list | tuple) or len(accounts) > MAX_CHECK_ACCOUNTS:
        raise CommandError(f"Accounts must be a list of up to {MAX_CHECK_ACCOUNTS} [account_id, multiplier] pairs")
    clean = []
    for item in accounts:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise CommandError("Accounts must be [account_id, multiplier] pairs")
        aid = item[0]
        if isinstance(aid, bool) or not isinstance(aid, int) or aid <= 0:
            raise CommandError(f"Unknown account {str(aid)[:20]!r}")
        clean.append([aid, check_multiplier(item[1], f"account {aid}")])
    if len({a for a, _ in clean}) != len(clean):
        raise CommandError("An account is listed twice")
    if entry is not None and not clean:
        raise CommandError("A timed entry needs at least one account to execute on")
    return dict(entry_at=f"{entry:%H:%M}" if entry else "", exit_at=f"{exit_:%H:%M}" if exit_ else "",
                accounts=clean, enabled=enabled)


def _strategy(s, strategy_id) -> Strategy:
    st = s.get(Strategy, strategy_id) if isinstance(strategy_id, int) and not isinstance(strategy_id, bool) else None
    if st is None or st.deleted_at is not None:
        raise CommandError(f"Unknown strategy {str(strategy_id)[:20]}")
    return st


def save_schedule(db: Database, strategy_id: int, entry_at, exit_at, accounts, enabled=True,
                  market: MarketSettings | None = None) -> dict:
    """Validate and store the strategy's schedule (replacing its earlier one); returns the clean schedule. Every
    account must exist and be active, and the entry time must come before the entry cut-off of the strategy's
    product under ``market`` (default settings if None). Nothing is written on a CommandError."""
    clean = check_schedule(entry_at, exit_at, accounts, enabled)
    with db.write() as s:
        st = _strategy(s, strategy_id)
        cut = entries_cutoff(market or MarketSettings(), (st.product or "").upper())
        if clean["entry_at"] and cut is not None and _hhmm(clean["entry_at"]) >= cut:
            raise CommandError(f"Entry time {clean['entry_at']} is not before the cut-off for new {st.product} "
                               f"entries ({cut:%H:%M} IST): the entry would be refused")
        for aid, _ in clean["accounts"]:
            acct = s.get(Account, aid)
            if acct is None or not acct.is_active:
                raise CommandError(f"Unknown or deactivated account {aid}")
        row = s.scalar(select(StrategySchedule).where(StrategySchedule.strategy_id == strategy_id))
        if row is None:
            row = StrategySchedule(strategy_id=strategy_id)
            s.add(row)
        row.entry_at, row.exit_at, row.enabled = clean["entry_at"], clean["exit_at"], clean["enabled"]
        row.accounts_json = json.dumps(clean["accounts"])
        row.saved_at_ist, row.updated_at = now_ist().strftime("%Y-%m-%d %H:%M:%S"), utcnow()
    return clean


def remove_schedule(db: Database, strategy_id: int) -> bool:
    """Delete the strategy's schedule; True if it had one. The day's latch rows stay (what ran today)."""
    with db.write() as s:
        row = s.scalar(select(StrategySchedule).where(StrategySchedule.strategy_id == strategy_id))
        if row is None:
            return False
        s.delete(row)
        return True


def schedule_of(db: Database, strategy_id: int) -> dict | None:
    """The stored schedule for the page's form: entry_at, exit_at, accounts [[id, multiplier]], enabled."""
    with db.read() as s:
        row = s.scalar(select(StrategySchedule).where(StrategySchedule.strategy_id == strategy_id))
        if row is None:
            return None
        return dict(entry_at=row.entry_at, exit_at=row.exit_at, accounts=json.loads(row.accounts_json or "[]"),
                    enabled=bool(row.enabled))


# ---- one trading day ------------------------------------------------------------------------------------------
class Fire(NamedTuple):
    """A timed_fires row as read: its state (db.vocab.TimedState), the run ids and the error text."""
    status: str
    run_ids: list
    error: str


@dataclass(frozen=True)
class DaySchedule:
    """One schedule as it stands on one trading day (with that day's latch rows)."""
    strategy_id: int
    name: str
    entry_at: time | None
    exit_at: time | None
    accounts: list  # [[account_id, multiplier], ...]
    saved_at: datetime | None  # naive IST (the market clock) of the last save
    entry: Fire | None
    exit: Fire | None
    enabled: bool = True

    def due(self, at: time | None, day: date) -> bool:
        """Whether an action at ``at`` belongs to ``day``: a schedule saved after that moment starts the next day
        (saving 09:20 at 10:00 must not enter, or record a miss, at once)."""
        return at is not None and (self.saved_at is None or self.saved_at < datetime.combine(day, at))


def _hhmm(text: str) -> time | None:
    return time(int(text[:2]), int(text[3:5])) if text else None


def _fires(s, day: str) -> dict[tuple[int, str], Fire]:
    return {(r.strategy_id, r.kind): Fire(r.status, json.loads(r.run_ids_json or "[]"), r.error)
            for r in s.scalars(select(TimedFire).where(TimedFire.day == day))}


def day_schedules(s, day: date, enabled_only: bool = True) -> list[DaySchedule]:
    """Every schedule of a strategy not deleted (only the enabled ones: ``enabled_only``), with ``day``'s latch
    rows."""
    fires = _fires(s, day.isoformat())
    q = (select(StrategySchedule, Strategy.name).join(Strategy, Strategy.id == StrategySchedule.strategy_id)
         .where(Strategy.deleted_at.is_(None)).order_by(StrategySchedule.entry_at, Strategy.name))
    if enabled_only:
        q = q.where(StrategySchedule.enabled.is_(True))
    out = []
    for row, name in s.execute(q):
        saved = datetime.strptime(row.saved_at_ist, "%Y-%m-%d %H:%M:%S") if row.saved_at_ist else None
        out.append(DaySchedule(row.strategy_id, name, _hhmm(row.entry_at), _hhmm(row.exit_at),
                               json.loads(row.accounts_json or "[]"), saved,
                               fires.get((row.strategy_id, TimedKind.ENTRY.value)),
                               fires.get((row.strategy_id, TimedKind.EXIT.value)), bool(row.enabled)))
    return out


def timed_group(strategy_id: int, day: str) -> str:
    """The runs' group id of a timed entry: one per strategy and day (the latch row is the guard; this makes a
    second write of the same entry return the first one's runs besides)."""
    return f"timed-{strategy_id}-{day}"


def enter_once(s, sched: DaySchedule, day: str, market: MarketSettings, margin_answers=None,
               missed: str = "") -> tuple[str, list[int], str, bool]:
    """In the caller's write transaction: the strategy's entry for ``day``, once. Returns (state, run ids, text,
    written now): a latch row already there is returned as it is (nothing written); ``missed`` (the reason)
    records a miss;
    otherwise Execute's own checks run (db.strategies.execute_in: halted or deactivated accounts, the entry
    cut-off, live prices, the margin answers) and its runs and queued intents are written with the latch row
    'entered', or the refusal with the row 'failed'."""
    row = s.scalar(select(TimedFire).where(TimedFire.strategy_id == sched.strategy_id, TimedFire.day == day,
                                           TimedFire.kind == TimedKind.ENTRY.value))
    if row is not None:
        return row.status, json.loads(row.run_ids_json or "[]"), row.error, False
    runs, text = [], missed
    state = TimedState.MISSED if missed else TimedState.ENTERED
    if not missed:
        mult = {a: m for a, m in sched.accounts}
        try:
            res = execute_in(s, sched.strategy_id, list(mult), timed_group(sched.strategy_id, day), mult,
                             market=market, margin_answers=margin_answers)
            runs = res.run_ids
            text = "; ".join(f"account {a} refused: {why}" for a, why in res.refused.items())
            if not runs:
                state = TimedState.FAILED
        except CommandError as exc:  # every check comes before the first row: only the latch row is written
            state, text = TimedState.FAILED, str(exc)
    s.add(TimedFire(strategy_id=sched.strategy_id, day=day, kind=TimedKind.ENTRY.value, status=state.value,
                    run_ids_json=json.dumps(runs), error=text[:512], finished_at=utcnow()))
    s.flush()
    return state.value, runs, text, True


def begin_exit(s, strategy_id: int, day: str) -> str:
    """In the caller's write transaction: the exit's latch row for (strategy, day), written 'exiting' if there is
    none. Returns its status: 'exiting' = (still) to be carried out, 'exited' = done (a restart does nothing)."""
    row = s.scalar(select(TimedFire).where(TimedFire.strategy_id == strategy_id, TimedFire.day == day,
                                           TimedFire.kind == TimedKind.EXIT.value))
    if row is None:
        s.add(TimedFire(strategy_id=strategy_id, day=day, kind=TimedKind.EXIT.value,
                        status=TimedState.EXITING.value))
        s.flush()
        return TimedState.EXITING.value
    return row.status


def finish_exit(s, strategy_id: int, day: str, run_ids: list[int], error: str = "") -> None:
    row = s.scalar(select(TimedFire).where(TimedFire.strategy_id == strategy_id, TimedFire.day == day,
                                           TimedFire.kind == TimedKind.EXIT.value))
    if row is not None:
        row.status, row.run_ids_json, row.error = TimedState.EXITED.value, json.dumps(run_ids), error[:512]
        row.finished_at = utcnow()


def live_runs_started_on(s, strategy_id: int, day: date) -> list[int]:
    """The strategy's live runs (entering, active) started on ``day`` (IST, on the market clock: a run's
    started_at is the real clock's, so the day's bounds are moved back by the market clock's offset)."""
    start = datetime.combine(day, time()) - IST_OFFSET - offset()
    return list(s.scalars(select(StrategyRun.id).where(
        StrategyRun.strategy_id == strategy_id, StrategyRun.status.in_(values(LIVE_RUN)),
        StrategyRun.started_at >= start, StrategyRun.started_at < start + timedelta(days=1))
        .order_by(StrategyRun.id)))


# ---- the page's "Today's schedule" ----------------------------------------------------------------------------
def state_of(sched: DaySchedule, day: date, trading: bool) -> str:
    if sched.exit is not None:
        return sched.exit.status
    if sched.entry is not None:
        return sched.entry.status
    if not sched.enabled:
        return TimedState.DISABLED.value
    if not trading:
        return TimedState.HOLIDAY.value
    if not (sched.due(sched.entry_at, day) or sched.due(sched.exit_at, day)):
        return TimedState.NEXT_DAY.value
    return TimedState.PENDING.value


def today_rows(db: Database, day: date | None = None) -> list[dict]:
    """One row per schedule for the page: strategy, entry, exit, accounts ('name 2×, ...'), state, run ids and
    the error text of today's timed actions."""
    day = day or now_ist().date()
    trading = is_trading_day(day)
    with db.read() as s:
        names = dict(s.execute(select(Account.id, Account.name)).all())
        scheds = day_schedules(s, day, enabled_only=False)
    out = []
    for d in scheds:
        fires = [f for f in (d.entry, d.exit) if f is not None]
        runs = dict.fromkeys(r for f in fires for r in f.run_ids)
        out.append(dict(strategy=d.name, entry=f"{d.entry_at:%H:%M}" if d.entry_at else "",
                        exit=f"{d.exit_at:%H:%M}" if d.exit_at else "",
                        accounts=", ".join(f"{names.get(a, a)} {m}×" for a, m in d.accounts),
                        state=state_of(d, day, trading), run_ids=", ".join(map(str, runs)),
                        error=" · ".join(f.error for f in fires if f.error)))
    return out
