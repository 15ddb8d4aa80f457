"""Sidebar click -> page settled, in a real browser, for every page, on a full day of data (target: <= 1 s).

    .venv/bin/python bench/bench_pages_browser.py [--rounds 5] [--shots DIR]

Seeded temp DB as bench_dashboard.py seeds it (10 accounts, 2,000 order intents, 20 strategy runs, a full day of
1-s P&L snapshots), ending now (the served app reads the real clock). A thread writes the service heartbeats, so
the pages draw as with the service up (no service, no broker: nothing else writes). The app is served by
``python -m scripts.serve`` (preload, default settings: refresh every 2 s) and driven by Debian's chromium
(tests/e2e). Each round clicks every page in the sidebar in turn; a page is settled when its title is drawn, its
main element is there, nothing on the page is stale and Streamlit's status widget is gone (the script run is
over). The first round (each page's first visit in the session) is reported apart from the others.

The symbol master is empty: Option Chain and Strategies draw their "no options yet" notice, not a chain.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, main_guard, pct, result, temp_db  # noqa: E402

import httpx  # noqa: E402

import bench_dashboard  # noqa: E402
from db.health import write_heartbeat  # noqa: E402
from simulator.testing import free_port  # noqa: E402
from tests.e2e.conftest import CHROMIUM, chromium_page  # noqa: E402

# sidebar title -> what the page draws last or most expensively with this data
PAGES = {
    "Dashboard": ".js-plotly-plot",
    "Quick Order": '[data-testid="stTextInput"]',
    "Option Chain": '[data-testid="stAlert"]',
    "Strategies": '[data-testid="stAlert"]',
    "Risk Monitor": '[data-testid="stDataFrame"], .js-plotly-plot',
    "Positions & Orders": '[data-testid="stDataFrame"]',
    "History": '.js-plotly-plot, [data-testid="stDataFrame"]',
    "Order Journal": '[data-testid="stDataFrame"], [data-testid="stCaptionContainer"]',
    "Accounts": '[data-testid="stDataFrame"]',
    "API & Webhooks": '[data-testid="stForm"], [data-testid="stDataFrame"]',
    "Service Health": '[data-testid="stDataFrame"]',
    "Settings": '[data-testid="stDataFrame"], [data-testid="stTable"], [data-testid="stMarkdown"]',
}

SETTLED = """([title, sel]) => {
    const h = document.querySelector('h1');
    if (!h || !h.innerText.includes(title)) return false;
    if (!document.querySelector(sel)) return false;
    if (document.querySelector('[data-stale="true"]')) return false;
    const w = document.querySelector('[data-testid="stStatusWidget"]');  // position: fixed, so no offsetParent
    if (!w || getComputedStyle(w).visibility === 'hidden') return true;
    const r = w.getBoundingClientRect();
    return r.width === 0 && r.height === 0;
}"""


def heartbeats(db, stop: threading.Event) -> None:
    while not stop.is_set():
        with db.write() as s:
            for comp in ("runner", "dispatcher"):
                write_heartbeat(s, comp, os.getpid(), "ok", "{}")
        stop.wait(1.0)


def serve(db_path: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update(APP__DB__PATH=str(db_path), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    out = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "scripts.serve", "--server.address", "127.0.0.1",
                             "--server.port", str(port), "--server.headless", "true",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=str(ROOT), env=env, stdout=out, stderr=out, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("streamlit exited:\n" + log.read_text()[-2000:])
        try:
            if httpx.get(url + "/_stcore/health", timeout=1.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("streamlit did not become healthy")


TITLED = """(title) => { const h = document.querySelector('h1'); return !!h && h.innerText.includes(title); }"""


def click_and_settle(page, title: str, timeout_ms: int = 30_000) -> tuple[float, float]:
    """(ms to the new page's title, ms to settled) after the sidebar click: the first is the server starting to
    answer (the script's first element), the rest its run, the transfer and the browser drawing it."""
    link = page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=False)
    t = time.perf_counter()
    link.click()
    page.wait_for_function(TITLED, arg=title, polling="raf", timeout=timeout_ms)
    titled = time.perf_counter()
    page.wait_for_function(SETTLED, arg=[title, PAGES[title]], polling="raf", timeout=timeout_ms)
    return (titled - t) * 1000, (time.perf_counter() - t) * 1000


def measure(url: str, rounds: int, shots: Path | None) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    times: dict[str, list[float]] = {t: [] for t in PAGES}
    titles: dict[str, list[float]] = {t: [] for t in PAGES}
    with chromium_page() as page:
        page.goto(url + "/")
        page.get_by_role("heading", name="Dashboard", level=1).wait_for()
        page.locator(".js-plotly-plot").first.wait_for()
        for r in range(rounds):
            for title in [*list(PAGES)[1:], "Dashboard"]:  # from the Dashboard round the sidebar, back to it
                to_title, settled = click_and_settle(page, title)
                titles[title].append(to_title)
                times[title].append(settled)
                errors = page.locator('[data-testid="stException"]')
                if errors.count():
                    raise RuntimeError(f"{title}: {errors.first.inner_text()[:500]}")
                if shots is not None and r == 0:
                    page.screenshot(path=str(shots / f"{title.replace(' ', '_').replace('&', 'and')}.png"))
            print(f"round {r + 1}: " + ", ".join(f"{t} {v[-1]:.0f}" for t, v in times.items()) + " ms", flush=True)
    return times, titles


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shots", help="a directory for one screenshot per page (first round)")
    a = ap.parse_args()
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"needs Debian chromium at {CHROMIUM}")
    db = temp_db("pagesbrowser")
    t = time.perf_counter()
    counts = bench_dashboard.seed(db, datetime.utcnow())  # the day ends now: the app reads the real clock
    print(f"seeded {counts} in {time.perf_counter() - t:.1f} s ({db.path})", flush=True)
    stop = threading.Event()
    beat = threading.Thread(target=heartbeats, args=(db, stop), daemon=True)
    beat.start()
    proc, url = serve(db.path, db.path.with_name("streamlit.out"))
    shots = Path(a.shots) if a.shots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    try:
        times, titles = measure(url, a.rounds, shots)
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    load = os.getloadavg()
    print(f"\nsidebar click -> page settled, chromium, {a.rounds} rounds (first visit apart; load average "
          f"{load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} CPUs)")
    print("| page | first visit | median | p90 | max (after the first) | title drawn (median) |\n"
          "|---|---|---|---|---|---|")
    rows = []
    for title, xs in times.items():
        rest, tt = xs[1:] or xs, titles[title][1:] or titles[title]
        rows.append(dict(page=title, first_ms=xs[0], median_ms=pct(rest, 50), p90_ms=pct(rest, 90),
                         max_ms=max(rest), title_median_ms=pct(tt, 50)))
        print(f"| {title} | {xs[0]:.0f} ms | {pct(rest, 50):.0f} ms | {pct(rest, 90):.0f} ms | {max(rest):.0f} ms | "
              f"{pct(tt, 50):.0f} ms |")
    worst = max(r["max_ms"] for r in rows)
    over = [r["page"] for r in rows if r["max_ms"] > 1000]
    print(f"target <= 1 s on every page (after the first visit): {'met' if not over else 'MISSED: ' + ', '.join(over)}"
          f" (worst {worst:.0f} ms)")
    result("pages_browser", points=rows, rounds=a.rounds, worst_ms=worst, over=over, load=load[0])
    return 0


if __name__ == "__main__":
    main_guard(main)
