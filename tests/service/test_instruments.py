"""Symbol master download from the simulator's GET /instruments, with the /search fallback."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from db.models import Instrument, ServiceLog
from services.instruments import load_instruments
from simulator.testing import SimProcess
from tests.service.fixtures_md import account, make_ctx


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=4, args=["--frozen"]) as s:
        yield s


def _count(db, **where):
    with db.read() as s:
        q = select(func.count()).select_from(Instrument)
        for k, v in where.items():
            q = q.where(getattr(Instrument, k) == v)
        return s.scalar(q)


@pytest.mark.timeout(60)
def test_load_instruments_fills_the_symbol_master_with_freeze_qty(db, sim):
    acct = account(db, "inst", sim.rest_url, sim.ws_url, sim.create_account("inst1"), is_primary=True)
    with db.write() as s:  # an expired contract from yesterday's master must disappear
        s.add(Instrument(symbol="NIFTY01JAN20FUT", exchange="NFO", name="NIFTY", instrumenttype="FUT"))
    n = load_instruments(make_ctx(db), acct, ("NFO", "NSE_INDEX", "NSE"))
    assert n == _count(db) > 100
    assert _count(db, symbol="NIFTY01JAN20FUT") == 0
    assert _count(db, symbol="NIFTY", exchange="NSE_INDEX") == 1
    with db.read() as s:
        ce = s.scalar(select(Instrument).where(Instrument.name == "NIFTY", Instrument.instrumenttype == "CE"))
        eq = s.scalar(select(Instrument).where(Instrument.symbol == "SBIN", Instrument.exchange == "NSE"))
    assert ce.strike > 0 and ce.lotsize == 65 and ce.expiry.count("-") == 2 and ce.freeze_qty == 1800
    assert eq.strike == 0.0 and eq.lotsize == 1


class _BrokenMaster(BaseHTTPRequestHandler):
    """A tiny OpenAlgo stand-in whose /instruments fails (500) while /search answers: the fallback path."""
    ROW = {"symbol": "NIFTY30DEC2526000CE", "exchange": "NFO", "name": "NIFTY", "expiry": "30-DEC-25",
           "strike": 26000.0, "lotsize": 65, "instrumenttype": "CE", "tick_size": 0.05, "freeze_qty": 1800}

    def do_GET(self):
        self._reply(500, {"status": "error", "message": "boom"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        hit = body.get("query") == "NIFTY" and self.path.endswith("/search")
        self._reply(200, {"status": "success", "data": [self.ROW] if hit else []})

    def _reply(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.timeout(30)
def test_fallback_search_when_instruments_endpoint_fails(db):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenMaster)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        acct = account(db, "broken", f"http://127.0.0.1:{server.server_port}", "ws://127.0.0.1:1", "b" * 32)
        with db.write() as s:
            s.add(Instrument(symbol="OLD", exchange="NFO", name="NIFTY", instrumenttype="FUT"))
        n = load_instruments(make_ctx(db), acct, ("NFO",))
    finally:
        server.shutdown()
    assert n == 1 and _count(db, symbol="NIFTY30DEC2526000CE", freeze_qty=1800) == 1
    assert _count(db, symbol="OLD") == 1  # a failed download never deletes the cache
    with db.read() as s:
        msgs = [m.message for m in s.scalars(select(ServiceLog))]
    assert any("/instruments NFO failed" in m for m in msgs)
