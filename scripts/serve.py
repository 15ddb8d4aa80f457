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
    from sqlalchemy.orm import configure_mappers

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
            charts.payoff_chart(np.array([1.0, 2.0]), np.array([0.0, 1.0]), None, 1.5, []),
            charts.equity_curve(pd.DataFrame({"day": ["2026-01-01"], "total": [1.0], "equity": [1.0],
                                              "drawdown": [0.0]}))]
    for fig in figs:
        pio.to_json(fig, validate=False)
    # SQLAlchemy configures every mapped class at the process's first ORM statement (0.15-0.3 s for our models):
    # without this, the first page view pays it inside get_db's schema-version check.
    configure_mappers()
    # Streamlit calls inspect.stack() when a process draws its first element (env_util.is_repl). The first such
    # call maps the file of every loaded module (inspect.getmodule's cache) and reads the sources into linecache.
    inspect.stack()
    return time.perf_counter() - t


def flag_values(args: list[str], name: str) -> list[str]:
    """Every value given to ``--name`` in streamlit-style options (``--name X`` or ``--name=X``)."""
    out = []
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith(f"--{name}="):
            out.append(a.split("=", 1)[1])
    return out


def bind_check(args: list[str]) -> tuple[str | None, list[str]]:
    """Where the server will listen, decided as Streamlit decides it (flags, then STREAMLIT_* environment, then
    .streamlit/config.toml files). Returns (a refusal, extra options): off loopback the app needs a password;
    bound to a specific address, that address joins server.allowedHosts (Host headers the WebSocket accepts: a
    DNS-rebinding page names another host and is refused)."""
    from streamlit import config as stconfig

    from config import is_loopback, load_settings, password_hash_of

    stconfig.get_config_options(force_reparse=True)
    given = flag_values(args, "server.address")
    address = given[-1] if given else (stconfig.get_option("server.address") or "")
    configured_hosts = list(stconfig.get_option("server.allowedHosts") or [])
    # forget this parse: `streamlit run` parses again with the flags, and a parse it did not make looks to it like
    # a server option changed at run time (a warning to restart)
    stconfig._config_options = None
    if not is_loopback(address) and not password_hash_of(load_settings()):
        return (f"scripts.serve: refusing to bind to {address or 'every interface'} without a password: anyone "
                "who can reach it could place orders. Set one with `python -m scripts.set_password` (or "
                "APP__UI__PASSWORD_HASH), or bind to 127.0.0.1."), []
    hosts = flag_values(args, "server.allowedHosts") or configured_hosts
    if hosts and address and address not in ("0.0.0.0", "::") and address not in hosts \
            and not flag_values(args, "server.allowedHosts"):
        return None, [f for h in [*hosts, address] for f in ("--server.allowedHosts", h)]
    return None, []


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    args = list(sys.argv[1:] if argv is None else argv)
    refusal, extra = bind_check(args)
    if refusal:
        print(refusal, file=sys.stderr, flush=True)
        return 2
    took = preload()
    print(f"scripts.serve: process warmed up in {took:.2f} s", flush=True)
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *args, *extra]
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
