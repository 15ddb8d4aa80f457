"""Fixtures for the real-browser end-to-end test: simulator + service + Streamlit subprocesses, headless chromium.

Everything binds to 127.0.0.1 on free ports and runs against one SQLite file under tmp_path. The browser is
Debian's /usr/bin/chromium driven by Playwright (never ``playwright install``); without it the test is skipped.
Screenshots go to ``$APP_E2E_SCREENSHOTS`` (relative to the repo root, e.g. ``docs/screenshots``) or, by
default, to ``tmp_path/screenshots``.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simulator.testing import SimProcess, free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 1000}
# Short intervals so the flow takes seconds; a long stall timeout because the test freezes the market.
SERVICE_ENV = {
    "APP__SERVICE__HEARTBEAT_S": "1.0", "APP__SERVICE__POLLER_INTERVAL_S": "1.0",
    "APP__SERVICE__FUNDS_REFRESH_S": "2.0", "APP__SERVICE__RISK_SWEEP_S": "1.0",
    "APP__SERVICE__PNL_SNAPSHOT_S": "1.0", "APP__SERVICE__FLUSH_INTERVAL_S": "0.5",
    "APP__SERVICE__WS_RECONNECT_MAX_S": "2.0", "APP__SERVICE__WS_STALL_SECONDS": "300",
    "APP__SERVICE__RECONCILE_INTERVAL_S": "1.0", "APP__SERVICE__CHAIN_STRIKES": "8",
    "APP__UI__REFRESH_S": "1.0",
}


class Stack:
    """The product as a user runs it (scripts/demo.py), minus the demo accounts: the test adds its own."""

    def __init__(self, tmp: Path, **env: str):
        self.tmp = tmp
        self.extra_env = env  # APP__... overrides of SERVICE_ENV for both processes
        self.db_path = tmp / "algomirror.db"
        self.sim = SimProcess(seed=7, log_path=str(tmp / "sim.log"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.ui_port = 0
        self._logs: list = []

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APP__")}
        env.update(SERVICE_ENV, APP__DB__PATH=str(self.db_path), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
                   # the market clock of the session (tests/conftest.py), the simulator's too
                   APP__MARKET__CLOCK_OFFSET_S=os.environ.get("APP__MARKET__CLOCK_OFFSET_S", "0"))
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, args: list[str]) -> None:
        out = open(self.tmp / f"{name}.out", "ab")  # a file, never an undrained pipe
        self._logs.append(out)
        self.procs[name] = subprocess.Popen([sys.executable, *args], cwd=str(ROOT), env=self.env(), stdout=out,
                                            stderr=out, start_new_session=True)

    def start(self) -> "Stack":
        self.sim.start()
        self._spawn("service", ["-m", "services", "--db", str(self.db_path), "--log-file", str(self.tmp / "svc.log")])
        for _attempt in range(3):
            self.ui_port = free_port()
            self._spawn("streamlit", ["-m", "scripts.serve", "--server.address", "127.0.0.1",
                                      "--server.port", str(self.ui_port), "--server.headless", "true",
                                      "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"])
            if self._wait_health(60):
                return self
            self._stop("streamlit")
        raise RuntimeError("streamlit did not become healthy:\n" + self.log_tail("streamlit"))

    def _wait_health(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs["streamlit"].poll() is not None:
                return False
            try:
                if httpx.get(f"{self.ui_url}/_stcore/health", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def log_tail(self, name: str, n: int = 3000) -> str:
        parts = []
        for f in (self.tmp / f"{name}.out", self.tmp / "svc.log" if name == "service" else None):
            if f is not None and f.exists():
                parts.append(f.read_text(errors="replace")[-n:])
        return "\n".join(parts)

    def _stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: the streamlit/service children go too
            p.wait(5)

    def stop(self) -> None:
        for name in ("streamlit", "service"):
            try:
                self._stop(name)
            except Exception:  # noqa: BLE001 - keep cleaning up
                pass
        self.sim.stop()
        for f in self._logs:
            f.close()


@contextlib.contextmanager
def running_stack(tmp: Path, **env: str):
    s = Stack(tmp, **env)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@contextlib.contextmanager
def chromium_page():
    """A headless Debian chromium page (the test is skipped without /usr/bin/chromium)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"browser test needs Debian chromium at {CHROMIUM} (apt-get install chromium; CI installs it)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
            context.close()
        finally:
            browser.close()


@pytest.fixture
def stack(tmp_path):
    with running_stack(tmp_path) as s:
        yield s


@pytest.fixture
def browser_page():
    with chromium_page() as page:
        yield page


@pytest.fixture
def shots(tmp_path) -> Path:
    target = os.environ.get("APP_E2E_SCREENSHOTS")
    d = (ROOT / target) if target and not os.path.isabs(target) else Path(target or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d
