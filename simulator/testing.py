"""Test helper: run the simulator as a subprocess and drive it through its control API.

Usage::

    from simulator.testing import SimProcess
    with SimProcess(seed=7) as sim:
        key = sim.create_account("alice")
        sim.set_price("SBIN", "NSE", 800)

or as a pytest fixture::

    sim = sim_fixture(scope="session", seed=7)   # at module level of a conftest.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimProcess:
    """A running `python -m simulator` subprocess on free loopback ports.

    ``mis_gate`` / ``clock_offset_s`` default to ``SimProcess.defaults``: a test suite sets those once (the MIS gate
    on, the market clock inside market hours) and every simulator it starts follows."""

    defaults: dict = {"mis_gate": False, "clock_offset_s": 0.0}

    def __init__(self, seed: int = 1, args: list[str] | tuple = (), tick_hz: float | None = None,
                 python: str | None = None, startup_timeout: float = 20.0, log_path: str | None = None,
                 mis_gate: bool | None = None, clock_offset_s: float | None = None):
        self.seed = seed
        self.args = list(args)
        if tick_hz is not None:
            self.args += ["--tick-hz", str(tick_hz)]
        if (self.defaults["mis_gate"] if mis_gate is None else mis_gate) and "--mis-gate" not in self.args:
            self.args.append("--mis-gate")
        self.clock_offset_s = self.defaults["clock_offset_s"] if clock_offset_s is None else clock_offset_s
        if self.clock_offset_s and "--clock-offset-s" not in self.args:
            self.args += ["--clock-offset-s", repr(float(self.clock_offset_s))]
        self.python = python or sys.executable
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.port = self.ws_port = 0
        self.proc: subprocess.Popen | None = None
        self._client: httpx.Client | None = None
        self._log = None

    # ----- lifecycle -----------------------------------------------------
    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    def start(self) -> SimProcess:
        for _attempt in range(3):
            self.port, self.ws_port = free_port(), free_port()
            cmd = [self.python, "-m", "simulator", "--host", "127.0.0.1", "--port", str(self.port),
                   "--ws-port", str(self.ws_port), "--seed", str(self.seed), "--log-level", "WARNING",
                   *self.args]
            self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
            env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=self._log, stderr=self._log)
            self._client = httpx.Client(base_url=self.rest_url, timeout=10.0)
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError("simulator did not become ready")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self._client.get("/_sim/health", timeout=1.0).status_code == 200 and self._ws_open():
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    def _ws_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.ws_port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        if self._client:
            self._client.close()
            self._client = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Hard kill (SIGKILL), e.g. to test a client's reaction to a dead broker."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.stop()

    @property
    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----- control API ---------------------------------------------------
    def _post(self, path: str, body: dict) -> dict:
        r = self._client.post(path, json=body)
        r.raise_for_status()
        return r.json()

    def _get(self, path: str) -> dict:
        r = self._client.get(path)
        r.raise_for_status()
        return r.json()

    def create_account(self, name: str, capital: float | None = None, apikey: str | None = None) -> str:
        body = {"name": name}
        if capital is not None:
            body["capital"] = capital
        if apikey is not None:
            body["apikey"] = apikey
        return self._post("/_sim/accounts", body)["apikey"]

    def accounts(self) -> list[str]:
        return self._get("/_sim/accounts")["accounts"]

    def set_price(self, symbol: str, exchange: str, ltp: float) -> float:
        """Force a price; an option or future holds it until ``release_price`` or the next ``set_price``."""
        return self.price_change(symbol, exchange, ltp)["ltp"]

    def price_change(self, symbol: str, exchange: str, ltp: float) -> dict:
        """Set a price; the reply has the new ltp and ``applied_at_ms`` (epoch ms when the simulator applied it
        and queued the tick to subscribers)."""
        return self._post("/_sim/price", {"symbol": symbol, "exchange": exchange, "ltp": ltp})

    def release_price(self, symbol: str, exchange: str) -> float:
        """Let an option or future held by ``set_price`` follow its underlying again; returns its new ltp."""
        return self._post("/_sim/price", {"symbol": symbol, "exchange": exchange, "release": True})["ltp"]

    def drive_path(self, symbol: str, exchange: str, prices: list[float], interval_ms: float = 250) -> dict:
        return self._post("/_sim/path", {"symbol": symbol, "exchange": exchange, "prices": prices,
                                         "interval_ms": interval_ms})

    def freeze(self, frozen: bool = True) -> bool:
        return self._post("/_sim/freeze", {"frozen": frozen})["frozen"]

    def fault(self, kind: str, **kw) -> dict:
        return self._post("/_sim/fault", {"kind": kind, **kw})

    def partial(self, symbol: str, exchange: str, *, fill_qty: int | None = None, fill_ratio: float | None = None,
                rest_after_s: float | None = None, count: int | None = None) -> dict:
        """Orders on this symbol fill part now (``fill_qty`` units or ``fill_ratio`` of the quantity) and the rest
        after ``rest_after_s`` seconds, or never (None); for the next ``count`` orders (None = all). Cleared by
        ``clear_faults``."""
        body = {"symbol": symbol, "exchange": exchange, "rest_after_s": rest_after_s, "count": count}
        body.update({"fill_qty": fill_qty} if fill_qty is not None else {"fill_ratio": fill_ratio})
        return self._post("/_sim/partial", body)["partial"]

    def clear_faults(self) -> None:
        self._post("/_sim/fault/clear", {})

    def orders(self) -> list[dict]:
        return self._get("/_sim/orders")["orders"]

    def stats(self) -> dict:
        return self._get("/_sim/stats")

    def reset(self) -> None:
        self._post("/_sim/reset", {})

    def clock(self) -> dict:
        """{"now_ist": "YYYY-MM-DD HH:MM:SS", "offset_s": N, "session": "YYYY-MM-DD"}"""
        return self._get("/_sim/clock")

    def set_clock(self, ist: str | None = None, offset_s: float | None = None) -> dict:
        """Move the market clock to the IST instant ``ist`` ('YYYY-MM-DD HH:MM[:SS]', then running on in real
        time) or to real + ``offset_s`` seconds; neither: back to the real clock."""
        body = {"ist": ist} if ist is not None else {"offset_s": offset_s} if offset_s is not None else {"real": True}
        return self._post("/_sim/clock", body)

    def api(self, endpoint: str, body: dict, timeout: float = 10.0) -> httpx.Response:
        """POST an OpenAlgo /api/v1 call and return the raw response."""
        return self._client.post(f"/api/v1/{endpoint}", json=body, timeout=timeout)


def sim_fixture(scope: str = "session", seed: int = 1, args: list[str] | tuple = (), **kw):
    """Build a pytest fixture yielding a started SimProcess."""
    import pytest

    @pytest.fixture(scope=scope)
    def _sim():
        with SimProcess(seed=seed, args=args, **kw) as sim:
            yield sim

    return _sim
