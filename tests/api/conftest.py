"""One stack for the local API's end-to-end tests: the simulator, the real service process and the real API
process (``python -m api``) on one database, with three simulator accounts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from simulator.testing import SimProcess, free_port
from tests.harness import stop_service, wait_for
from tests.reliability.crash_harness import CrashScenario, service_env

ROOT = Path(__file__).resolve().parents[2]


class ApiProcess:
    """``python -m api --db ... --port ...`` with its output in a file (never an undrained pipe)."""

    def __init__(self, db_path: Path, log_path: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        out = open(log_path.with_suffix(".out"), "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "api", "--db", str(db_path), "--port",
                                          str(self.port), "--log-file", str(log_path)], cwd=str(ROOT),
                                         env=env or service_env(), stdout=out, stderr=out)
        finally:
            out.close()
        self.http = httpx.Client(base_url=self.url, timeout=10.0)
        assert wait_for(self._up, 30, 0.1), self.tail()

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError("the API exited at start:\n" + self.tail())
        try:
            return self.http.get("/openapi.json").status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self, n: int = 3000) -> str:
        out = self.log_path.with_suffix(".out")
        return out.read_text(errors="replace")[-n:] if out.exists() else ""

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.log_path, self.log_path.with_suffix(".out"))
                       if p.exists())

    def stop(self) -> None:
        self.http.close()
        stop_service(self.proc)


class Stack:
    def __init__(self, sim, workdir: Path):
        self.sim = sim
        self.sc = CrashScenario(sim, workdir, accounts=3)
        self.db, self.names = self.sc.db, self.sc.names
        self.sc.start()
        self.expiry = self.sc.wait_ready()
        self.api = ApiProcess(self.db.path, workdir / "api.log")

    def placed(self) -> list[dict]:
        """Orders the simulator accepted for our accounts."""
        return [o for o in self.sim.orders() if o.get("account") in self.names.values() and o.get("orderid")]

    def stop(self) -> None:
        try:
            self.api.stop()
        finally:
            stop_service(self.sc.proc)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    with SimProcess(seed=61) as sim:
        s = Stack(sim, tmp_path_factory.mktemp("api_stack"))
        try:
            yield s
        finally:
            s.stop()
