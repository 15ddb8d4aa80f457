"""The statements of the time-based square-off (services/square_off.py): one square_offs row per trading day and
product, the latch that makes it happen exactly once that day, across restarts."""
from __future__ import annotations

from sqlalchemy import select

from db.models import SquareOff, utcnow
from db.vocab import SquareOffStatus


def square_off_status(s, day: str, product: str) -> str | None:
    """The row's status for (day, product), None if the square-off has not started."""
    return s.scalar(select(SquareOff.status).where(SquareOff.day == day, SquareOff.product == product))


def begin_square_off(s, day: str, product: str) -> str:
    """In the caller's write transaction: the row for (day, product), written 'running' if there is none yet.
    Returns its status: 'running' means the square-off is (still) to be carried out; 'done' / 'incomplete' means
    it finished (a restart after it does nothing)."""
    status = square_off_status(s, day, product)
    if status is None:
        s.add(SquareOff(day=day, product=product, status=SquareOffStatus.RUNNING.value))
        s.flush()
        return SquareOffStatus.RUNNING.value
    return status


def finish_square_off(s, day: str, product: str, status: SquareOffStatus, summary: str) -> None:
    row = s.scalar(select(SquareOff).where(SquareOff.day == day, SquareOff.product == product))
    if row is not None:
        row.status, row.summary, row.finished_at = status.value, summary[:1024], utcnow()


def square_offs(s, limit: int = 20) -> list[tuple[str, str, str, str]]:
    """(day, product, status, summary) of the latest square-offs, newest first."""
    return [tuple(r) for r in s.execute(select(SquareOff.day, SquareOff.product, SquareOff.status, SquareOff.summary)
                                        .order_by(SquareOff.day.desc(), SquareOff.product).limit(limit))]
