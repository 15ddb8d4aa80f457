"""scripts.serve.preload (what `python -m scripts.serve` runs before the server starts) renders every chart kind
without error."""
from scripts.serve import preload


def test_preload_when_run_then_every_chart_kind_renders_and_the_time_is_reported():
    took = preload()
    assert 0 < took < 60


def test_preload_when_run_in_a_fresh_process_then_the_orm_mappers_are_configured_before_any_page():
    """The first ORM statement of a process configures every mapper (hundreds of ms): preload pays it, not the
    trader's first page view."""
    import subprocess
    import sys
    from pathlib import Path
    code = ("from scripts.serve import preload; preload(); from db.models import Base; "
            "print('pending' if Base.registry._new_mappers else 'configured')")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(Path(__file__).resolve().parents[2]),
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("configured"), out.stderr[-2000:]
