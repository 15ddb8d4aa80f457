"""placeorder over plain ``http.client`` keep-alive connections, for gateways reached by ``http://``.

Why: a POST through httpx costs ~1 ms more Python than the same POST through ``http.client`` on a small VM, and
placeorder is the last hop of a risk exit. Reads stay on httpx (retries, pooling, TLS).

Exactly what can be known about a failed order POST is kept, as the exception raised:
  - ``NotSent``: no connection could be made (refused, unreachable, connect timeout). No byte of the request
    left this process, so nothing can have been placed.
  - ``MaybeSent``: anything after the connection was made (write, read, timeout, a closed or garbled
    response). The broker may have placed the order; the caller must treat the outcome as unknown.
A kept-alive connection is reused only while it has been idle for less than ``max_idle_s`` and the peer has not
closed it (the socket is not readable), so a server's idle timeout does not turn a normal order into an unknown.

A caller that must not wait (the market-data thread writing a risk exit) asks for a *quick* connection: an idle
one, or a new one only if the connect completes within ``quick_connect_s`` (a gateway on this machine or the LAN
answers a SYN in well under a millisecond). Quick connects are tried only where the gateway is known to answer
that fast: a loopback or private IP address in the URL, or a normal connect that took under half the bound. One
that fails (slow, refused, unreachable) sends nothing, the caller posts the normal way, and there are no more
quick connects until a normal connect is fast again: a remote gateway never costs an exit the wait twice.
Why: the gateway closes idle keep-alive connections (gunicorn's default keep-alive is 2 s), so a breach minutes
after the account's last order found no idle connection and its exit went to a pool thread to connect and POST
(about 1 ms later at the median, bench/README.md).
"""
from __future__ import annotations

import contextlib
import http.client
import ipaddress
import select
import socket
import threading
import time
from urllib.parse import urlsplit

HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "AlgoMirror"}
QUICK_CONNECT_S = 0.003  # the longest a quick connect may take (see the module docstring)


class NotSent(Exception):
    """The request never left this process."""


class MaybeSent(Exception):
    """The request may have reached the server; its outcome is unknown."""


