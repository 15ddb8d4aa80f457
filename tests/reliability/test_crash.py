"""SIGKILL the real service >= 10 times while a 10-account, 4-leg strategy enters and risk exits fire; then every
broker order is linked to exactly one intent, nothing is stuck, no exit is sent twice (see crash_harness.py).
The long run is ``python -m scripts.crash_soak --kills 100``."""
from __future__ import annotations

import os

import pytest

from simulator.testing import SimProcess
from tests.reliability.crash_harness import CrashScenario

KILLS = int(os.environ.get("APP_CRASH_KILLS", "10"))


@pytest.mark.timeout(240)
def test_service_when_sigkilled_at_random_moments_then_no_order_twice_none_lost_one_exit(tmp_path):
    with SimProcess(seed=21, args=["--frozen"], log_path=str(tmp_path / "sim.log")) as sim:
        scenario = CrashScenario(sim, tmp_path, accounts=10, seed=int(os.environ.get("APP_CRASH_SEED", "7")))
        report = scenario.run(KILLS)
    print(report.summary())
    assert report.kills >= KILLS
    assert report.intents >= 80 and report.broker_orders >= 40  # entries and exits really happened
    assert not report.violations, "\n".join(report.violations[:30]) + "\n" + scenario.tail()
