"""Helpers shared by the browser tests (and bench/bench_pages_browser.py): polling, Streamlit navigation and
widgets, the glide grid's cells, screenshots, and failure artifacts.

Streamlit draws st.dataframe on a canvas; its accessibility table (``[id^="glide-cell"]``) carries the values, so
tests read cells from there. A rerun in flight redraws widgets: ``settle`` waits for the status widget to go.
"""
from __future__ import annotations

import time

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

STEP_S = 60.0  # generous per step; each test file bounds its whole flow with its own timeout


def until(fn, what: str, timeout: float = STEP_S, every: float = 0.4):
    """Poll fn() until it returns something truthy (and return it); fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # noqa: BLE001 - a half-rendered page or a busy DB: try again
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def grid_cells(page) -> list[str]:
    """Texts of every st.dataframe cell on the page (the glide grid draws on a canvas; its a11y table carries
    the values). st.dataframe keys do not reach the DOM, so callers look for distinctive texts."""
    return page.locator('[data-testid="stDataFrame"] [id^="glide-cell"]').all_inner_texts()


def grid_has(page, *texts: str) -> bool:
    cells = grid_cells(page)
    return all(any(t in c for c in cells) for t in texts)


def fill_grid_cell(page, editor, x_frac: float, y: float, value: str) -> bool:
    """Put ``value`` into a number or text cell of a st.data_editor (a canvas grid): click the cell, open its
    overlay editor with Enter, fill the editor's input in one go, Enter. Typing on a selected cell instead
    opens the editor with the first key, and under load the next keys land before the editor has focus
    ('100000' became '00000' = 0). False when the editor did not open (a rerun redrew the grid): try again."""
    settle(page)
    bb = editor.bounding_box()
    page.mouse.click(bb["x"] + x_frac * bb["width"], bb["y"] + y)
    return fill_selected_cell(page, value)


def fill_selected_cell(page, value: str) -> bool:
    """The selected grid cell: open its overlay editor with Enter, fill it in one go, Enter (a number is
    committed; a select takes its one matching option). False (editor closed again) when it did not open."""
    page.keyboard.press("Enter")
    box = page.locator('[id^="gdg-overlay-"] input, [id^="gdg-overlay-"] textarea').first
    try:
        box.wait_for(timeout=3_000)
        box.fill(value, timeout=3_000)
    except PlaywrightTimeout:
        page.keyboard.press("Escape")
        return False
    page.keyboard.press("Enter")
    return True


def goto(page, title: str):
    """Open a page through the sidebar (keeps the Streamlit session) and wait for its title."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=False).click()
    page.get_by_role("heading", name=title, level=1).wait_for()


def choose(page, label: str, option: str):
    """Pick an option of a st.selectbox / st.multiselect by its label."""
    # Only a live widget: while a rerun redraws the page Streamlit keeps the old element beside the new one,
    # marked data-stale, and both carry the label (a strict-mode failure of the click, seen in CI under load).
    live = page.locator('[data-testid="stElementContainer"]:not([data-stale="true"])')
    widget = live.get_by_label(label, exact=True)
    container = live.filter(has=page.get_by_label(label, exact=True)).first
    for _attempt in range(4):  # a rerun in flight can redraw the widget and close its list: open it again
        settle(page)
        try:
            widget.click(timeout=10_000)
            opt = page.get_by_role("option", name=option, exact=True)
            opt.wait_for(timeout=5_000)
            opt.click(timeout=5_000)
            settle(page)
            # a click on the option can land while a rerun redraws the widget and be lost without an error
            # (a multiselect left empty in CI, so the Execute panel never appeared): check the widget shows it
            if shows(container, label, option):
                return
        except PlaywrightError:  # a timeout, or the old and the new widget both still live mid-redraw
            page.keyboard.press("Escape")
    raise AssertionError(f"could not choose {option!r} in {label!r}")


def shows(container, label: str, option: str) -> bool:
    """Whether a selectbox (its input's value) or a multiselect (its tags) in ``container`` shows ``option``."""
    try:
        box = container.get_by_label(label, exact=True)
        texts = [box.input_value(timeout=5_000), *container.inner_text(timeout=5_000).splitlines()]
    except PlaywrightError:
        return False
    return option in [t.strip() for t in texts]


def settle(page):
    """Wait until the script run triggered by the last interaction has finished."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")


def shoot(page, shots, name: str):
    """Screenshot of the whole page. Streamlit scrolls inside its main section, so full_page alone would cut at
    the viewport: grow the viewport to the content height for the shot, then restore it."""
    settle(page)
    viewport = page.viewport_size
    height = page.evaluate("""() => Math.max(...[...document.querySelectorAll(
        '[data-testid="stMain"], [data-testid="stAppViewContainer"], section')].map(e => e.scrollHeight))""")
    page.set_viewport_size({"width": viewport["width"], "height": min(max(viewport["height"], height), 4000)})
    page.wait_for_timeout(800)  # relayout + plotly transitions
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    page.set_viewport_size(viewport)


def no_app_errors(page):
    """A Streamlit exception box on the page fails the test with its text."""
    exc = page.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()


def failure_artifacts(page, stack, shots):
    """What the page showed and what the service logged, without masking the original failure."""
    print("service log tail:\n" + stack.log_tail("service"))
    try:
        page.set_default_timeout(5_000)
        print("alerts on the page:", page.locator('[data-testid="stAlert"]').all_inner_texts())
        page.screenshot(path=str(shots / "FAILED.png"), full_page=True)
        print(f"failure screenshot: {shots / 'FAILED.png'}")
    except Exception as exc:  # noqa: BLE001
        print(f"no failure screenshot: {exc}")


