"""The portfolio (every account together): its daily max loss, and its day P&L as the UI shows it.

The limit is one row of portfolio_settings (id 1); no row, or an empty value, means no limit. The service
evaluates it on every tick (services/account_limits.py); the UI edits it on the Accounts page.
"""
from __future__ import annotations

import math

from sqlalchemy import func, select

from db import Database
from db.accounts import AccountError
from db.models import Account, AuditLog, PortfolioSettings, Position, utcnow

ROW_ID = 1


class PortfolioError(AccountError):
    """A clear, user-facing message; nothing was written."""


def check_portfolio_loss(value) -> float:
    """Rupees > 0 (a finite number), else PortfolioError naming what was wrong."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise PortfolioError("The portfolio daily max loss must be a number of rupees greater than 0")
    try:
        amount = float(value)
    except (TypeError, ValueError):
        raise PortfolioError(f"The portfolio daily max loss must be a number of rupees (got {str(value)[:20]!r})") \
            from None
    if not math.isfinite(amount) or amount <= 0:
        raise PortfolioError(f"The portfolio daily max loss must be greater than 0 rupees (got {str(value)[:20]}); "
                             "use 'Remove' to have no portfolio limit")
    return amount


def portfolio_max_loss(s) -> float | None:
    """The portfolio daily max loss in rupees, or None (no limit)."""
    return s.scalar(select(PortfolioSettings.daily_max_loss).where(PortfolioSettings.id == ROW_ID))


def get_portfolio_max_loss(db: Database) -> float | None:
    with db.read() as s:
        return portfolio_max_loss(s)


def set_portfolio_max_loss(db: Database, value, actor: str = "ui") -> float | None:
    """Save the portfolio daily max loss (rupees > 0), or clear it with ``None``. Bad input raises
    PortfolioError and writes nothing. Returns the saved value."""
    amount = None if value is None else check_portfolio_loss(value)
    with db.write() as s:
        row = s.get(PortfolioSettings, ROW_ID)
        before = row.daily_max_loss if row else None
        if row is None:
            row = PortfolioSettings(id=ROW_ID)
            s.add(row)
        row.daily_max_loss, row.updated_at = amount, utcnow()
        s.add(AuditLog(actor=actor[:32], action="portfolio_limit",
                       details=f"daily max loss {before} -> {amount}"))
    return amount


def day_pnl_by_account(db: Database) -> list[tuple[int, str, float]]:
    """(account id, name, day P&L) of every account, from the stored positions (the broker's today, marked to
    the last flushed tick): what the Accounts page shows next to the portfolio limit."""
    with db.read() as s:
        rows = s.execute(select(Account.id, Account.name, func.coalesce(func.sum(Position.pnl), 0.0))
                         .outerjoin(Position, Position.account_id == Account.id)
                         .group_by(Account.id, Account.name).order_by(Account.id)).all()
    return [(int(a), n, float(p or 0.0)) for a, n, p in rows]
