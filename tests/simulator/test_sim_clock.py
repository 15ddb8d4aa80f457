"""The simulator's market clock (/_sim/clock) and its MIS gate (--mis-gate: MIS refused 15:15-09:00 IST unless it
reduces a position, as the OpenAlgo sandbox does), against a real simulator process."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from simulator.testing import SimProcess
from simulator.timeutil import IST

MIS_REFUSED = "MIS orders cannot be placed after square-off time (15:15 IST). Trading resumes at 09:00 AM IST."


@pytest.fixture(scope="module")
def gsim():
    with SimProcess(seed=13, args=["--frozen"], mis_gate=True, clock_offset_s=0.0) as s:
        yield s


def _order(sim, key, action, qty, product="MIS", symbol="SBIN"):
    return sim.api("placeorder", {"apikey": key, "strategy": "t", "symbol": symbol, "exchange": "NSE",
                                  "action": action, "quantity": qty, "pricetype": "MARKET", "product": product})


def _stamp(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%d %H:%M:%S")


def test_clock_when_set_to_an_ist_instant_then_it_reads_that_instant_and_runs_on(gsim):
    got = gsim.set_clock(ist="2026-12-01 15:14:59")
    assert abs((_stamp(got["now_ist"]) - datetime(2026, 12, 1, 15, 14, 59)).total_seconds()) <= 1
    assert gsim.clock()["session"] == "2026-12-01"
    real = gsim.set_clock()
    assert real["offset_s"] == 0.0
    assert abs((_stamp(real["now_ist"]) - datetime.now(IST).replace(tzinfo=None)).total_seconds()) <= 2


@pytest.mark.parametrize("body", [{"ist": "15:15"}, {"offset_s": "x"}, {"offset_s": True}, {"real": False}, {},
                                  {"ist": "2026-12-01 10:00:00", "offset_s": 5}])
def test_clock_when_the_body_is_bad_then_400_and_the_clock_unchanged(gsim, body):
    gsim.set_clock(offset_s=3600)
    r = gsim._client.post("/_sim/clock", json=body)
    assert r.status_code == 400 and ("ist" in r.json()["message"] or "offset_s" in r.json()["message"])
    assert gsim.clock()["offset_s"] == 3600


def test_mis_gate_when_the_clock_is_after_15_15_then_new_mis_refused_reducing_and_cnc_pass(gsim):
    key = gsim.create_account("gate1", capital=1e9)
    gsim.set_price("SBIN", "NSE", 800.0)
    gsim.set_clock(ist="2026-12-01 15:14:58")
    assert _order(gsim, key, "BUY", 10).status_code == 200  # before the time
    gsim.set_clock(ist="2026-12-01 15:15:00")
    r = _order(gsim, key, "BUY", 1)
    assert r.status_code == 400 and r.json()["message"] == MIS_REFUSED
    assert _order(gsim, key, "SELL", 4).status_code == 200  # reduces the long: allowed
    assert _order(gsim, key, "SELL", 6).status_code == 200  # closes it
    assert _order(gsim, key, "SELL", 1).status_code == 400  # a new short: refused
    assert _order(gsim, key, "BUY", 5, product="CNC").status_code == 200  # the gate is for MIS only
    gsim.set_clock(ist="2026-12-02 08:59:59")
    assert _order(gsim, key, "BUY", 1).status_code == 400
    gsim.set_clock(ist="2026-12-02 09:00:00")
    assert _order(gsim, key, "BUY", 1).status_code == 200


def test_order_timestamps_and_ids_when_the_clock_moved_then_they_follow_it(gsim):
    key = gsim.create_account("stamp1", capital=1e9)
    gsim.set_clock(ist="2026-10-01 10:30:00")
    oid = _order(gsim, key, "BUY", 1).json()["orderid"]
    [row] = [o for o in gsim.orders() if o.get("orderid") == oid]
    assert abs((_stamp(row["timestamp"]) - datetime(2026, 10, 1, 10, 30)).total_seconds()) <= 2
    assert oid.startswith("261001")


def test_session_when_the_clock_passes_03_00_then_closed_positions_drop_and_realised_pnl_resets(gsim):
    key = gsim.create_account("roll1", capital=1e9)
    gsim.set_clock(ist="2026-11-30 10:30:00")
    gsim.set_price("SBIN", "NSE", 800.0)
    _order(gsim, key, "BUY", 10)
    gsim.set_price("SBIN", "NSE", 810.0)
    _order(gsim, key, "SELL", 10)  # closed: realised about +100
    _order(gsim, key, "BUY", 2, product="CNC")  # carried
    book = {r["product"]: r for r in gsim.api("positionbook", {"apikey": key}).json()["data"]}
    assert book["MIS"]["today_realized_pnl"] > 0
    assert gsim.set_clock(ist="2026-12-01 02:59:00")["rolled"] is False  # still the session of 11-30
    assert gsim.set_clock(ist="2026-12-01 03:00:01")["rolled"] is True
    rows = gsim.api("positionbook", {"apikey": key}).json()["data"]
    assert [(r["product"], r["quantity"], r["today_realized_pnl"]) for r in rows] == [("CNC", 2, 0.0)]
    funds = gsim.api("funds", {"apikey": key}).json()["data"]
    assert funds["today_realized_pnl"] == 0.0



def test_clock_default_when_a_suite_sets_simprocess_defaults_then_its_simulators_start_on_that_clock():
    want = SimProcess.defaults["clock_offset_s"]
    with SimProcess(seed=14, args=["--frozen"]) as s:
        got = s.clock()
    assert abs(got["offset_s"] - want) < 1e-6
    assert ("--mis-gate" in SimProcess(seed=1).args) == SimProcess.defaults["mis_gate"]
    assert abs((_stamp(got["now_ist"]) - (datetime.now(IST) + timedelta(seconds=want)).replace(tzinfo=None))
               .total_seconds()) <= 2
