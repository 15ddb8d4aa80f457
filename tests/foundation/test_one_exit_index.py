"""One live exit per strategy leg, enforced by the database: the partial unique index, built from the order FSM,
and the migration that brings databases created at schema version 1 up to it."""
from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from db import Database
from db.engine import make_engine
from db.migrations import LATEST, MigrationError, current_version
from db.models import Account, Base, OrderIntent, SchemaVersion
from db.order_fsm import LIVE, TERMINAL, Status
from tests.builders import make_account

# The index exactly as schema version 1 created it (what every existing database holds).
V1_INDEX_SQL = ("CREATE UNIQUE INDEX uq_one_inflight_exit ON order_intents (execution_id) "
                "WHERE purpose='exit' AND status IN ('queued','claimed','sent','unknown','placed')")


def exit_row(account_id: int, execution_id: int, status: str, **kw) -> dict:
    return dict(client_order_id=uuid.uuid4().hex, account_id=account_id, execution_id=execution_id, purpose="exit",
                source="risk", symbol="SBIN", exchange="NSE", action="SELL", requested_qty=10, status=status, **kw)


def add_exit(db, account_id: int, execution_id: int, status: str) -> int:
    with db.write() as s:
        row = OrderIntent(**exit_row(account_id, execution_id, status))
        s.add(row)
        s.flush()
        return row.id


def index_sql(db_or_engine) -> str:
    engine = getattr(db_or_engine, "engine", db_or_engine)
    with engine.connect() as c:
        return c.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type='index' AND name='uq_one_inflight_exit'").scalar()


def index_statuses(sql: str) -> set[str]:
    (listed,) = re.findall(r"status IN \(([^)]*)\)", sql)
    return {v.strip().strip("'") for v in listed.split(",")}


def build_v1_database(path, exits: list[tuple[int, str, str]] = ()) -> None:
    """A database as schema version 1 left it (its index without partially_filled), with one account and the
    given exit intents (execution_id, status, broker_order_id)."""
    eng = make_engine(path)
    with eng.begin() as c:
        Base.metadata.create_all(c)
        c.exec_driver_sql("DROP INDEX uq_one_inflight_exit")
        c.exec_driver_sql(V1_INDEX_SQL)
        c.execute(SchemaVersion.__table__.insert().values(version=1))
        acct = c.execute(Account.__table__.insert().values(
            name="old", host_url="http://127.0.0.1:1", ws_url="ws://127.0.0.1:2", api_key_encrypted=b"x")
        ).inserted_primary_key[0]
        for execution_id, status, oid in exits:
            c.execute(OrderIntent.__table__.insert().values(**exit_row(acct, execution_id, status,
                                                                        broker_order_id=oid)))
    eng.dispose()


@pytest.mark.parametrize("first", sorted(s.value for s in LIVE))
def test_second_exit_when_first_exit_of_the_leg_is_live_then_db_refuses_it(db, first):
    acct = make_account(db)
    add_exit(db, acct, 7, first)
    with pytest.raises(IntegrityError, match="UNIQUE"):
        add_exit(db, acct, 7, Status.QUEUED.value)
    add_exit(db, acct, 8, Status.QUEUED.value)  # another leg is unaffected


@pytest.mark.parametrize("first", sorted(s.value for s in TERMINAL))
def test_second_exit_when_first_exit_of_the_leg_is_terminal_then_db_accepts_it(db, first):
    acct = make_account(db)
    add_exit(db, acct, 7, first)
    add_exit(db, acct, 7, Status.QUEUED.value)  # the retry of a rejected / cancelled exit


def test_index_when_database_created_then_its_sql_lists_exactly_the_fsm_live_statuses(db):
    statuses = index_statuses(index_sql(db))
    assert statuses == {s.value for s in LIVE} and "partially_filled" in statuses
    assert statuses.isdisjoint(s.value for s in TERMINAL)


def test_migrate_when_v1_database_then_index_rebuilt_from_the_fsm_and_rows_kept(tmp_path):
    path = tmp_path / "v1.db"
    build_v1_database(path, [(7, "partially_filled", "B1"), (8, "filled", "B2"), (8, "cancelled", "B3")])
    assert "partially_filled" not in index_statuses(index_sql(make_engine(path)))
    db = Database(path, key_file=tmp_path / "k")
    with db.engine.connect() as c:
        assert current_version(c) == LATEST
    assert index_statuses(index_sql(db)) == {s.value for s in LIVE}
    with db.read() as s:
        assert s.scalar(text("SELECT count(*) FROM order_intents")) == 3
        acct = s.scalar(text("SELECT id FROM accounts"))
    with pytest.raises(IntegrityError, match="UNIQUE"):  # the old index let this second exit in
        add_exit(db, acct, 7, Status.QUEUED.value)


def test_migrate_when_v1_database_holds_two_live_exits_for_one_leg_then_fails_naming_them_and_changes_nothing(
        tmp_path):
    path = tmp_path / "dup.db"
    build_v1_database(path, [(7, "partially_filled", "B1"), (7, "placed", "B2"), (9, "placed", "B3")])
    with pytest.raises(MigrationError) as err:
        Database(path, key_file=tmp_path / "k")
    msg = str(err.value)
    assert "execution 7: intent 1 (account 1, partially_filled, broker order B1)" in msg
    assert "execution 7: intent 2 (account 1, placed, broker order B2)" in msg
    assert "execution 9" not in msg and "Nothing was changed" in msg
    eng = make_engine(path)
    with eng.connect() as c:
        assert current_version(c) == 1  # rolled back: still the old version, with its old index
    assert index_sql(eng) == V1_INDEX_SQL
