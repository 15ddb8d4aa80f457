"""A placeorder answered HTTP 404 (a wrong host path, or the gateway's broker module missing) was not processed:
the intent is rejected with a readable reason, never 'unknown' with an 'unexpected error' traceback; an HTML error
page is reduced to its status line and a hint. Against the real simulator (aiohttp's plain-text 404) and a
loopback server answering the way OpenAlgo's Flask server does (an HTML page)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from db.accounts import add_account
from db.models import ServiceLog
from services.dispatcher import OrderDispatcher
from simulator.testing import free_port
from tests.service.fixtures_orders import (  # noqa: F401
    add_intent, intent, octx, order_sim, placed_at_sim, sim_account)

FLASK_404 = (b'<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested '
             b'URL was not found on the server. If you entered the URL manually please check your spelling and try '
             b'again.</p>\n')


@pytest.fixture
def html_404():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(FLASK_404)))
            self.end_headers()
            self.wfile.write(FLASK_404)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _logs(db) -> list[str]:
    with db.read() as s:
        return [r.message for r in s.query(ServiceLog).all()]


def test_placeorder_when_host_path_is_wrong_then_rejected_with_the_reason_and_a_hint(db, octx, order_sim):
    acct = add_account(db, "wrong-path", order_sim.rest_url + "/openalgo", order_sim.ws_url,
                       order_sim.create_account("wrong-path"))
    iid = add_intent(db, acct)
    OrderDispatcher(octx).run_once()
    row = intent(db, iid)
    assert row.status == "rejected", (row.status, row.status_reason)
    assert "404" in row.status_reason and "is the host URL the OpenAlgo root" in row.status_reason
    assert not any("unexpected error" in m for m in _logs(db))


def test_placeorder_when_gateway_answers_an_html_404_then_rejected_with_its_status_line_not_the_page(
        db, octx, html_404):
    acct = add_account(db, "html-404", html_404, "ws://127.0.0.1:1", "k" * 32)
    iid = add_intent(db, acct)
    OrderDispatcher(octx).run_once()
    row = intent(db, iid)
    assert row.status == "rejected"
    assert "HTTP 404 Not Found" in row.status_reason and "<" not in row.status_reason
    assert "requested URL was not found" not in row.status_reason
