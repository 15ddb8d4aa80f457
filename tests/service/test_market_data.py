"""Market-data manager: ref-counted subscriptions, tick path, reconnect, watchdog, failover (real simulator)."""
from __future__ import annotations

import itertools
import json
import time

import pytest
from sqlalchemy import select

from db.models import Account, ServiceHeartbeat
from services.market_data import MarketDataManager
from simulator.testing import SimProcess
from tests.service.fixtures_md import account, ctx, make_ctx, md, tick, wait_for  # noqa: F401

_names = itertools.count(1)
SYMS = [("RELIANCE", "NSE"), ("SBIN", "NSE"), ("NIFTY", "NSE_INDEX")]


@pytest.fixture(scope="module")
def sim():
    with SimProcess(seed=3, tick_hz=20) as s:
        yield s


@pytest.fixture
def feed_account(db, sim):
    """A primary feed account on the simulator; returns (account id, sim account name)."""
    name = f"md{next(_names)}"
    key = sim.create_account(name)
    return account(db, name, sim.rest_url, sim.ws_url, key, is_primary=True), name


class Recorder:
    def __init__(self):
        self.seen: dict[tuple[str, str], list[float]] = {}
        self.data: dict[tuple[str, str], dict] = {}

    def __call__(self, symbol, exchange, data):
        self.seen.setdefault((symbol, exchange), []).append(time.monotonic())
        self.data[(symbol, exchange)] = data

    def all_since(self, t: float, keys=SYMS) -> bool:
        return all(any(x > t for x in self.seen.get(k, [])) for k in keys)


def _started(ctx, rec=None) -> MarketDataManager:
    m = MarketDataManager(ctx)
    if rec:
        m.add_listener(rec)
    m.start()
    return m


# ---- in-process ---------------------------------------------------------------------------------------------
def test_wire_mode_is_max_held_and_symbol_stays_while_any_consumer_holds_it(md):
    a, b = ("RELIANCE", "NSE"), ("SBIN", "NSE")
    md.subscribe("positions", [a], 1)
    md.subscribe("chain:x", [a, b], 3)
    md.subscribe("chain:x", [a], 3)  # idempotent per consumer
    assert md.desired() == {a: 3, b: 3}
    md.unsubscribe("chain:x", [a, b], 3)
    assert md.desired() == {a: 1}
    md.unsubscribe("positions", [a], 1)
    assert md.desired() == {} and md.status()["subscriptions"] == 0


def test_zero_value_tick_is_ignored_when_a_valid_price_exists(md):
    rec = Recorder()
    md.add_listener(rec)
    tick(md, "SBIN", 801.5, "NSE")
    for bad in (0, None, -1, "12"):
        tick(md, "SBIN", bad, "NSE")
    assert md.last_price("SBIN", "NSE")[0] == 801.5
    assert len(rec.seen[("SBIN", "NSE")]) == 1
    assert md.status()["zero_ticks"] == 4 and md.status()["ticks"] == 1


def test_listener_error_does_not_break_the_tick_path(md):
    rec = Recorder()
    md.add_listener(lambda *a: 1 / 0)
    md.add_listener(rec)
    tick(md, "SBIN", 800, "NSE")
    md.on_message("not json")
    assert ("SBIN", "NSE") in rec.seen and md.status()["errors"] == 1


def test_tick_burst_when_ingested_then_every_tick_counted_and_last_price_kept(md):
    """Throughput is measured in bench/bench_ingest.py; here: a burst loses nothing and keeps the newest price."""
    msgs = [json.dumps({"type": "market_data", "symbol": f"S{i % 300}", "exchange": "NFO", "mode": 2,
                        "data": {"ltp": 100.0 + i % 9, "volume": 5, "oi": 0, "timestamp": 1}}) for i in range(40000)]
    rec = Recorder()
    md.add_listener(rec)
    for m in msgs:
        md.on_message(m)
    assert md.status()["ticks"] == 40000
    assert sum(len(v) for v in rec.seen.values()) == 40000
    assert md.last_price("S299", "NFO")[0] == 100.0 + 39899 % 9


# ---- against the simulator -------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_ticks_flow_and_heartbeat_is_written_when_connected(db, sim, feed_account):
    ctx = make_ctx(db)
    rec = Recorder()
    m = _started(ctx, rec)
    try:
        m.subscribe("positions", SYMS, 2)
        wait_for(lambda: rec.all_since(0))
        st = m.status()
        assert st["connected"] and st["account"] == feed_account[1] and st["subscriptions"] == 3
        assert m.last_price("RELIANCE", "NSE")[0] > 0
        wait_for(lambda: _heartbeat(db, "market_data"))
        assert _heartbeat(db, "market_data")["connected"] is True
        m.unsubscribe("positions", [SYMS[0]], 2)
        time.sleep(0.3)
        t = time.monotonic()
        wait_for(lambda: rec.all_since(t, SYMS[1:]))
        time.sleep(0.3)
        assert not any(x > t + 0.1 for x in rec.seen[SYMS[0]])
    finally:
        m.stop()


