"""Saved strategies as the page manages them: the saved table (legs and size), load one into the builder, clone,
delete. Saving an edit is db/strategies.save_strategy with the strategy's id.

Delete is refused while a run of the strategy is unfinished (entering, active or exiting): its exits and the
risk manager's bookkeeping read the strategy row. Otherwise the row is kept, marked deleted and renamed
'<name> (deleted <id>)', so the runs and the History that name it still do, and the name is free again; a deleted
strategy is listed nowhere and cannot be executed, edited or cloned.
"""
from __future__ import annotations

from sqlalchemy import func, select

from db import Database
from db.commands import CommandError
from db.expiry_rules import LABELS, ExpiryMode
from db.models import Strategy, StrategyRun, utcnow
from db.order_fsm import values
from db.run_fsm import UNFINISHED_RUN
from db.strategy_specs import LEG_FIELDS, NAME_RE, describe_leg


def _live_strategy(s, strategy_id: int) -> Strategy:
    if isinstance(strategy_id, bool) or not isinstance(strategy_id, int):
        raise CommandError(f"Unknown strategy {str(strategy_id)[:20]}")
    st = s.get(Strategy, strategy_id)
    if st is None or st.deleted_at is not None:
        raise CommandError(f"Unknown strategy {strategy_id}")
    return st


def saved_rows(db: Database) -> list[dict]:
    """The saved table: id, name, underlying, expiry (the date or the relative mode), product, legs
    ('SELL 1×CE ATM · SELL 1×PE ATM'), size (lots over all legs), the risk limits and the live runs."""
    with db.read() as s:
        live = dict(s.execute(select(StrategyRun.strategy_id, func.count()).where(
            StrategyRun.status.in_(values(UNFINISHED_RUN))).group_by(StrategyRun.strategy_id)).all())
        out = []
        for st in s.scalars(select(Strategy).where(Strategy.deleted_at.is_(None)).order_by(Strategy.id.desc())):
            mode = st.expiry_mode or ExpiryMode.FIXED
            out.append(dict(id=st.id, name=st.name, underlying=st.underlying, exchange=st.exchange,
                            expiry=st.expiry if mode == ExpiryMode.FIXED else LABELS[ExpiryMode(mode)],
                            product=st.product, legs=" · ".join(describe_leg(leg) for leg in st.legs),
                            size=sum(leg.lots for leg in st.legs), max_loss=st.max_loss,
                            max_profit=st.max_profit, trailing_sl=st.trailing_sl, live_runs=live.get(st.id, 0)))
        return out


def for_builder(db: Database, strategy_id: int) -> dict:
    """A saved strategy as the builder's fields: name, underlying, exchange, expiry, expiry_mode, product, the
    limits, and legs as rows with LegSpec's fields."""
    with db.read() as s:
        st = _live_strategy(s, strategy_id)
        legs = [{k: getattr(leg, k) for k in LEG_FIELDS} for leg in st.legs]
        return dict(id=st.id, name=st.name, underlying=st.underlying, exchange=st.exchange, expiry=st.expiry,
                    expiry_mode=st.expiry_mode, product=st.product, max_loss=st.max_loss,
                    max_profit=st.max_profit, trailing_sl=st.trailing_sl, legs=legs)


def clone_strategy(db: Database, strategy_id: int, new_name: str) -> int:
    """A copy of a saved strategy (legs, expiry rule, limits) under a new name; returns its id."""
    name = (new_name or "").strip()
    if not NAME_RE.match(name):
        raise CommandError("Strategy name must be 1-64 characters: letters, digits, space, _ or -")
    with db.write() as s:
        st = _live_strategy(s, strategy_id)
        if s.scalar(select(func.count()).select_from(Strategy).where(Strategy.name == name)):
            raise CommandError(f"A strategy named '{name}' already exists")
        copy = Strategy(name=name, underlying=st.underlying, exchange=st.exchange, expiry=st.expiry,
                        expiry_mode=st.expiry_mode, product=st.product, max_loss=st.max_loss,
                        max_profit=st.max_profit, trailing_sl=st.trailing_sl)
        copy.legs = [type(leg)(**{k: getattr(leg, k) for k in ("leg_no", *LEG_FIELDS)}) for leg in st.legs]
        s.add(copy)
        s.flush()
        return copy.id


def delete_strategy(db: Database, strategy_id: int) -> str:
    """Delete a saved strategy (see the module's docstring); CommandError with the reason while a run of it is
    unfinished. Returns the name it had."""
    with db.write() as s:
        st = _live_strategy(s, strategy_id)
        live = list(s.scalars(select(StrategyRun.id).where(
            StrategyRun.strategy_id == st.id, StrategyRun.status.in_(values(UNFINISHED_RUN)))
            .order_by(StrategyRun.id)))
        if live:
            runs = ", ".join(f"#{r}" for r in live[:10]) + (" ..." if len(live) > 10 else "")
            raise CommandError(f"Cannot delete '{st.name}': {len(live)} run(s) of it still live ({runs}). "
                               "Exit them first (Risk Monitor), then delete.")
        name = st.name
        st.name = f"{name[:48]} (deleted {st.id})"
        st.deleted_at = utcnow()
        return name
