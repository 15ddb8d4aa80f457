"""The service's interval jobs run at phases of their own, not all in the same millisecond of every second: due
together, they queued for the writer lock and the GIL at once, and an order claimed in that burst waited behind all
of them (bench/README.md, session 17). The real runner, started on a test database with no account."""
from __future__ import annotations

from config import load_settings
from services.runner import ServiceRunner


def test_jobs_when_the_service_starts_then_no_two_of_its_every_second_jobs_share_a_phase(db):
    runner = ServiceRunner(load_settings({"APP__DB__PATH": str(db.path)}), db)
    runner.start()
    try:
        jobs = [j for j in runner.scheduler.get_jobs() if getattr(j.trigger, "interval_length", None) == 1.0]
        phases = sorted(round(j.next_run_time.timestamp() % 1.0, 3) for j in jobs)
    finally:
        runner.stop()
    assert len(jobs) >= 10, [j.id for j in jobs]
    assert len(set(phases)) == len(phases), phases  # a distinct millisecond each
    gaps = [b - a for a, b in zip(phases, phases[1:], strict=False)]
    assert min(gaps) >= 0.02, phases  # spread across the second, not bunched within a few ms