class OrderConnections:
    def __init__(self, base_url: str, connect_timeout: float, read_timeout: float, max_idle_s: float = 30.0,
                 quick_connect_s: float = QUICK_CONNECT_S):
        u = urlsplit(base_url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError("OrderConnections serves http:// URLs only")
        self.host, self.port, self.prefix = u.hostname, u.port or 80, u.path.rstrip("/") + "/"
        self.connect_timeout, self.read_timeout, self.max_idle_s = connect_timeout, read_timeout, max_idle_s
        self.quick_connect_s = quick_connect_s
        # where quick connects go (an IP literal, else learnt from a connection: no DNS lookup on the caller's
        # thread) and whether they are worth trying (see the module docstring)
        ip = _ip(self.host)
        self._addr = (self.host, self.port) if ip is not None else None
        self._quick = ip is not None and (ip.is_loopback or ip.is_private)
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()
        self.opened = 0  # connections made (for tests)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def post(self, endpoint: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` (JSON) to ``<prefix><endpoint>``; returns (HTTP status, response bytes)."""
        return self.send(endpoint, body).answer()

    def send(self, endpoint: str, body: bytes, connect: bool | str = True, admit=None) -> Sent | None:
        """Write the request now; ``answer()`` on the result reads the response (on any thread, once).
        ``connect=False``: only over a kept-alive connection that is idle now; ``connect="quick"``: that, or a new
        connection made within ``quick_connect_s`` (a caller that must not wait for a slow connect, e.g. the
        market-data thread posting a risk exit). Otherwise None, and nothing is sent.
        ``admit()``, once a connection is in hand: False sends nothing and returns None (no rate token now)."""
        conn, since = self._take(connect)
        if conn is None:
            return None
        if admit is not None and not admit():
            self._give_back(conn, since)
            return None
        with _maybe_sent(conn):
            conn.request("POST", self.prefix + endpoint, body, HEADERS)
        return Sent(self, conn)

    def _give_back(self, conn: http.client.HTTPConnection, since: float | None = None) -> None:
        with self._lock:
            self._idle.append((conn, time.monotonic() if since is None else since))

    def _take(self, connect: bool | str = True) -> tuple[http.client.HTTPConnection | None, float | None]:
        """A connection to write on and when it went idle (None: new); (None, None) when none is idle and
        ``connect`` is False, or "quick" and no connection could be made quickly."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            if now - since < self.max_idle_s and not _peer_gone(conn):
                return conn, since
            conn.close()
        if not connect:
            return None, None
        if connect == "quick":
            return self._quick_connect(), None
        t0 = time.perf_counter()
        try:
            conn = self._open((self.host, self.port), self.connect_timeout)
        except OSError as exc:  # refused, unreachable, DNS, connect timeout: nothing was sent
            raise NotSent(type(exc).__name__) from None
        # a normal connect this fast (a DNS lookup included, for a host name) says quick connects will work
        self._addr, self._quick = conn.sock.getpeername()[:2], time.perf_counter() - t0 < self.quick_connect_s / 2
        return conn, None

    def _quick_connect(self) -> http.client.HTTPConnection | None:
        """A new connection to the gateway's address if the connect completes within ``quick_connect_s``. Only to
        an address known without a lookup (an IP literal in the URL, or the peer of an earlier connection): a DNS
        lookup is not bounded by the connect timeout."""
        if self._addr is None or not self._quick:
            return None
        try:
            return self._open(self._addr, self.quick_connect_s)
        except OSError:  # too slow, refused, unreachable: nothing was sent; the caller posts the normal way
            self._quick = False
            return None

    def _open(self, addr: tuple, timeout: float) -> http.client.HTTPConnection:
        """A connection to ``addr`` made within ``timeout``, ready for requests; the Host header stays the URL's."""
        sock = socket.create_connection(addr, timeout=timeout)
        try:
            sock.settimeout(self.read_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client's own connect does
        except OSError:
            sock.close()
            raise
        conn = OneWriteConnection(self.host, self.port)
        conn.sock = sock
        self.opened += 1
        return conn


class OneWriteConnection(http.client.HTTPConnection):
    """``http.client`` writes a request's headers and its body with two ``send`` calls: with TCP_NODELAY two
    segments, so the gateway woke for the headers and again for the body before it could read the order. Here a
    bytes body goes out in the same write as the headers; anything else (no body, a file, chunks) as before."""

    def _send_output(self, message_body=None, encode_chunked=False):
        if not isinstance(message_body, bytes) or encode_chunked:
            return super()._send_output(message_body, encode_chunked)
        self._buffer.extend((b"", b""))
        msg = b"\r\n".join(self._buffer)
        del self._buffer[:]
        self.send(msg + message_body)
        return None


class Sent:
    """A request written on a kept-alive connection, its response not read yet."""

    def __init__(self, owner: OrderConnections, conn: http.client.HTTPConnection):
        self._owner, self._conn = owner, conn

    def answer(self) -> tuple[int, bytes]:
        """(HTTP status, response bytes); MaybeSent if the response cannot be read. The connection goes back to
        the idle ones when the server keeps it open."""
        conn = self._conn
        with _maybe_sent(conn):
            resp = conn.getresponse()
            data = resp.read()
        if resp.will_close:
            conn.close()
        else:
            self._owner._give_back(conn)
        return resp.status, data


@contextlib.contextmanager
def _maybe_sent(conn: http.client.HTTPConnection):
    """Around anything done on a connection that is made: on failure the connection is dropped, and an I/O error
    means the request may have reached the server (MaybeSent)."""
    try:
        yield
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise MaybeSent(type(exc).__name__) from None
    except BaseException:
        conn.close()
        raise


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _peer_gone(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket that is readable has been closed by the server (or holds stray bytes): unusable."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
