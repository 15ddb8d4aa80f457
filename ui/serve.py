"""Start the Streamlit app in a warmed-up process: ``python -m ui.serve [streamlit run options]``.

Same as ``streamlit run app.py --server.address 127.0.0.1 ...`` (the options are passed through; .streamlit/
config.toml still binds 127.0.0.1), after ``ui.preload.preload()`` so the first page view does not pay the
imports and plotly's first-use costs.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from ui.preload import preload

    took = preload()
    print(f"ui.serve: process warmed up in {took:.2f} s", flush=True)
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(ROOT / "app.py"), *(sys.argv[1:] if argv is None else argv)]
    return cli.main(prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main())