@pytest.mark.timeout(30)
def test_depth_mode_is_used_when_any_consumer_wants_depth(db, sim, feed_account):
    rec = Recorder()
    m = _started(make_ctx(db), rec)
    try:
        m.subscribe("positions", [("SBIN", "NSE")], 1)
        m.subscribe("chain:1", [("SBIN", "NSE")], 3)
        wait_for(lambda: "depth" in rec.data.get(("SBIN", "NSE"), {}))
    finally:
        m.stop()


@pytest.mark.timeout(30)
def test_reconnect_and_resubscribe_all_when_server_drops_ws(db, sim, feed_account):
    rec = Recorder()
    m = _started(make_ctx(db), rec)
    try:
        m.subscribe("positions", SYMS, 1)
        wait_for(lambda: rec.all_since(0))
        assert sim.fault("drop_ws")["dropped"] >= 1
        wait_for(lambda: m.status()["reconnects"] >= 1)
        t = time.monotonic()
        wait_for(lambda: m.status()["connected"] and rec.all_since(t))
        assert m.status()["failovers"] == 0
    finally:
        m.stop()


@pytest.mark.timeout(30)
def test_watchdog_reconnects_when_feed_is_muted(db, sim, feed_account):
    rec = Recorder()
    m = _started(make_ctx(db, ws_stall_seconds=1), rec)
    try:
        m.subscribe("positions", SYMS, 1)
        wait_for(lambda: rec.all_since(0))
        sim.fault("mute_ws", account=feed_account[1], duration_s=1.6)
        wait_for(lambda: m.status()["stalls"] >= 1, timeout=6)
        t = time.monotonic()
        wait_for(lambda: rec.all_since(t), timeout=8)
        assert m.status()["connected"]
    finally:
        m.stop()
        sim.clear_faults()


@pytest.mark.timeout(30)
def test_failover_to_backup_when_primary_key_is_invalid(db, sim):
    primary, backup = f"pri{next(_names)}", f"bak{next(_names)}"
    pid = account(db, primary, sim.rest_url, sim.ws_url, sim.create_account(primary), is_primary=True)
    account(db, backup, sim.rest_url, sim.ws_url, sim.create_account(backup), backup_order=1)
    sim.fault("invalid_key", account=primary)
    rec = Recorder()
    m = _started(make_ctx(db, ws_failover_after=50), rec)  # an auth error fails over at once, not after 50
    try:
        m.subscribe("positions", SYMS, 1)
        wait_for(lambda: m.status()["account"] == backup and rec.all_since(0), timeout=10)
        st = m.status()
        assert st["failovers"] == 1 and st["connected"]
        with db.read() as s:
            acct = s.get(Account, pid)
            assert acct.status == "invalid_key" and "AUTHENTICATION_ERROR" in acct.status_message
    finally:
        m.stop()
        sim.clear_faults()


@pytest.mark.timeout(30)
def test_failover_after_repeated_connect_failures(db, sim):
    name = f"ok{next(_names)}"
    account(db, "dead", "http://127.0.0.1:9", "ws://127.0.0.1:9", "d" * 32, is_primary=True)
    account(db, name, sim.rest_url, sim.ws_url, sim.create_account(name), backup_order=1)
    rec = Recorder()
    m = _started(make_ctx(db, ws_failover_after=2), rec)
    try:
        m.subscribe("positions", SYMS[:1], 1)
        wait_for(lambda: m.status()["account"] == name and rec.all_since(0, SYMS[:1]), timeout=10)
        assert m.status()["failovers"] == 1
    finally:
        m.stop()


def _heartbeat(db, component):
    with db.read() as s:
        hb = s.scalar(select(ServiceHeartbeat).where(ServiceHeartbeat.component == component))
        return json.loads(hb.details_json) if hb else None


def test_read_ahead_socket_when_a_backlog_of_frames_is_waiting_then_one_system_call_reads_them_all():
    import socket

    import websocket
    from websocket import ABNF

    from services.market_data import ReadAheadSocket

    class Counting:
        def __init__(self, sock):
            self.sock, self.calls = sock, 0

        def recv(self, n):
            self.calls += 1
            return self.sock.recv(n)

        def __getattr__(self, name):
            return getattr(self.sock, name)

    server, client = socket.socketpair()
    try:
        msgs = [json.dumps({"type": "market_data", "n": i, "pad": "x" * (i % 300)}) for i in range(200)]
        server.sendall(b"".join(ABNF(1, 0, 0, 0, ABNF.OPCODE_TEXT, 0, m.encode()).format() for m in msgs))
        counting = Counting(client)
        ws = websocket.WebSocket(skip_utf8_validation=True)
        ws.sock, ws.connected = ReadAheadSocket(counting), True
        assert [ws.recv() for _ in msgs] == msgs  # frames intact and in order
        assert counting.calls == 1  # the whole backlog (< 256 KiB) in one system call, not two per frame
        server.sendall(ABNF(1, 0, 0, 0, ABNF.OPCODE_TEXT, 0, b"later").format())
        assert ws.recv() == "later" and counting.calls == 2  # an empty buffer reads from the socket again
    finally:
        server.close()
        client.close()


