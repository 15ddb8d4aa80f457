"""Statuses come from what the service last saw: the real service process and the simulator.

* an account the service trades through is 'ok' with a fresh check time (not 'unchecked'), without any order;
* every broker call is recorded with endpoint, HTTP status, duration and outcome, and never the key;
* a key the broker starts rejecting shows 'invalid_key' with the error and its time from the next ping, though the
  account has no order, and account_sync's heartbeat says 'degraded' instead of 'ok' while its reads fail;
* Service Health's per-account figures (calls, error rate, p50 / p99) come from those rows.
"""
from __future__ import annotations

import json

from sqlalchemy import select

from db import repo
from db.accounts import api_key_for
from db.models import Account, BrokerCall, ServiceHeartbeat
from simulator.testing import SimProcess
from tests.builders import seed_instruments
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_orders import sim_account


def _acct(db, acct) -> Account:
    with db.read() as s:
        return s.get(Account, acct)


def _calls(db, acct) -> list[BrokerCall]:
    with db.read() as s:
        return list(s.scalars(select(BrokerCall).where(BrokerCall.account_id == acct).order_by(BrokerCall.id)))


def _beat(db, component) -> ServiceHeartbeat | None:
    with db.read() as s:
        return s.get(ServiceHeartbeat, component)


def test_quiet_account_then_ok_from_pings_calls_recorded_and_revoked_key_shown_within_a_ping(db, tmp_path):
    with SimProcess(seed=53, args=["--frozen"]) as sim:
        seed_instruments(db)
        sim_account(db, sim, "feed", is_primary=True)
        acct, name = sim_account(db, sim, "quiet")
        assert _acct(db, acct).status == "unchecked"
        key = api_key_for(db, acct)
        proc = start_service(db.path, tmp_path / "svc.log", service_env(
            APP__SERVICE__ACCOUNT_PING_S="1.0", APP__SERVICE__FUNDS_REFRESH_S="1.0"))
        try:
            assert wait_for(lambda: _acct(db, acct).status == "ok", 15), (tmp_path / "svc.out").read_text()[-2000:]
            first_check = _acct(db, acct).last_checked_at
            assert wait_for(lambda: _acct(db, acct).last_checked_at > first_check, 10)  # kept fresh
            assert wait_for(lambda: {"ping", "funds", "positionbook"} <= {c.endpoint for c in _calls(db, acct)}, 10)
            calls = _calls(db, acct)
            assert all(c.http_status == 200 and c.outcome == "ok" and c.duration_ms > 0 for c in calls)
            assert not any(key in (c.error or "") for c in calls)

            sim.fault("invalid_key", account=name)  # the broker revokes the key; the account places nothing
            assert wait_for(lambda: _acct(db, acct).status == "invalid_key", 10), _acct(db, acct).status
            row = _acct(db, acct)
            assert row.status_message and key not in row.status_message
            bad = [c for c in _calls(db, acct) if c.outcome == "auth"]
            assert bad and all(c.http_status == 403 for c in bad)
            assert wait_for(lambda: _beat(db, "account_sync").status == "degraded", 10), _beat(db, "account_sync")
            assert str(acct) in json.loads(_beat(db, "account_sync").details_json)["errors"]

            health = repo.broker_health(db).set_index("account")
            assert health.loc[name, "status"] == "invalid_key"
            assert health.loc[name, "calls"] >= len(calls) and 0 < health.loc[name, "error_rate"] < 1
            assert health.loc[name, "p99_ms"] >= health.loc[name, "p50_ms"] > 0
            assert "auth" in health.loc[name, "last_error"]
            assert (tmp_path / "svc.log").read_text().count(key) == 0

            sim.clear_faults()  # the key works again: the next ping says so
            assert wait_for(lambda: _acct(db, acct).status == "ok", 10)
            assert wait_for(lambda: _beat(db, "account_sync").status == "ok", 10), _beat(db, "account_sync")
        finally:
            sim.clear_faults()
            assert stop_service(proc) == 0
