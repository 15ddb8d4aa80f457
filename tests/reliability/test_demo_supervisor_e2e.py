"""The demo launcher (``python -m scripts.demo``) supervises the background service: a service killed with
SIGKILL is started again (a new pid whose heartbeat is fresh) while the simulator and the app keep running with
the same pids; a service that refuses to run (another service holds the database's lock: exit code 3) is not
restarted in a loop, the launcher says why and keeps the rest up; SIGTERM to the launcher stops every process.

Everything runs on loopback on free ports, against a database under tmp_path."""
from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from db import Database
from db.models import ServiceHeartbeat, utcnow
from scripts.supervise import next_delay
from simulator.testing import free_port
from tests.harness import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Launcher:
    def __init__(self, tmp: Path, ui: bool):
        self.tmp, self.db_path = tmp, tmp / "demo.db"
        self.out_path = tmp / "demo.out"
        self.ports = dict(port=free_port(), ws=free_port(), ui=free_port())
        self.ui = ui
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Launcher":
        env = {k: v for k, v in os.environ.items() if not k.startswith("APP__")}
        env.update(APP__DB__PATH=str(self.db_path), APP__SERVICE__HEARTBEAT_S="0.5", PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(ROOT), APP__MARKET__CLOCK_OFFSET_S=os.environ.get("APP__MARKET__CLOCK_OFFSET_S", "0"))
        args = [sys.executable, "-m", "scripts.demo", "--port", str(self.ports["port"]), "--ws-port",
                str(self.ports["ws"]), "--ui-port", str(self.ports["ui"]), "--api-port", "0"]
        if not self.ui:
            args.append("--no-ui")
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(args, cwd=str(ROOT), env=env, stdout=out, stderr=out, start_new_session=True)
        return self

    def out(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def pids(self, pattern: str) -> list[int]:
        return [int(m) for m in re.findall(pattern, self.out())]

    def service_pids(self) -> list[int]:
        return self.pids(r"demo: service started \(pid (\d+)\)")

    def stop(self) -> int | None:
        """SIGTERM, as systemd or a terminal's kill would; returns the exit code (None: had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def beat(db: Database) -> ServiceHeartbeat | None:
    with db.read() as s:
        return s.scalar(select(ServiceHeartbeat).where(ServiceHeartbeat.component == "runner"))


def fresh_beat_pid(db: Database, within_s: float = 3.0) -> int | None:
    """The pid of the service whose heartbeat is fresh (the service writes its own pid), None if none is."""
    hb = beat(db)
    fresh = hb is not None and hb.status == "ok" and (utcnow() - hb.last_beat).total_seconds() < within_s
    return hb.pid if fresh else None


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.timeout(240)
def test_demo_when_the_service_is_killed_then_it_is_restarted_and_the_simulator_and_app_stay_up(tmp_path):
    demo = Launcher(tmp_path, ui=True).start()
    children: list[int] = []
    try:
        assert wait_for(lambda: demo.service_pids() and demo.pids(r"app pid (\d+)"), 90, 0.2), demo.out()
        [sim], [app] = demo.pids(r"simulator on .* \(pid (\d+)\)"), demo.pids(r"app pid (\d+)")
        db = Database(demo.db_path, key_file=tmp_path / "algomirror.key")
        svc = wait_for(lambda: fresh_beat_pid(db), 60, 0.2)
        assert svc and demo.service_pids() == [svc], demo.out()
        children = [svc, sim, app]
        ui_health = f"http://127.0.0.1:{demo.ports['ui']}/_stcore/health"
        assert wait_for(lambda: http_ok(ui_health), 90, 0.5), demo.out()

        os.kill(svc, signal.SIGKILL)
        # a new service process runs the database: its own pid in a fresh heartbeat
        new = wait_for(lambda: (p := fresh_beat_pid(db)) and p != svc and p, 60, 0.2)
        assert new, demo.out()
        children.append(new)
        assert not alive(svc) and demo.service_pids() == [svc, new], demo.out()
        assert "exited with code -9 (killed by SIGKILL)" in demo.out(), demo.out()
        assert alive(sim) and alive(app), demo.out()  # the same processes, never restarted
        assert http_ok(ui_health) and http_ok(f"http://127.0.0.1:{demo.ports['port']}/_sim/accounts")
        assert demo.proc.poll() is None
    finally:
        code = demo.stop()
    assert code == 0, demo.out()
    assert wait_for(lambda: not any(alive(p) for p in children), 15, 0.2), \
        [p for p in children if alive(p)]  # SIGTERM to the launcher stopped every process


@pytest.mark.timeout(120)
def test_demo_when_the_service_refuses_to_run_then_no_restart_loop_and_the_simulator_stays_up(tmp_path):
    # another service's lock on the database: the demo's service exits with code 3, and restarting cannot help
    lock_path = Path(str(tmp_path / "demo.db") + ".service.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    demo = Launcher(tmp_path, ui=False).start()
    try:
        assert wait_for(lambda: "refused to run" in demo.out(), 60, 0.2), demo.out()
        assert "exit code 3: another AlgoMirror service holds this database's lock" in demo.out()
        time.sleep(4.0)  # past the first backoff steps (1 s, 2 s): a restart would have been started by now
        assert len(demo.service_pids()) == 1, demo.out()
        [sim] = demo.pids(r"simulator on .* \(pid (\d+)\)")
        assert alive(sim) and demo.proc.poll() is None
        assert http_ok(f"http://127.0.0.1:{demo.ports['port']}/_sim/accounts")
    finally:
        code = demo.stop()
        os.close(fd)
    assert code == 0, demo.out()
    assert wait_for(lambda: not alive(sim), 15, 0.2)


def test_next_delay_when_deaths_are_quick_then_it_doubles_to_the_cap_and_a_long_run_resets_it():
    waits, prev = [], None
    for _ in range(7):
        prev = next_delay(prev, 0.5, 1.0, 30.0, 60.0)
        waits.append(prev)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert next_delay(30.0, 61.0, 1.0, 30.0, 60.0) == 1.0  # it stayed up a while: back to the first step
