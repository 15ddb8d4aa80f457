"""broker/orderconn.py: placeorder over http.client keeps what can be known about a failure (never connected:
nothing sent; anything later: outcome unknown), reuses kept-alive connections, and reconnects cleanly when the
server has closed an idle one. A scripted socket server plays the gateway; the simulator covers the rest."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from broker.client import OpenAlgoClient
from broker.orderconn import OrderConnections
from broker.errors import OrderOutcomeUnknown, TemporaryBrokerError
from simulator.testing import free_port

ORDER = dict(strategy="t", symbol="SBIN", exchange="NSE", action="BUY", quantity=1)


class ScriptedGateway:
    """Accepts connections; for each request, does what ``script`` says next: 'answer' (keep-alive reply),
    'answer_then_close' (reply, then close the idle connection) or 'close' (read the request, never answer)."""

    def __init__(self, script: list[str], port: int = 0):
        self.script, self.requests, self.hosts = list(script), [], []
        self.srv = socket.create_server(("127.0.0.1", port))
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        buf = b""
        with conn:
            while self.script:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(
                    b"content-length")][0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(json.loads(rest[:length]))
                self.hosts += [ln.split(b":", 1)[1].strip().decode() for ln in head.split(b"\r\n")
                               if ln.lower().startswith(b"host:")]
                buf = rest[length:]
                step = self.script.pop(0)
                if step == "close":
                    return
                body = json.dumps({"orderid": f"OID{len(self.requests)}", "status": "success"}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                if step == "answer_then_close":
                    return

    def close(self):
        self.srv.close()


@pytest.fixture
def gateway():
    made = []

    def make(script):
        g = ScriptedGateway(script)
        made.append(g)
        return g, OpenAlgoClient(f"http://127.0.0.1:{g.port}", "k" * 32, read_timeout=2.0, connect_timeout=1.0)
    yield make
    for g in made:
        g.close()


def test_placeorder_when_connections_kept_alive_then_one_connection_serves_several_orders(gateway):
    g, client = gateway(["answer", "answer", "answer"])
    assert [client.placeorder(**ORDER) for _ in range(3)] == ["OID1", "OID2", "OID3"]
    assert client.orders.opened == 1 and len(g.requests) == 3
    assert g.requests[0]["apikey"] == "k" * 32 and g.requests[0]["symbol"] == "SBIN"


class CountingSocket:
    """A connection's socket, with every write it is given kept."""

    def __init__(self, sock, writes: list):
        self._sock, self._writes = sock, writes

    def sendall(self, data):
        self._writes.append(bytes(data))
        return self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_placeorder_when_written_then_headers_and_body_leave_in_one_write(gateway):
    """With TCP_NODELAY each write is a segment: headers and body written apart woke the gateway twice before it
    could read the order (http.client's own request())."""
    g, client = gateway(["answer", "answer"])
    assert client.placeorder(**ORDER) == "OID1"
    conn = client.orders._idle[0][0]
    writes = []
    conn.sock = CountingSocket(conn.sock, writes)
    assert client.placeorder(**ORDER) == "OID2"
    assert len(writes) == 1, writes
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/v1/placeorder HTTP/1.1") and json.loads(body) == g.requests[1]
    assert g.requests[1]["symbol"] == "SBIN" and client.orders.opened == 1


def test_placeorder_when_server_closed_the_idle_connection_then_reconnects_and_places_once(gateway):
    g, client = gateway(["answer_then_close", "answer"])
    assert client.placeorder(**ORDER) == "OID1"
    threading.Event().wait(0.05)  # the server's FIN arrives on the idle connection
    assert client.placeorder(**ORDER) == "OID2"  # not 'unknown': the dead connection was never written to
    assert client.orders.opened == 2 and len(g.requests) == 2


def test_placeorder_when_request_read_but_never_answered_then_outcome_unknown_not_retried(gateway):
    g, client = gateway(["close", "answer"])
    with pytest.raises(OrderOutcomeUnknown, match="outcome unknown"):
        client.placeorder(**ORDER)
    assert len(g.requests) == 1  # it reached the server once and was not sent again


def test_placeorder_when_nothing_listens_then_not_sent_error_and_key_not_in_message():
    client = OpenAlgoClient(f"http://127.0.0.1:{free_port()}", "secretkey" * 4, connect_timeout=1.0)
    with pytest.raises(TemporaryBrokerError, match="cannot connect") as err:
        client.placeorder(**ORDER)
    assert not isinstance(err.value, OrderOutcomeUnknown) and "secretkey" not in str(err.value)


def test_https_gateway_when_client_built_then_orders_go_through_httpx():
    assert OpenAlgoClient("https://example.invalid", "k" * 32).orders is None


def test_start_placeorder_without_waiting_when_it_cannot_go_at_once_then_nothing_is_sent(gateway):
    """``wait=False`` (the market-data thread posting an exit) never waits for a rate token: None, nothing sent,
    no token spent, the kept-alive connection left for the next order. With no connection idle, one made at once
    (a gateway on loopback) carries it."""
    g, client = gateway(["answer", "answer", "answer"])
    client.orders.quick_connect_s = 1.0  # the bound is not what this test is about (a loaded CI machine)
    call = client.start_placeorder(**ORDER, wait=False)  # no connection yet: a quick connect
    assert call is not None and call.result() == "OID1" and client.orders.opened == 1
    client.order_bucket.block_for(3600)  # what a 429 does: no token for an hour
    assert client.start_placeorder(**ORDER, wait=False) is None and len(g.requests) == 1  # no rate token
    client.order_bucket.blocked_until, client.order_bucket.tokens = 0.0, 1.0
    call = client.start_placeorder(**ORDER, wait=False)
    assert call is not None and call.result() == "OID2" and client.orders.opened == 1  # the kept-alive one
    assert len(g.requests) == 2 and client.calls["placeorder"] == 2  # the refused attempt was never a call


