"""``python -m services`` with perf_counter stamps on the tick -> exit path, for the benches' breakdown only.

    BENCH_TRACE_SYMBOL=SBIN BENCH_TRACE_FILE=/tmp/trace.jsonl python bench/_traced_service.py --db ...

The product code is not changed: this launcher wraps a few of its functions (class attributes, before the
service starts) and then runs ``services.__main__.main``. A plain ``python -m services`` has none of this. Each
wrapper costs about a microsecond per call; the frame filter is one substring test per tick.

For each WebSocket frame that carries BENCH_TRACE_SYMBOL, the feed thread collects stamps (seconds on
``perf_counter``) while it handles the frame; if the risk manager decided a breach on it, the trace follows the
claimed exit intent to the dispatcher's pool thread and is written, once its placeorder returns, as one JSON line:
``{"wall": time.time() at the frame's arrival, "stamps": {name: ms after arrival}, "backlog": n}``.

Stamps, in path order (the first of each name counts):
  recv          on_message / on_backlog entered (ws.recv has returned the frame)
  parsed        json.loads of the frame done (MarketDataManager._apply returned)
  risk_tick     the risk manager's listener entered (positions listener and the price store before it)
  evaluate      RiskManager.evaluate entered for a run holding the symbol
  acct_tick     (account limits) AccountLimits' listener entered (after the positions, risk and stops ones)
  decided       the breach is decided (RiskManager._attempt entered; AccountLimits._trip for an account)
  lock          the process writer lock is held (WriteGate.acquire entered: Store.gated takes the lock first)
  gate          the cross-process write gate is held (WriteGate.acquire returned)
  write_fn      the exit rows' write function entered (services.risk.write_run_exit)
  begun         BEGIN IMMEDIATE executed (SQLAlchemy 'begin' event, after the product's own listener)
  halt_rows     (account limits) halt_and_flatten returned: halt, risk event, flatten command written
  exit_rows     write_run_exit returned (run -> exiting, exit intents, risk event written); for an account
                limit, early_closes returned (the first closes written)
  claimed       OrderDispatcher.claim_next_in returned (queued -> claimed -> sent, in the same transaction)
  commit        COMMIT issued (SQLAlchemy 'commit' event)
  committed     OrderDispatcher.send_claimed entered (after COMMIT, writer lock and gate released)
  post          OpenAlgoClient.start_placeorder entered (on the committing thread when send_claimed writes the
                request itself, else on the pool thread)
  http          OrderConnections.send entered (JSON encoding done; the rate token is taken after it)
  written       start_placeorder returned with the request written
  pool          the pool thread's _drain_account entered with the claimed intent
  answered      OrderCall.result returned (the simulator's answer read)
"""
from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402

import broker.client as client_mod  # noqa: E402
import broker.orderconn as orderconn_mod  # noqa: E402
import db.engine as engine_mod  # noqa: E402
import services.account_limits as al_mod  # noqa: E402
import services.dispatcher as dispatcher_mod  # noqa: E402
import services.market_data as md_mod  # noqa: E402
import services.risk as risk_mod  # noqa: E402

SYM = os.environ.get("BENCH_TRACE_SYMBOL", "SBIN")
OUT = open(os.environ.get("BENCH_TRACE_FILE", "trace.jsonl"), "a", buffering=1)  # noqa: SIM115
NEEDLE_S, NEEDLE_B = f'"{SYM}"', f'"{SYM}"'.encode()
pc = time.perf_counter
tl = threading.local()
by_intent: dict[int, dict] = {}
out_lock = threading.Lock()


def stamp(name: str, tr: dict | None = None) -> None:
    tr = tr if tr is not None else getattr(tl, "tr", None)
    if tr is not None and name not in tr["s"]:
        tr["s"][name] = pc()


def _has(raw) -> bool:
    return (NEEDLE_B if isinstance(raw, bytes | bytearray) else NEEDLE_S) in raw


def _wrap_feed(orig, backlog: bool):
    def wrapped(self, arg):
        hit = any(_has(f) for f in arg) if backlog else _has(arg)
        if not hit:
            tl.sys = None
            return orig(self, arg)
        if backlog:
            arg = list(arg)
        now = pc()
        tr = tl.tr = {"wall": time.time(), "s": {"recv": now}, "backlog": len(arg) if backlog else 0}
        sys_call = getattr(tl, "sys", None)
        if sys_call is not None:  # the feed thread's first socket read after its previous frame: when it waited
            tr["sys"] = [round((x - now) * 1000.0, 4) for x in sys_call]
        try:
            return orig(self, arg)
        finally:
            tl.tr = tl.sys = None
            del tr  # kept alive by by_intent if a breach was decided on it
    return wrapped


SO_TIMESTAMPNS = 35  # Linux: the kernel's receive time of each packet, as ancillary data of recvmsg


