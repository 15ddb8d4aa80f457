"""Alerts: what must reach the trader even when the database cannot be written.

``Notifier.alert(kind, message, subject)`` never blocks and never raises: it is called from the risk manager's
exit path, where the reason for alerting may be that the database is locked or full. It logs the alert at once
(CRITICAL, to the service's log file and stderr), then a background thread delivers it to every apprise target
in ``APP__ALERTS__URLS`` (Telegram, Discord, Slack, e-mail, ntfy, a JSON webhook ...) and records it in
service_log (level CRITICAL, shown on Service Health). A row that cannot be written yet (disk full) is kept and
written once the database takes writes again; delivery to the targets does not wait for that.

The same (kind, subject) is sent at most once per ``APP__ALERTS__THROTTLE_S``; later ones are counted as
suppressed. Alerts are never sent from the tick thread itself: the queue hand-off is all it costs there.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque

import apprise

from config import AlertsSettings
from db.models import ServiceLog, utcnow

log = logging.getLogger("services.alerts")
COMPONENT = "alerts"


def parse_urls(text: str) -> list[str]:
    return [u.strip() for u in (text or "").replace("\n", ",").split(",") if u.strip()]


class Notifier:
    def __init__(self, db, cfg: AlertsSettings):
        self.db, self.cfg = db, cfg
        self._targets = apprise.Apprise()
        for url in parse_urls(cfg.urls):
            if not self._targets.add(url):
                # the URL itself is never logged: it may carry a bot token or a password
                log.error("alerts: target %d of APP__ALERTS__URLS is not a URL apprise understands; skipped",
                          parse_urls(cfg.urls).index(url) + 1)
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._unwritten: deque = deque(maxlen=500)  # service_log rows waiting for a writable database
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = dict(raised=0, suppressed=0, delivered=0, delivery_failed=0)

    @property
    def targets(self) -> int:
        return len(self._targets)

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="alerts", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (bounded by ``timeout``), then stop."""
        self._stop.set()
        self._q.put(None)
        if self._thread:
            self._thread.join(timeout)

    def alert(self, kind: str, message: str, subject: str = "") -> bool:
        """Raise an alert now. Returns False when the same (kind, subject) was raised within the throttle window."""
        key, now = f"{kind}:{subject}", time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.cfg.throttle_s:
                self.stats["suppressed"] += 1
                return False
            self._last[key] = now
            self.stats["raised"] += 1
        log.critical("ALERT %s: %s", kind, message)
        self._q.put((kind, message, utcnow()))
        return True

    # ---- delivery --------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                item = self._q.get(timeout=1.0)
            except queue.Empty:
                item = ()
            if item is None or (self._stop.is_set() and self._q.empty()):
                self._write_rows()
                return
            if item:
                self._deliver(*item)
            self._write_rows()

    def _deliver(self, kind: str, message: str, at) -> None:
        self._unwritten.append((kind, message, at))
        if not len(self._targets):
            return
        try:
            ok = self._targets.notify(title=f"AlgoMirror alert: {kind}", body=message,
                                      notify_type=apprise.NotifyType.FAILURE)
        except Exception:  # noqa: BLE001 - a broken target must not stop the others' alerts
            log.exception("alerts: delivery raised")
            ok = False
        self.stats["delivered" if ok else "delivery_failed"] += 1
        if not ok:
            log.error("alerts: '%s' could not be delivered to every target", kind)

    def _write_rows(self) -> None:
        """service_log rows for the alerts raised so far; on a database fault they wait for the next try."""
        if not self._unwritten:
            return
        rows = list(self._unwritten)
        try:
            with self.db.write(wait_s=1.0) as s:
                s.add_all([ServiceLog(component=COMPONENT, level="CRITICAL", message=f"{kind}: {msg}"[:1024],
                                      ts_utc=at) for kind, msg, at in rows])
        except Exception as exc:  # noqa: BLE001 - the alert was logged and delivered already; retried later
            log.warning("alerts: %d alert(s) not yet in service_log: %s", len(rows), exc)
            return
        for _ in rows:
            self._unwritten.popleft()