def test_start_placeorder_without_waiting_when_the_gateway_accepts_no_connection_in_time_then_nothing_sent():
    """A gateway that does not complete the TCP handshake within the quick connect's few ms (here: a listener
    whose accept queue is full, so the SYN is dropped): None and nothing sent; the normal POST that follows
    cannot connect either and says so (not sent, never 'unknown')."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    filler = socket.create_connection(srv.getsockname(), timeout=1.0)  # takes the one place in the queue
    try:
        client = OpenAlgoClient(f"http://127.0.0.1:{srv.getsockname()[1]}", "k" * 32, connect_timeout=0.3)
        assert client.start_placeorder(**ORDER, wait=False) is None and client.orders.opened == 0
        assert "placeorder" not in client.calls
        with pytest.raises(TemporaryBrokerError, match="cannot connect"):
            client.placeorder(**ORDER)
    finally:
        filler.close()
        srv.close()


def test_start_placeorder_without_waiting_when_the_url_names_a_host_then_no_lookup_until_a_connection_made_one():
    """A host name would need a DNS lookup, which no connect timeout bounds: with no address known yet nothing is
    sent without waiting; once a normal POST has connected, its peer's address serves the quick connects, and
    the request still names the URL's host."""
    g = ScriptedGateway(["answer_then_close", "answer"])
    try:
        client = OpenAlgoClient(f"http://localhost:{g.port}", "k" * 32, read_timeout=2.0, connect_timeout=1.0)
        client.orders.quick_connect_s = 1.0  # a normal connect under half of it turns quick connects on
        assert client.start_placeorder(**ORDER, wait=False) is None and g.requests == []
        assert client.placeorder(**ORDER) == "OID1"
        threading.Event().wait(0.05)  # the server's FIN arrives on the idle connection
        call = client.start_placeorder(**ORDER, wait=False)  # the idle one is dead: a quick connect to its peer
        assert call is not None and call.result() == "OID2" and client.orders.opened == 2
        assert g.hosts == [f"localhost:{g.port}"] * 2
    finally:
        g.close()


def test_start_placeorder_without_waiting_after_a_failed_quick_connect_then_none_until_a_normal_one_is_fast():
    """After a quick connect failed (here refused: no gateway listening), the next exits do not try again, even
    when the gateway is back: a slow or remote gateway costs the market-data thread the wait once. A normal POST
    that connects fast turns them back on."""
    port = free_port()
    client = OpenAlgoClient(f"http://127.0.0.1:{port}", "k" * 32, read_timeout=2.0, connect_timeout=1.0)
    client.orders.quick_connect_s = 1.0  # the bound is not what this test is about (a loaded CI machine)
    assert client.start_placeorder(**ORDER, wait=False) is None
    g = ScriptedGateway(["answer_then_close", "answer"], port=port)
    try:
        assert client.start_placeorder(**ORDER, wait=False) is None and g.requests == []
        assert client.placeorder(**ORDER) == "OID1" and len(g.requests) == 1
        threading.Event().wait(0.05)  # the server's FIN arrives on the idle connection
        call = client.start_placeorder(**ORDER, wait=False)
        assert call is not None and call.result() == "OID2" and client.orders.opened == 2
    finally:
        g.close()


def test_start_placeorder_without_waiting_when_the_url_is_a_public_address_then_no_quick_connect_before_a_fast_one(
        monkeypatch):
    """A gateway at a public address may be far away: no quick connect is tried on the caller's thread until a
    normal connect has shown it answers fast. A loopback or private address is tried at once. (The socket
    library's connect is recorded, not made: nothing leaves this machine.)"""
    tried = []

    def record(addr, timeout=None, *a, **k):
        tried.append(addr)
        raise ConnectionRefusedError("recorded, not connected")
    monkeypatch.setattr(socket, "create_connection", record)
    for host in ("8.8.8.8", "127.0.0.1", "192.168.1.20", "[::1]"):
        orders = OrderConnections(f"http://{host}:5000/api/v1/", connect_timeout=1.0, read_timeout=1.0)
        assert orders.send("placeorder", b"{}", connect="quick") is None and orders.opened == 0
    assert tried == [("127.0.0.1", 5000), ("192.168.1.20", 5000), ("::1", 5000)]


def test_start_placeorder_when_written_then_the_answer_is_read_on_another_thread(gateway):
    g, client = gateway(["answer", "close"])
    assert client.placeorder(**ORDER) == "OID1"
    call = client.start_placeorder(**ORDER, wait=False)  # written now, over the kept-alive connection
    assert call is not None
    got: list = []

    def read():
        try:
            call.result()
        except OrderOutcomeUnknown as exc:  # the gateway read it and closed: it may have been placed
            got.append(exc)
    t = threading.Thread(target=read)
    t.start()
    t.join(5)
    assert len(got) == 1 and len(g.requests) == 2  # reached the server once, outcome unknown, never resent
