"""Crash soak: ``python -m scripts.crash_soak --kills 100 [--seed N] [--accounts 10] [--keep DIR]``.

SIGKILLs the background service at random moments (>= --kills times) while a 10-account, 4-leg strategy enters
and risk exits fire (max loss from prices, or exit_run commands), restarting it each time; then checks the
simulator's order log against the database (tests/reliability/crash_harness.py). Prints a summary; exit code 1
on any violation.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simulator.testing import SimProcess  # noqa: E402
from tests.market_clock import use_market_hours  # noqa: E402
from tests.reliability.crash_harness import CrashScenario  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.crash_soak", description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--accounts", type=int, default=10)
    p.add_argument("--keep", help="keep the database and logs in this folder (default: a temp folder, removed)")
    a = p.parse_args(argv)
    use_market_hours()  # the strategy enters MIS legs: run every clock inside market hours, as the tests do
    with tempfile.TemporaryDirectory(prefix="crash-soak-") as tmp:
        work = Path(a.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        with SimProcess(seed=a.seed or 3, args=["--frozen"], log_path=str(work / "sim.log")) as sim:
            report = CrashScenario(sim, work, accounts=a.accounts, seed=a.seed, log=print,
                                   burst=(1, 2, 3, 4)).run(a.kills)
    print("CRASH SOAK:", report.summary())
    for v in report.violations[:50]:
        print("VIOLATION:", v)
    ok = not report.violations and report.kills >= a.kills
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
