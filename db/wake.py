"""A nudge to the service after the app or the local API wrote work for it (an order, an execute, a control command).

The service polls for queued intents every ``dispatch_poll_s`` and for control commands every 0.25 s, so without a
nudge a Quick Order or a webhook's execute waits up to that long before its POST. After its commit the writer sends
one datagram to the service's wake socket, and the service looks at once. The socket is in Linux's abstract
namespace (no file, no path length limit), named after the database file, so two databases on one machine never
wake each other's service. A nudge is only a hint: nothing is lost if no service listens (it polls as before), and
a stray datagram from anything else only costs one early poll.
"""
from __future__ import annotations

import hashlib
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("db.wake")


def address(db_path: str | Path) -> bytes:
    digest = hashlib.sha1(str(Path(db_path).resolve()).encode()).hexdigest()[:24]
    return b"\0algomirror-wake-" + digest.encode()


def notify(db_path: str | Path) -> bool:
    """Nudge the service of ``db_path`` (never blocks, never raises). True if a listener took it."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(b"w", address(db_path))
        return True
    except OSError:  # no service listening (it polls anyway), its queue is full (it is awake), not Linux
        return False


class WakeListener:
    """The service's end: calls ``on_wake()`` for every nudge, on a thread of its own."""

    def __init__(self, db_path: str | Path, on_wake: Callable[[], None]):
        self.db_path, self.on_wake = db_path, on_wake
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Bind and listen; False (the service still polls) if the socket cannot be bound."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(address(self.db_path))
        except OSError as exc:
            sock.close()
            log.warning("wake socket not available (%s): new work is picked up by polling only", exc)
            return False
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._loop, name="wake", daemon=True)
        self._thread.start()
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self.on_wake()
            except Exception:  # noqa: BLE001 - a nudge must never stop the listener
                log.exception("wake handler failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
