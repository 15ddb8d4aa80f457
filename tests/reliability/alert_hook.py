"""A JSON webhook on loopback that records what apprise's ``json://`` target posts (the alert tests' receiver)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from simulator.testing import free_port


class Webhook:
    """A JSON webhook on loopback that records what apprise's ``json://`` target posts, with arrival times."""

    def __init__(self):
        self.received: list[tuple[float, dict]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.received.append((time.monotonic(), json.loads(body or b"{}")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def matching(self, text: str) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in self.received if text in m.get("message", "")]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
