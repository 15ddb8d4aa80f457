"""Keep one child process running: the demo launcher's supervision of the background service (``python -m
services``).

A service that dies (a crash, an out-of-memory kill, ``kill -9``) is started again after a delay that doubles
with each quick death (1 s, 2 s, 4 s ... at most 30 s) and goes back to the first step once a start has stayed up
for ``stable_s``: a crash loop costs a start every 30 s, not a spinning CPU, and a service that ran for hours and
then crashed comes back after a second. Every restart is printed with the exit code. A service stopped from
outside (SIGTERM, exit code 0) is started again too: in the demo only the launcher itself stops it for good.

Some exit codes are the service's own refusals: starting it again cannot help until the operator acts (the
configuration, a second service holding the database lock, a database that cannot be upgraded as it is, a release
whose control commands and handlers disagree; services/__main__.py). On one of those the supervisor stops
restarting and prints why; the rest of the demo stays up and the app's banner says the service is down.

Nothing here is asynchronous: the launcher calls ``poll()`` from its own loop, so stopping (Ctrl-C, SIGTERM) never
races a restart.
"""
from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

# services/__main__.py: the exit codes that mean "this will not work by trying again"
REFUSALS = {
    2: "configuration error (fix the APP__* setting it names)",
    3: "another AlgoMirror service holds this database's lock (stop it first)",
    4: "the database cannot be upgraded as it is (the service log names the rows and what to do)",
    5: "control commands and their handlers disagree (a broken release: do not run it)",
}


def next_delay(previous: float | None, uptime_s: float, base_s: float, max_s: float, stable_s: float) -> float:
    """The wait before the next start after a child that ran ``uptime_s``: ``base_s`` after a run of at least
    ``stable_s`` (or the first death), else the previous wait doubled, at most ``max_s``."""
    if previous is None or uptime_s >= stable_s:
        return base_s
    return min(max_s, previous * 2)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return REFUSALS.get(code, "crashed" if code else "stopped from outside")


class Supervisor:
    """Starts ``argv`` and, on every ``poll()``, restarts it if it has exited (see the module's docstring)."""

    def __init__(self, name: str, argv: list[str], *, cwd=None, env: dict | None = None, base_s: float = 1.0,
                 max_s: float = 30.0, stable_s: float = 60.0, log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.argv, self.cwd, self.env = name, argv, cwd, env
        self.base_s, self.max_s, self.stable_s = base_s, max_s, stable_s
        self.log, self.clock = log or (lambda line: print(line, flush=True)), clock
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.delay: float | None = None  # the last wait chosen (None: no quick death yet)
        self.restart_at: float | None = None  # when the next start is due (None: running, or given up)
        self.restarts = 0
        self.gave_up = ""  # why it no longer restarts

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env)
        self.started_at, self.restart_at = self.clock(), None
        self.log(f"demo: {self.name} started (pid {self.proc.pid})")

    def poll(self) -> None:
        """Notice an exit, and start again once its wait has passed."""
        now = self.clock()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                self.start()
            return
        if self.proc is None or self.gave_up or (code := self.proc.poll()) is None:
            return
        if code in REFUSALS:
            self.gave_up = f"exit code {code}: {REFUSALS[code]}"
            self.log(f"demo: the {self.name} refused to run ({self.gave_up}); not restarting it. The simulator and "
                     "the app stay up (the app shows the service as down); fix the cause and start the demo again.")
            return
        self.delay = next_delay(self.delay, now - self.started_at, self.base_s, self.max_s, self.stable_s)
        self.restart_at = now + self.delay
        self.log(f"demo: the {self.name} (pid {self.proc.pid}) exited with code {code} ({describe_exit(code)}) "
                 f"after {now - self.started_at:.0f} s; restart {self.restarts + 1} in {self.delay:g} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the child (if it runs) and wait; killed if it does not stop in ``timeout``. No restart after."""
        self.restart_at, self.gave_up = None, self.gave_up or "stopped"
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