def _wrap_sock_recv(orig):
    """The feed socket's reads that reach the kernel: the first one after a frame was handled is kept as
    (entered, returned, the kernel's receive time of the bytes it returned), so a trace says whether the feed
    thread was already waiting when the tick was sent, and how long after the bytes arrived it ran. The kernel
    read is the product's (ReadAheadSocket.recv) with recvmsg in place of recv, for the timestamp."""
    def wrapped(self, n):
        if self._pos < len(self._buf) or getattr(tl, "sys", None) is not None:
            return orig(self, n)
        sock = self._sock
        if not self.__dict__.get("_bench_ts"):  # (not getattr: ReadAheadSocket forwards it to the socket)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self._bench_ts = True
        t_in = pc()
        want = max(n, md_mod.READ_AHEAD)
        data, anc, _flags, _addr = sock.recvmsg(want, 64)
        t_out, w_out = pc(), time.time()
        kernel = None
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                sec, nsec = struct.unpack("qq", raw[:16])
                kernel = t_out - (w_out - (sec + nsec / 1e9))  # on perf_counter's scale
        tl.sys = (t_in, t_out) if kernel is None else (t_in, t_out, kernel)
        self._full = len(data) == want
        if len(data) <= n:
            return data
        self._buf, self._pos = data, n
        return data[:n]
    return wrapped


def _after(orig, name):
    def wrapped(*a, **kw):
        r = orig(*a, **kw)
        stamp(name)
        return r
    return wrapped


def _before(orig, name):
    def wrapped(*a, **kw):
        stamp(name)
        return orig(*a, **kw)
    return wrapped


MDM = md_mod.MarketDataManager
MDM.on_message = _wrap_feed(MDM.on_message, False)
MDM.on_backlog = _wrap_feed(MDM.on_backlog, True)
MDM._apply = _after(MDM._apply, "parsed")
md_mod.ReadAheadSocket.recv = _wrap_sock_recv(md_mod.ReadAheadSocket.recv)
RM = risk_mod.RiskManager
RM._on_tick = _before(RM._on_tick, "risk_tick")
RM.evaluate = _before(RM.evaluate, "evaluate")
RM._attempt = _before(RM._attempt, "decided")
risk_mod.write_run_exit = _after(_before(risk_mod.write_run_exit, "write_fn"), "exit_rows")
# an account's daily limit (bench_account_limit.py --trace): its listener, the trip, and the trip transaction's
# parts (halt + risk event + flatten command, then the first closes from the stored positionbook)
AL = al_mod.AccountLimits
AL._on_tick = _before(AL._on_tick, "acct_tick")
AL._trip = _before(AL._trip, "decided")
al_mod.halt_and_flatten = _after(_before(al_mod.halt_and_flatten, "write_fn"), "halt_rows")
al_mod.early_closes = _after(al_mod.early_closes, "exit_rows")

_gate_acquire = engine_mod.WriteGate.acquire


def gate_acquire(self, wait_s=None):
    stamp("lock")
    _gate_acquire(self, wait_s)
    stamp("gate")


engine_mod.WriteGate.acquire = gate_acquire
_make_engine = engine_mod.make_engine


def make_engine(*a, **kw):
    engine = _make_engine(*a, **kw)
    event.listen(engine, "begin", lambda conn: stamp("begun"))  # after the product's BEGIN IMMEDIATE listener
    event.listen(engine, "commit", lambda conn: stamp("commit"))
    return engine


engine_mod.make_engine = make_engine
OD = dispatcher_mod.OrderDispatcher
_claim_next_in = OD.claim_next_in


def claim_next_in(self, s, account_id):
    view = _claim_next_in(self, s, account_id)
    stamp("claimed")
    tr = getattr(tl, "tr", None)
    if view is not None and tr is not None and "decided" in tr["s"]:
        by_intent[view.id] = tr
    return view


OD.claim_next_in = claim_next_in
OD.send_claimed = _before(OD.send_claimed, "committed")
_drain = OD._drain_account


def drain_account(self, account_id, placed=None, first=None, call=None):
    tr = by_intent.pop(first.id, None) if first is not None else None
    if tr is None:
        return _drain(self, account_id, placed, first, call)
    stamp("pool", tr)
    tl.tr = tr
    try:
        return _drain(self, account_id, placed, first, call)
    finally:
        tl.tr = None


OD._drain_account = drain_account
_start_placeorder = client_mod.OpenAlgoClient.start_placeorder
by_call: dict[int, dict] = {}  # id(OrderCall) -> the trace it belongs to (OrderCall has __slots__)


def start_placeorder(self, **kw):
    tr = getattr(tl, "tr", None)
    if tr is None or "post" in tr["s"] or "decided" not in tr["s"]:
        return _start_placeorder(self, **kw)
    before = set(tr["s"])
    stamp("post", tr)
    call = _start_placeorder(self, **kw)
    if call is None:  # not written (no idle connection, no token): the pool thread's POST is the one to trace
        for name in set(tr["s"]) - before:
            del tr["s"][name]
        return None
    stamp("written", tr)
    by_call[id(call)] = tr
    return call


_result = client_mod.OrderCall.result


def result(self):
    tr = by_call.pop(id(self), None)
    if tr is None:
        return _result(self)
    try:
        return _result(self)
    finally:
        stamp("answered", tr)
        t0 = tr["s"]["recv"]
        line = json.dumps({"wall": tr["wall"], "backlog": tr["backlog"], "sys": tr.get("sys"),
                           "stamps": {k: round((v - t0) * 1000.0, 4) for k, v in tr["s"].items()}})
        with out_lock:
            OUT.write(line + "\n")


client_mod.OpenAlgoClient.start_placeorder = start_placeorder
client_mod.OrderCall.result = result
orderconn_mod.OrderConnections.send = _before(orderconn_mod.OrderConnections.send, "http")

if __name__ == "__main__":
    from services.__main__ import main

    sys.exit(main(sys.argv[1:]))