def test_unsubscribe_when_last_holder_leaves_then_its_price_is_forgotten_until_a_fresh_tick(md):
    md.subscribe("chain", [("NIFTYCE", "NFO")], 3)
    md.subscribe("positions", [("SBIN", "NSE")], 1)
    md.subscribe("chain", [("SBIN", "NSE")], 3)
    tick(md, "NIFTYCE", 151.8)
    tick(md, "SBIN", 801.5, "NSE")
    md.unsubscribe("chain", [("NIFTYCE", "NFO"), ("SBIN", "NSE")], 3)
    assert md.last_price("NIFTYCE", "NFO") is None and md.last_data("NIFTYCE", "NFO") is None
    assert md.last_price("SBIN", "NSE")[0] == 801.5  # still held by positions: still maintained
    md.subscribe("positions", [("NIFTYCE", "NFO")], 1)  # a new position in the old chain symbol
    assert md.last_price("NIFTYCE", "NFO") is None  # the chain's last price is not reused
    tick(md, "NIFTYCE", 160.0)
    assert md.last_price("NIFTYCE", "NFO")[0] == 160.0


def _frame(symbol, ltp, exchange="NSE", **data) -> str:
    return json.dumps({"type": "market_data", "symbol": symbol, "exchange": exchange, "mode": 1,
                       "data": {"ltp": ltp, **data}})


@pytest.mark.timeout(20)
def test_backlog_in_one_read_when_breach_then_recovery_then_listener_sees_only_the_newest_tick(md):
    """A paused service resumes with frames buffered: a breach of SBIN, then its recovery. Every frame is read
    (counted) before anyone acts, and the listeners (the risk manager) see only the newest tick per symbol."""
    import socket
    import threading

    import websocket
    from websocket import ABNF

    from services.market_data import ReadAheadSocket

    server, client = socket.socketpair()
    rec, errors = Recorder(), []
    ltps: list[tuple[str, float]] = []
    md.add_listener(rec)
    md.add_listener(lambda s, e, d: ltps.append((s, d["ltp"])))
    ws = websocket.WebSocket(skip_utf8_validation=True)
    ws.sock, ws.connected = ReadAheadSocket(client), True
    ws.settimeout(0.05)
    md._ws = ws

    def feed():
        try:
            md._stream()
        except Exception as exc:  # noqa: BLE001 - the socket closed at the end of the test
            errors.append(exc)

    def send(*frames):
        server.sendall(b"".join(ABNF(1, 0, 0, 0, ABNF.OPCODE_TEXT, 0, f.encode()).format() for f in frames))

    try:
        send(_frame("SBIN", 1000.0), _frame("RELIANCE", 1400.0), _frame("SBIN", 940.0),  # the breach ...
             _frame("SBIN", 0), _frame("RELIANCE", 1401.0), _frame("SBIN", 1002.0))    # ... and the recovery
        t = threading.Thread(target=feed, daemon=True)
        t.start()
        wait_for(lambda: len(ltps) >= 2)
        time.sleep(0.2)
        assert sorted(ltps) == [("RELIANCE", 1401.0), ("SBIN", 1002.0)]  # never 940, once per symbol
        assert md.last_price("SBIN", "NSE")[0] == 1002.0 and md.last_price("RELIANCE", "NSE")[0] == 1401.0
        st = md.status()
        assert st["ticks"] == 5 and st["zero_ticks"] == 1 and st["coalesced"] == 3
        send(_frame("SBIN", 1003.0))  # live again: a single frame reaches the listeners at once, on its own
        wait_for(lambda: len(ltps) == 3, timeout=2)
        assert ltps[-1] == ("SBIN", 1003.0) and md.status()["coalesced"] == 3
    finally:
        md._stop.set()
        server.close()
        t.join(5)
        client.close()
    assert not t.is_alive()


def test_tick_age_when_the_feed_timestamp_lags_then_dated_by_it_else_by_receive_time(md):
    now_ms = time.time() * 1000.0

    def age(**data):
        tick(md, "SBIN", 800.0, "NSE", **data)
        return md.clock() - md.last_price("SBIN", "NSE")[1]

    assert 9.9 < age(timestamp=int(now_ms - 10_000)) < 10.5  # a backlog: its real age, from the feed's epoch ms
    assert 9.9 < age(timestamp=(now_ms - 10_000) / 1000.0) < 10.5  # epoch seconds are read too
    assert md.status()["late_ticks"] == 2
    # Live: a lag within LATE_TICK_S (whole-second feed stamps, skew) keeps the receive time, as does a timestamp
    # ahead of our clock, none at all, or a value no backlog can have (a wrong unit or clock).
    for data in (dict(timestamp=int(now_ms - 1_500)), dict(timestamp=int(now_ms + 60_000)), {},
                 dict(timestamp=1), dict(timestamp=int(now_ms - 5.5 * 3600_000)), dict(timestamp="x")):
        assert age(**data) < 0.1, data
    assert md.status()["late_ticks"] == 2
