"""Start the Streamlit app in a warmed-up process: ``python -m scripts.serve [streamlit run options]``.

Same as ``streamlit run app.py --server.address 127.0.0.1 ...`` (the options are passed through; .streamlit/
config.toml still binds 127.0.0.1), after ``preload()``. Page scripts run inside the Streamlit server process, so
whatever the first view would otherwise pay once per process (importing pandas / plotly / our modules, plotly
loading the validators of each trace type on first use, the JSON encoders) is paid at start-up instead. Measured
on a 2-core VM: ~0.6 s moved out of the Dashboard's first run (bench/bench_dashboard.py).
"""
from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def preload() -> float:
    """Import the pages' heavy modules and render one figure of every chart kind; returns the seconds taken."""
    t = time.perf_counter()
    import numpy as np
    import pandas as pd
    import plotly.io as pio

    import db.repo  # noqa: F401
    import pages._common  # noqa: F401
    import ui.widgets  # noqa: F401
    from ui import charts

    ts = pd.Timestamp("2026-01-01 04:00:00")
    figs = [charts.pnl_lines(pd.DataFrame({"account": ["a", "b"], "ts_utc": [ts, ts], "total": [1.0, -1.0]})),
            charts.strategy_bars(pd.DataFrame({"strategy": ["s"], "pnl": [1.0]})),
            charts.margin_bars(pd.DataFrame({"account": ["a"], "used_margin": [1.0], "available_cash": [2.0]})),
            charts.risk_distance(pd.DataFrame({"label": ["#1 s · a"], "pnl": [-10.0], "max_loss": [100.0],
                                               "max_profit": [200.0], "tsl_stop": [-50.0]})),
            charts.tsl_chart(pd.DataFrame({"ts_utc": [ts], "total": [1.0], "tsl_peak": [1.0], "tsl_stop": [0.5]})),
            charts.payoff_chart(np.array([1.0, 2.0]), np.array([0.0, 1.0]), None, 1.5, [])]
    for fig in figs:
        pio.to_json(fig, validate=False)
    # Streamlit calls inspect.stack() when a process draws its first element (env_util.is_repl). The first such
    # call maps the file of every loaded module (inspect.getmodule's cache) and reads the sources into linecache.
    inspect.stack()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    took = preload()
    print(f"scripts.serve: process warmed up in {took:.2f} s", flush=True)
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *(sys.argv[1:] if argv is None else argv)]
    return cli.main(prog_name="streamlit")


def console() -> int:
    """The ``algomirror-ui`` console script: an installed copy has no .streamlit/config.toml beside it, so the
    loopback bind is passed on the command line unless the caller chose an address."""
    args = sys.argv[1:]
    if not any(a.startswith("--server.address") for a in args):
        args = ["--server.address", "127.0.0.1", *args]
    return main(args)


if __name__ == "__main__":
    sys.exit(main())
