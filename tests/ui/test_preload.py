"""scripts.serve.preload (what `python -m scripts.serve` runs before the server starts) renders every chart kind
without error."""
from scripts.serve import preload


def test_preload_when_run_then_every_chart_kind_renders_and_the_time_is_reported():
    took = preload()
    assert 0 < took < 60
