"""Secrets end to end: keys encrypted in the raw SQLite file (incl. -wal) after the service ran; no key (nor its
first 16 characters) in any log, stdout or stderr of a run with an invalid key, auth errors, rejections and
exceptions; Streamlit and the simulator bind 127.0.0.1 by default."""
from __future__ import annotations

import subprocess
import sys
import time
import tomllib

import psutil
import pytest
from sqlalchemy import select

from db.accounts import add_account
from db.commands import OrderRequest, enqueue_order
from db.intents import new_client_order_id
from db.models import OrderIntent, ServiceLog
from simulator.testing import SimProcess, free_port
from tests.builders import seed_instruments
from tests.reliability.conftest import ROOT
from tests.reliability.crash_harness import service_env, start_service, stop_service, wait_for
from tests.service.fixtures_orders import add_intent


def _files(db_path):
    return [p for p in (db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm"))
            if p.exists()]


def _status(db, iid):
    with db.read() as s:
        return s.get(OrderIntent, iid).status


@pytest.mark.timeout(120)
def test_full_run_with_auth_errors_rejections_exceptions_then_no_key_in_db_file_or_any_log(db, tmp_path):
    sim_log = tmp_path / "sim.log"
    with SimProcess(seed=41, log_path=str(sim_log), args=["--log-level", "DEBUG"]) as sim:
        seed_instruments(db)
        good_key = sim.create_account("good")
        revoked_key = sim.create_account("revoked")
        unknown_key = "f" * 8 + "0123456789abcdef" * 3  # never known to the broker: 403 from the start
        keys = [good_key, revoked_key, unknown_key]
        good = add_account(db, "good", sim.rest_url, sim.ws_url, good_key, is_primary=True)
        revoked = add_account(db, "revoked", sim.rest_url, sim.ws_url, revoked_key, backup_order=1)
        unknown = add_account(db, "unknown", sim.rest_url, sim.ws_url, unknown_key, backup_order=2)
        proc = start_service(db.path, tmp_path / "svc.log", service_env(APP__SERVICE__WS_STALL_SECONDS="1"))
        try:
            ids = [enqueue_order(db, OrderRequest(good, "SBIN", "NSE", "BUY", 1), new_client_order_id())[0]]
            sim.fault("invalid_key", account="revoked")  # auth error mid-session
            ids.append(enqueue_order(db, OrderRequest(revoked, "SBIN", "NSE", "BUY", 1), new_client_order_id())[0])
            ids.append(enqueue_order(db, OrderRequest(unknown, "SBIN", "NSE", "BUY", 1), new_client_order_id())[0])
            ids.append(add_intent(db, good, symbol="NOSUCHSYM"))  # broker rejection
            ids.append(add_intent(db, good, product="CNC", action="SELL", qty=5))  # broker rejection (CNC)
            sim.fault("http_500", endpoints=["placeorder"], account="good", count=1)  # exception -> unknown
            ids.append(add_intent(db, good, symbol="INFY"))
            sim.fault("http_500", endpoints=["orderbook", "funds"], account="good", count=3)
            sim.fault("drop_ws")
            ok = wait_for(lambda: all(_status(db, i) in ("filled", "rejected", "denied") for i in ids), 60, 0.2)
            assert ok, [(_status(db, i)) for i in ids]
            time.sleep(1.0)
            raw_running = b"".join(p.read_bytes() for p in _files(db.path))  # incl. the live -wal
        finally:
            assert stop_service(proc) == 0
    with db.read() as s:
        assert s.scalar(select(ServiceLog.id).where(ServiceLog.level == "ERROR").limit(1))  # errors were logged
    raw_stopped = b"".join(p.read_bytes() for p in _files(db.path))
    texts = {p.name: p.read_bytes() for p in tmp_path.iterdir()
             if p.is_file() and p.suffix in (".log", ".out", ".err")}
    texts["service_log table"] = "\n".join(_all_service_log(db)).encode()
    assert texts.get("svc.log") and texts.get("sim.log")
    for key in keys:
        for needle in (key.encode(), key[:16].encode()):
            assert needle not in raw_running and needle not in raw_stopped, "API key bytes in the SQLite file"
            for name, data in texts.items():
                assert needle not in data, f"API key (or its first 16 chars) found in {name}"


def _all_service_log(db) -> list[str]:
    with db.read() as s:
        return list(s.scalars(select(ServiceLog.message)))


def test_streamlit_config_binds_loopback_only():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["browser"].get("serverAddress", "127.0.0.1") in ("127.0.0.1", "localhost")


@pytest.mark.timeout(60)
def test_simulator_with_default_host_listens_on_loopback_only(tmp_path):
    port, ws_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "--port", str(port), "--ws-port", str(ws_port),
                             "--log-level", "WARNING"], cwd=str(ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def listening():
            try:
                conns = psutil.Process(proc.pid).net_connections(kind="inet")
            except psutil.Error:
                return []
            socks = [c for c in conns if c.status == psutil.CONN_LISTEN]
            return socks if {c.laddr.port for c in socks} >= {port, ws_port} else []
        socks = wait_for(listening, 30)
        assert socks, "simulator did not listen"
        assert {c.laddr.ip for c in socks} <= {"127.0.0.1"}, [c.laddr for c in socks]
    finally:
        proc.terminate()
        proc.wait(10)
