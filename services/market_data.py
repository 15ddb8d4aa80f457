"""Shared market-data feed: ONE OpenAlgo WebSocket for the whole service, ref-counted subscriptions.

- Consumers ("positions", "risk", "chain:<id>") hold (symbol, exchange) at a mode (1 LTP, 2 Quote, 3 Depth).
  A symbol stays subscribed while any consumer holds it; the wire mode is the max mode held.
- The connection uses the primary account's key (``feed_order``: primary, then backups). After
  ``ws_failover_after`` consecutive failed sessions, or at once on AUTHENTICATION_ERROR (the account is then
  marked ``invalid_key``), it fails over to the next account; a failed account rests ``ws_failover_cooldown_s``.
- Reconnects use exponential backoff (``ws_reconnect_base_s`` .. ``ws_reconnect_max_s``) and resubscribe
  everything. A data-stall watchdog closes the socket when no tick arrives for ``ws_stall_seconds``.
- Tick path: one ``json.loads``, a dict write, the listeners. No DB, no locks. A tick whose ltp is 0, None or
  negative never overwrites a valid price and is not passed to listeners (counted as ``zero_ticks``).
- Backlog: when several frames are ready at once (the service was paused, or fell behind), all of them are read
  before anyone acts; the price store ends with the newest tick per symbol and the listeners see only that one,
  once (``coalesced`` counts the ticks they never saw). A breach that a later frame of the backlog undid never
  reaches the risk manager.
- Tick time: ``last_price`` gives (ltp, market-data clock time). A tick whose feed ``timestamp`` is more than
  ``LATE_TICK_S`` older than the moment we read it is dated by that timestamp (counted as ``late_ticks``), so a
  backlog shows its real age; otherwise the receive time is used.
"""
from __future__ import annotations

import json
import logging
import select
import threading
import time
from collections.abc import Callable, Iterable

import websocket

from db.accounts import api_key_for, feed_order, set_status
from services.context import ServiceContext
from services.health import heartbeat, service_log

log = logging.getLogger("services.market_data")
Key = tuple[str, str]
Listener = Callable[[str, str, dict], None]
AUTH_WAIT_S = 5.0
RECV_POLL_S = 0.25
READ_AHEAD = 256 * 1024
BACKLOG_MAX = 10_000  # frames per backlog pass: listeners still run regularly if the feed outpaces us
# A tick is dated by its feed ``timestamp`` only when that lags the receive time by more than this. Live ticks (a
# small lag) keep the receive time, exactly as before: feeds stamp in whole seconds (exchange time) or on
# another machine's clock, and a live tick dated up to a second early could look older than a fill recorded
# just before it (services/pnl.py values a leg at its fill until a newer tick arrives). A lag above this is a
# real backlog (a pause, a stall), and its age is what the risk manager and the logs must see.
LATE_TICK_S = 2.0
# A feed timestamp older than this is not a backlog (the connection would have been dropped long before) but a
# wrong unit or clock (a local time sent as UTC is 5.5 h off): the receive time is used.
MAX_FEED_LAG_S = 3600.0


class ReadAheadSocket:
    """The feed socket with reads served from memory: one ``recv`` system call takes up to 256 KiB, and
    websocket-client's later small reads (it reads every frame as header, then payload) come from that buffer.

    Why: every socket call releases the interpreter lock, and getting it back waits up to
    ``sys.getswitchinterval()`` (5 ms) whenever another thread of the service is running Python code. Two
    system calls per tick meant a backlog of N ticks cost up to 2N such waits (measured: feed lag p99 ~35 ms,
    spikes to 90 ms, with 1,000 ticks/s and the service's other threads busy). Read ahead, a backlog is one
    call. Everything but ``recv`` goes to the wrapped socket."""

    def __init__(self, sock):
        self._sock = sock
        self._buf = b""
        self._pos = 0
        self._full = False  # the last system call filled the whole buffer: the kernel may hold more

    def recv(self, n: int) -> bytes:
        pos = self._pos
        if pos >= len(self._buf):
            want = max(n, READ_AHEAD)
            data = self._sock.recv(want)
            self._full = len(data) == want
            if len(data) <= n:
                return data
            self._buf, self._pos = data, n
            return data[:n]
        end = min(pos + n, len(self._buf))
        self._pos = end
        return self._buf[pos:end]

    def pending(self) -> bool:
        """More bytes are ready: left in the buffer, or (only after a read that filled it: a backlog bigger than
        the buffer) waiting in the kernel. The live case costs one comparison, no system call."""
        if self._pos < len(self._buf):
            return True
        if self._full:
            self._full = False
            return bool(select.select([self._sock], [], [], 0)[0])
        return False

    def __getattr__(self, name):
        return getattr(self._sock, name)


