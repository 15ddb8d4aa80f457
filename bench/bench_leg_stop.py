"""Tick -> that leg's exit order at the broker, when a tick breaches a strategy LEG's own stop-loss (issue 15's
target: p99 <= 20 ms with 50 open positions and ~1,000 ticks/s).

    .venv/bin/python bench/bench_leg_stop.py [--trials 100] [--tick-hz 20]

The same set-up, trial and stopwatch as bench_exit_latency.py (49 background runs, one NIFTY option each; a fresh
SBIN run per trial, breached at a random phase of the service's second, t0 / t1 taken by the simulator), except
that the target run has no max loss: its one leg carries a stop-loss of 5 % of its entry in points, so what exits
it is the per-leg stop path (services/leg_stops.py), not the run's limit.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import main_guard  # noqa: E402
from bench_exit_latency import main  # noqa: E402

if __name__ == "__main__":
    main_guard(lambda: main(leg_stop=True))
