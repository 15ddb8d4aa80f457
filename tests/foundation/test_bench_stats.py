"""The benchmarks' percentile: nearest rank, so p99 of 100 samples is the 99th smallest (one outlier allowed)."""
from bench._common import pct


def test_pct_when_nearest_rank_then_p99_of_100_is_the_99th_value_not_the_max():
    xs = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert (pct(xs, 50), pct(xs, 99), pct(xs, 100), pct(xs, 0)) == (50.0, 99.0, 100.0, 1.0)
    assert pct([float(v) for v in range(1, 81)], 99) == 80.0  # 79.2 -> rank 80: the max when n < 100
    assert pct([3.0], 99) == 3.0
    assert pct([], 50) != pct([], 50)  # NaN
