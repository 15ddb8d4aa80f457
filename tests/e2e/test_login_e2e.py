"""The optional login and the launcher's guards, on the real launcher (``python -m scripts.serve``):

* a password configured (its argon2 hash, as scripts.set_password writes it): a real browser gets the login form
  and no page before the right password; a wrong one is refused; after it, every page renders (History and Order
  Journal among them); a second browser session is asked again;
* the WebSocket refuses a Host header that is not the app's (a DNS-rebinding page), and accepts loopback names;
* bound to anything but 127.0.0.1 without a password, the launcher refuses to start.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websocket

from simulator.testing import free_port
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, VIEWPORT

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
pytestmark = pytest.mark.timeout(180)


def _env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP__", "STREAMLIT_"))}
    env.update(APP__DB__PATH=str(tmp / "algomirror.db"), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


def _set_password(tmp: Path) -> Path:
    """scripts.set_password as a user runs it (the password twice on stdin); returns the password file."""
    done = subprocess.run([sys.executable, "-m", "scripts.set_password"], input=f"{PASSWORD}\n{PASSWORD}\n",
                          capture_output=True, text=True, cwd=ROOT, env=_env(tmp), timeout=60)
    assert done.returncode == 0, done.stderr
    path = tmp / "algomirror.password"
    assert path.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in path.read_text() and path.read_text().startswith("$argon2id$")
    return path


@contextlib.contextmanager
def serving(tmp_path, **env):
    """The launcher on a free loopback port, a password set; yields its port."""
    _set_password(tmp_path)
    port = free_port()
    out = open(tmp_path / "serve.out", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "scripts.serve", "--server.port", str(port),
                             "--server.headless", "true", "--server.fileWatcherType", "none"],
                            cwd=str(ROOT), env=_env(tmp_path, **env), stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.out").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the app did not start:\n" + (tmp_path / "serve.out").read_text()[-3000:])
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        out.close()


@pytest.fixture
def app_server(tmp_path):
    with serving(tmp_path) as port:
        yield port


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"browser test needs Debian chromium at {CHROMIUM} (apt-get install chromium; CI installs it)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _page(browser, url: str):
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    return page


def _log_in(page, password: str) -> None:
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def _login_form_shown(page) -> None:
    page.get_by_label("Password", exact=True).wait_for()
    page.wait_for_timeout(500)
    [heading] = page.locator("h1").all_inner_texts()  # the login's own title only: no page ran
    assert heading.endswith("AlgoMirror")
    assert page.locator('[data-testid="stDataFrame"], [data-testid="stMetric"]').count() == 0


def test_browser_when_password_configured_then_login_first_and_every_page_after(app_server, browser):
    url = f"http://127.0.0.1:{app_server}/"
    page = _page(browser, url)
    _login_form_shown(page)
    _log_in(page, "not the password")
    page.get_by_text("Wrong password.").wait_for()
    _login_form_shown(page)

    _log_in(page, PASSWORD)
    page.get_by_role("heading", name="Dashboard", level=1).wait_for()
    for title in ("History", "Order Journal", "Positions & Orders"):
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
        page.get_by_role("heading", name=title, level=1).wait_for()
        page.wait_for_timeout(500)
        exc = page.locator('[data-testid="stException"]')
        assert exc.count() == 0, exc.first.inner_text()

    for deep in ("", "accounts", "orders"):  # another browser session, at the root or a deep link: asked again
        other = _page(browser, url + deep)
        _login_form_shown(other)
        other.context.close()


def test_browser_when_login_times_out_then_an_open_page_returns_to_the_login_by_itself(tmp_path, browser):
    with serving(tmp_path, APP__UI__SESSION_TIMEOUT_MIN="0.1", APP__UI__REFRESH_S="1.0") as port:  # 6 s
        page = _page(browser, f"http://127.0.0.1:{port}/")
        _log_in(page, PASSWORD)
        page.get_by_role("heading", name="Dashboard", level=1).wait_for()
        page.get_by_label("Password", exact=True).wait_for(timeout=30_000)  # no click needed: the page reloads
        _login_form_shown(page)
        _log_in(page, PASSWORD)  # and a new login works
        page.get_by_role("heading", name="Dashboard", level=1).wait_for()


def test_websocket_when_host_header_is_foreign_then_refused_and_loopback_names_accepted(app_server):
    ws_url = f"ws://127.0.0.1:{app_server}/_stcore/stream"
    for host in (f"127.0.0.1:{app_server}", f"localhost:{app_server}"):
        ws = websocket.create_connection(ws_url, host=host, origin=f"http://{host}", subprotocols=["streamlit"],
                                         timeout=10)
        ws.close()
    rebinding = f"attacker.example:{app_server}"  # a page on this name, resolving to 127.0.0.1, same Origin
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url, host=rebinding, origin=f"http://{rebinding}", subprotocols=["streamlit"],
                                    timeout=10)
    assert refused.value.status_code == 403


@pytest.mark.parametrize("address", ["0.0.0.0", "192.168.1.50", ""])
def test_launcher_when_bound_off_loopback_without_password_then_refuses_to_start(tmp_path, address):
    done = subprocess.run([sys.executable, "-m", "scripts.serve", "--server.address", address,
                           "--server.port", str(free_port())], capture_output=True, text=True, cwd=ROOT,
                          env=_env(tmp_path), timeout=60)
    assert done.returncode == 2
    assert "refusing to bind to" in done.stderr and "without a password" in done.stderr
    assert "warmed up" not in done.stdout  # refused before anything else


def test_launcher_when_bound_off_loopback_with_a_password_then_starts(tmp_path):
    _set_password(tmp_path)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scripts.serve", "--server.address", "0.0.0.0", "--server.port",
                             str(port), "--server.headless", "true", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline, ok = time.monotonic() + 60, False
        while time.monotonic() < deadline and proc.poll() is None and not ok:
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ok, f"not serving (exit code {proc.poll()})"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.parametrize("typed", [f"{PASSWORD}\nsomething else\n", "short\nshort\n", ""])
def test_set_password_when_the_two_differ_or_too_short_then_nothing_written(tmp_path, typed):
    done = subprocess.run([sys.executable, "-m", "scripts.set_password"], input=typed, capture_output=True, text=True,
                          cwd=ROOT, env=_env(tmp_path), timeout=60)
    assert done.returncode != 0 and "nothing was changed" in done.stderr
    assert not (tmp_path / "algomirror.password").exists()