class FeedError(Exception):
    """This session failed (connect, auth, stall, drop). ``auth`` marks a rejected API key."""

    def __init__(self, message: str, auth: bool = False):
        super().__init__(message)
        self.auth = auth


def _valid_ltp(v) -> bool:
    return v.__class__ in (float, int) and v > 0


def tick_time(data: dict, now: float) -> float:
    """When the tick was made, on the market-data clock (``now`` is the receive time on it). The feed's
    ``timestamp`` (OpenAlgo: epoch ms from the broker adapter; seconds are accepted too) is used only for a lag
    between LATE_TICK_S and MAX_FEED_LAG_S (see there). A timestamp ahead of our clock (skew) counts as now; the
    result is never later than now. Not ``ltt``: the last trade of a quiet option can be minutes old while its
    quote is current."""
    ts = data.get("timestamp")
    if ts.__class__ not in (int, float) or ts <= 0:
        return now
    lag = time.time() - (ts / 1000.0 if ts > 1e11 else ts)
    return now - lag if LATE_TICK_S < lag < MAX_FEED_LAG_S else now


class MarketDataManager:
    def __init__(self, ctx: ServiceContext, *, clock=time.monotonic, notifier=None):
        self.ctx, self.clock, self.notifier = ctx, clock, notifier
        self.cfg = ctx.settings.service
        self._holds: dict[Key, set[tuple[str, int]]] = {}  # key -> {(consumer, mode)}
        self._wire: dict[Key, int] = {}  # what the server has, at which mode
        self._prices: dict[Key, tuple[float, float]] = {}
        self._data: dict[Key, dict] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # reload_accounts(): end the reconnect wait early
        self._threads: list[threading.Thread] = []
        self._ws: websocket.WebSocket | None = None
        self._account: tuple[int, str] | None = None
        self._cooldown: dict[int, float] = {}
        self._failures = 0
        self._last_tick = 0.0
        self._session_ticks = 0
        self.counters = dict(ticks=0, zero_ticks=0, late_ticks=0, coalesced=0, reconnects=0, failovers=0, stalls=0,
                             errors=0)
        # Feed-down watch (heartbeat thread only): when the tick counter last moved, and whether an outage was
        # alerted. Read from the counter, not from _last_tick, because every reconnect restarts the stall clock
        # and a feed that reconnects into silence again and again must still count as one long outage.
        self._flow = (-1, 0.0)
        self._down_alerted: float | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        for name, target in (("md-feed", self._run), ("md-heartbeat", self._heartbeat_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop the feed; the heartbeat row then says 'stopped' (written after the heartbeat thread has ended, so
        its last 'ok' cannot land on top)."""
        self._stop.set()
        self._wake.set()
        self._close_ws()
        started = bool(self._threads)
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        if started:
            heartbeat(self.ctx.db, "market_data", "stopped", self.status())

    # ---- subscriptions ---------------------------------------------------------------------------------------
    def subscribe(self, consumer: str, instruments: Iterable[tuple[str, str]], mode: int) -> None:
        with self._lock:
            for key in map(tuple, instruments):
                self._holds.setdefault(key, set()).add((consumer, int(mode)))
            self._sync_wire()

    def unsubscribe(self, consumer: str, instruments: Iterable[tuple[str, str]], mode: int) -> None:
        with self._lock:
            for key in map(tuple, instruments):
                held = self._holds.get(key)
                if held is not None:
                    held.discard((consumer, int(mode)))
                    if not held:
                        del self._holds[key]
                        # nobody keeps it subscribed: its price stops being maintained, so forget it. A later
                        # subscriber (a new position) must wait for a fresh tick or REST quote, never act on a
                        # price left over from, say, an option chain closed minutes ago.
                        self._prices.pop(key, None)
                        self._data.pop(key, None)
            self._sync_wire()

    def desired(self) -> dict[Key, int]:
        """Every held symbol with its effective (max) mode."""
        with self._lock:
            return {k: max(m for _, m in held) for k, held in self._holds.items()}

    def held_by(self, consumer: str) -> set[Key]:
        with self._lock:
            return {k for k, held in self._holds.items() if any(c == consumer for c, _ in held)}

    def _sync_wire(self) -> None:
        """Send the difference between held and wire subscriptions (lock held). No-op while disconnected."""
        if self._ws is None:
            return
        want = self.desired()
        drop = {k: m for k, m in self._wire.items() if want.get(k) != m}
        add = {k: m for k, m in want.items() if self._wire.get(k) != m}
        if drop:
            self._send({"action": "unsubscribe", "symbols": [
                {"symbol": s, "exchange": e, "mode": m} for (s, e), m in drop.items()]})
        for mode in sorted(set(add.values())):
            self._send({"action": "subscribe", "mode": mode, "depth": 5, "symbols": [
                {"symbol": s, "exchange": e} for (s, e), m in add.items() if m == mode]})
        if want and not self._wire:
            self._last_tick = self.clock()  # the stall clock starts when something is first subscribed
        self._wire = want

    def _send(self, msg: dict) -> None:
        try:
            self._ws.send(json.dumps(msg))
        except Exception as exc:  # the feed thread sees the broken socket and reconnects
            log.warning("market data send failed: %s", exc)

    # ---- prices ----------------------------------------------------------------------------------------------
    def add_listener(self, cb: Listener) -> None:
        self._listeners.append(cb)

    def last_price(self, symbol: str, exchange: str) -> tuple[float, float] | None:
        return self._prices.get((symbol, exchange))

    def last_data(self, symbol: str, exchange: str) -> dict | None:
        return self._data.get((symbol, exchange))

    def ingest_quote(self, symbol: str, exchange: str, data: dict) -> bool:
        """A price from elsewhere (REST quotes): same protection and listeners as a tick, no watchdog effect.
        Dated when it was fetched (a quote is the current price)."""
        key = (symbol, exchange)
        if not self._store(key, data, self.clock()):
            return False
        self._notify(key, data)
        return True

    def on_message(self, raw: str | bytes) -> None:
        """Handle one WebSocket frame: store it and call the listeners. The hot path: keep it lean."""
        tick = self._apply(raw)
        if tick is not None:
            key, data = tick
            if self._store(key, data, tick_time(data, self._last_tick)):  # _apply set _last_tick: receive time
                self._notify(key, data)

    def on_backlog(self, frames: Iterable[str | bytes]) -> None:
        """Frames that were ready together (a backlog), oldest first: each one counts, but only the newest valid
        tick per (symbol, exchange) is stored and passed to the listeners, after all of them were read. The end
        state of the price store is the one that applying them in order gives; nobody (the risk manager's tick
        path, its sweep thread) ever sees an intermediate price the backlog itself already superseded."""
        newest: dict[Key, dict] = {}
        applied = 0
        for raw in frames:
            tick = self._apply(raw)
            if tick is not None:
                key, data = tick
                if _valid_ltp(data.get("ltp")):
                    newest[key] = data
                    applied += 1
                else:
                    self.counters["zero_ticks"] += 1
        self.counters["coalesced"] += applied - len(newest)
        self.counters["ticks"] += applied - len(newest)  # _store counts the ones it stores
        now = self._last_tick
        stored = [(k, d) for k, d in newest.items() if self._store(k, d, tick_time(d, now))]
        for key, data in stored:
            self._notify(key, data)

    def _apply(self, raw) -> tuple[Key, dict] | None:
        """Parse one frame; a market_data frame feeds the watchdog and is returned as (key, data)."""
        try:
            msg = json.loads(raw)
        except ValueError:
            self.counters["errors"] += 1
            return None
        if msg.get("type") == "market_data":
            self._last_tick = self.clock()
            self._session_ticks += 1
            return (msg.get("symbol"), msg.get("exchange")), msg.get("data") or {}
        if msg.get("status") == "error":
            self.counters["errors"] += 1
            log.warning("market data server error: %s %s", msg.get("code"), msg.get("message"))
        return None

    def _store(self, key: Key, data: dict, t: float) -> bool:
        ltp = data.get("ltp")
        if not _valid_ltp(ltp):
            self.counters["zero_ticks"] += 1
            return False
        self.counters["ticks"] += 1
        if t < self._last_tick:
            self.counters["late_ticks"] += 1
        self._prices[key] = (ltp, t)
        self._data[key] = data
        return True

    def _notify(self, key: Key, data: dict) -> None:
        symbol, exchange = key
        for cb in self._listeners:
            try:
                cb(symbol, exchange, data)
            except Exception:
                log.exception("market data listener failed")

    def status(self) -> dict:
        acct = self._account
        return dict(connected=self._ws is not None, account=acct[1] if acct else None,
                    subscriptions=len(self._holds),
                    last_tick_age_s=round(self.clock() - self._last_tick, 3) if self._last_tick else None,
                    **self.counters)

    # ---- feed thread -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            acct = self._choose_account()
            healthy = False
            if acct is not None:
                healthy = self._session(acct)
            attempt = 0 if healthy else attempt + 1
            delay = min(self.cfg.ws_reconnect_max_s, self.cfg.ws_reconnect_base_s * 2 ** max(0, attempt - 1))
            if acct is None:  # no feed account yet: wait for one (reload_accounts wakes us), no backoff growth
                attempt = 0
            elif not self._stop.is_set():
                self.counters["reconnects"] += 1
            self._wake.wait(delay)
            self._wake.clear()

    def reload_accounts(self) -> None:
        """The account list changed (control command): an idle or backing-off feed retries now. A connected
        session is left alone (it re-reads the failover list on its next reconnect)."""
        self._wake.set()

    def _choose_account(self):
        now = self.clock()
        accounts = feed_order(self.ctx.db)
        ready = [a for a in accounts if now >= self._cooldown.get(a.id, 0.0)]
        if not ready and accounts:  # everyone is resting: try the one that failed longest ago
            ready = [min(accounts, key=lambda a: self._cooldown.get(a.id, 0.0))]
        return ready[0] if ready else None

    def _session(self, acct) -> bool:
        """One connection's life. Returns True if it was healthy (authenticated and, if subscribed, ticking)."""
        self._account = (acct.id, acct.name)
        self._session_ticks, authed, error = 0, False, None
        try:
            self._connect(acct)
            authed = True
            self._stream()
        except FeedError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - socket errors of every kind mean "reconnect"
            error = FeedError(f"{type(exc).__name__}: {exc}")
        finally:
            subscribed = bool(self._wire)
            self._close_ws()
        healthy = authed and (self._session_ticks > 0 or not subscribed)
        if healthy:
            self._failures = 0
            log.info("market data session via %s ended: %s", acct.name, error)
        elif error is not None:
            self._on_failure(acct, error)
        return healthy

    def _connect(self, acct) -> None:
        timeout = self.ctx.settings.broker.connect_timeout_s
        ws = websocket.create_connection(acct.ws_url, timeout=timeout, enable_multithread=True,
                                         skip_utf8_validation=True)  # pure-Python UTF-8 check: ~10x slower
        try:
            self._authenticate(ws, acct)
        except BaseException:
            ws.close()
            raise
        ws.settimeout(RECV_POLL_S)
        ws.sock = ReadAheadSocket(ws.sock)  # after the handshake and auth: nothing is left unread below it
        with self._lock:
            self._ws, self._wire = ws, {}
            self._last_tick = self.clock()
            self._sync_wire()
        log.info("market data connected via %s (%d symbols)", acct.name, len(self._wire))

    def _authenticate(self, ws: websocket.WebSocket, acct) -> None:
        ws.send(json.dumps({"action": "authenticate", "api_key": api_key_for(self.ctx.db, acct.id)}))
        deadline = self.clock() + AUTH_WAIT_S
        while self.clock() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("type") == "auth" and msg.get("status") == "success":
                return
            if msg.get("status") == "error":
                code = msg.get("code", "")
                raise FeedError(f"{code}: {msg.get('message', '')}", auth=code == "AUTHENTICATION_ERROR")
        raise FeedError("no authentication reply")

    def _stream(self) -> None:
        ws, on_message, stall = self._ws, self.on_message, self.cfg.ws_stall_seconds
        pending = ws.sock.pending
        while not self._stop.is_set():
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                raw = None
            if raw and pending():  # more frames already read: a backlog, handled as one
                raw = self._read_backlog(ws, raw, pending)
            elif raw:
                on_message(raw)
            if not raw and (raw is not None or not ws.connected):
                raise FeedError("connection closed by server")
            if self._wire and self.clock() - self._last_tick > stall:
                self.counters["stalls"] += 1
                raise FeedError(f"no tick for {stall:g}s (data stall)")

    def _read_backlog(self, ws, first, pending):
        """Read every frame that is ready (up to BACKLOG_MAX) and hand them to ``on_backlog`` together. Returns the
        last ``recv`` result for the caller's connection checks: a frame, '' (closed) or None (timed out)."""
        frames, raw = [first], first
        try:
            while len(frames) < BACKLOG_MAX and pending():
                try:
                    raw = ws.recv()
                except websocket.WebSocketTimeoutException:
                    raw = None
                if not raw:
                    break
                frames.append(raw)
        finally:  # a socket error mid-backlog still leaves the newest prices read so far in the store
            self.on_backlog(frames)
        return raw

    def _on_failure(self, acct, exc: FeedError) -> None:
        if self._stop.is_set():
            return
        self._failures += 1
        log.warning("market data via %s failed (%d): %s", acct.name, self._failures, exc)
        if exc.auth:
            set_status(self.ctx.db, acct.id, "invalid_key", f"WebSocket: {exc}")
            service_log(self.ctx.db, "market_data", "ERROR", f"feed account '{acct.name}' rejected: {exc}")
        if exc.auth or self._failures >= self.cfg.ws_failover_after:
            self._cooldown[acct.id] = self.clock() + self.cfg.ws_failover_cooldown_s
            self._failures = 0
            self.counters["failovers"] += 1
            service_log(self.ctx.db, "market_data", "WARNING", f"feed failing over from '{acct.name}'")

    def _close_ws(self) -> None:
        with self._lock:
            ws, self._ws, self._wire = self._ws, None, {}
        if ws is not None:
            try:
                ws.close(timeout=0.5)
            except Exception:  # noqa: BLE001
                pass

    def _heartbeat_loop(self) -> None:
        self._flow = (self.counters["ticks"], self.clock())
        while not self._stop.wait(min(self.cfg.heartbeat_s, self.cfg.ws_stall_seconds / 2)):
            try:
                self.watch_feed()
                st = self.status()
                heartbeat(self.ctx.db, "market_data", "ok" if st["connected"] else "degraded", st)
            except Exception:  # noqa: BLE001 - never let the heartbeat kill the thread
                log.exception("market data heartbeat failed")

    def watch_feed(self) -> str | None:
        """Alert once when nothing has flowed for longer than the stall window while something is subscribed (the
        run and account limits then live on the sweep's REST quotes), and once when ticks flow again. Returns the
        alert kind sent, if any."""
        now, ticks = self.clock(), self.counters["ticks"]
        if ticks != self._flow[0]:
            self._flow = (ticks, now)
        silent = now - self._flow[1]
        with self._lock:
            subscribed = bool(self._holds)
        acct = self._account
        if self._down_alerted is None and subscribed and silent > self.cfg.ws_stall_seconds:
            self._down_alerted = now - silent
            why = "connected, no ticks" if self._ws is not None else "not connected"
            msg = (f"market data feed down for {silent:.0f}s ({why}; feed account "
                   f"{acct[1] if acct else 'none'}): run and account limits are checked on REST quotes every "
                   f"{self.ctx.settings.service.risk_sweep_s:g}s until it is back")
            log.error("%s", msg)
            self._alert("feed_down", msg)
            return "feed_down"
        if self._down_alerted is not None and (silent <= self.cfg.ws_stall_seconds or not subscribed):
            msg = f"market data feed back after {now - self._down_alerted:.0f}s"
            self._down_alerted = None
            log.warning("%s", msg)
            self._alert("feed_restored", msg)
            return "feed_restored"
        return None

    def _alert(self, kind: str, message: str) -> None:
        if self.notifier is not None:
            self.notifier.alert(kind, message, subject="feed")
