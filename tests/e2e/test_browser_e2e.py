"""The whole product in a real browser: simulator + service + Streamlit, driven through headless chromium.

One flow, as a user would do it on a fresh machine:
  Accounts (add through the form, Test connection, key never shown) -> the service picks the first account up
  (symbol master, feed, live NIFTY) -> Option Chain -> Strategies (NIFTY short straddle + long OTM CE wing,
  max loss ₹500, save, execute) -> Positions & Orders -> Dashboard P&L -> the simulator spikes the sold CE ->
  Risk Monitor shows the max_loss event and the simulator's order log holds exactly one exit per leg, BUY exits
  (closing the shorts) before the SELL exit of the long wing.
Screenshots of every main page go to $APP_E2E_SCREENSHOTS (e.g. docs/screenshots) or tmp_path/screenshots.
"""
from __future__ import annotations

import json
import re
import time

import pytest
from sqlalchemy import func, select

from db import Database
from db.models import (Execution, Instrument, LatestPrice, OrderIntent, Position, RiskEvent, ServiceHeartbeat,
                       StrategyRun)
from tests.e2e.helpers import (choose, failure_artifacts, goto, grid_cells, grid_has, no_app_errors, settle, shoot,
                               until)

pytestmark = pytest.mark.timeout(240)
ACCOUNT = "e2e-trader"
MAX_LOSS = 500


def test_browser_when_account_strategy_and_price_spike_then_max_loss_exits_short_legs_first(
        browser_page, stack, shots):
    try:
        flow(browser_page, stack, shots)
    except BaseException:
        failure_artifacts(browser_page, stack, shots)
        raise


def flow(page, stack, shots):
    sim = stack.sim
    db = Database(stack.db_path, key_file=stack.db_path.parent / "algomirror.key")
    t0 = time.monotonic()

    # -- 0. the app, opened at its root like a user does. (Root first: while no session has run app.py's
    #       st.navigation, Streamlit serves a deep link like /accounts in its legacy pages/ mode.) -------------
    page.goto(stack.ui_url + "/")
    page.get_by_role("heading", name="Dashboard", level=1).wait_for()
    page.get_by_text("Service up").wait_for()

    # -- 1. Accounts: add through the form, test the connection, the key is never shown ---------------------
    goto(page, "Accounts")
    page.get_by_text("No accounts yet: add one below.").wait_for()
    key = sim.create_account(ACCOUNT)
    box = lambda name: page.get_by_role("textbox", name=name, exact=True)  # noqa: E731
    box("Name").fill(ACCOUNT)
    box("OpenAlgo host URL").fill(sim.rest_url)
    box("WebSocket URL").fill(sim.ws_url)
    box("API key").fill(key)
    page.get_by_role("button", name="Add account").click()
    page.get_by_text(f"Account '{ACCOUNT}' added").wait_for()
    page.get_by_role("tab", name="Edit / test / delete").click()
    page.get_by_role("button", name="Test connection").click()
    page.get_by_text("Connected: broker simulator").wait_for()
    until(lambda: grid_has(page, ACCOUNT, "simulator", "ok"), "account row with broker 'simulator'")
    assert key not in page.content(), "the API key is visible in the page after entry"
    no_app_errors(page)
    shoot(page, shots, "accounts")

    # -- 2. the service picks the first account up: symbol master, feed via this account, live NIFTY ----------
    def service_ready():
        with db.read() as s:
            n_opts = s.scalar(select(func.count()).select_from(Instrument).where(Instrument.exchange == "NFO"))
            md = s.get(ServiceHeartbeat, "market_data")
            nifty = s.get(LatestPrice, ("NIFTY", "NSE_INDEX"))
        feed = json.loads(md.details_json or "{}") if md else {}
        return n_opts and feed.get("connected") and feed.get("account") == ACCOUNT and nifty and nifty.ltp > 0
    until(service_ready, "symbol master + feed via the new account + a NIFTY price", 45)
    assert key not in stack.log_tail("service", 10 ** 6), "the API key leaked into the service log"

    # -- 3. Option Chain: NIFTY, nearest expiry, live prices ------------------------------------------------
    goto(page, "Option Chain")
    choose(page, "Underlying", "NIFTY")
    page.get_by_text("NIFTY spot").wait_for()
    until(lambda: sum(bool(re.fullmatch(r"[\d,]+\.\d\d", c)) for c in grid_cells(page)) > 20,
          "option chain prices")
    no_app_errors(page)
    shoot(page, shots, "option_chain")

    # -- 4. Strategies: short straddle + long OTM CE wing, max loss ₹500, save, execute -------------------
    goto(page, "Strategies")
    page.get_by_role("heading", name="Builder").wait_for()
    choose(page, "Underlying", "NIFTY")
    until(lambda: any(c.startswith("NIFTY") and c.endswith("CE") for c in grid_cells(page)), "NIFTY legs resolved")
    add_wing_leg(page)
    until(lambda: legs_editor_cells(page)[12:18] == ["CE", "BUY", "OTM", "2", "", "1"],
          "the third leg (BUY CE OTM 2) in the leg editor", 20)
    max_loss = page.get_by_label("Max loss (₹, empty = none)")
    max_loss.fill(str(MAX_LOSS))
    max_loss.press("Enter")
    until(lambda: sum("NIFTY" in c and c.endswith(("CE", "PE")) for c in grid_cells(page)) == 3,
          "three resolved legs in the payoff table")
    box("Strategy name").fill("NIFTY straddle with wing")
    box("Strategy name").press("Enter")  # commit it first: a click that blurs the field only commits the field
    settle(page)
    page.get_by_role("button", name="Save strategy").click()
    page.get_by_text("Saved strategy 'NIFTY straddle with wing'").wait_for()
    choose(page, "Accounts", ACCOUNT)
    sim.freeze(True)  # no random walk from here on: only the test moves prices (P&L stays near 0 until then)
    page.get_by_role("button", name="Check margin").click()  # the service asks the broker; Execute waits for it
    until(lambda: page.get_by_role("button", name="Execute").is_enabled(), "the margin check answered", 30)
    page.get_by_role("button", name="Execute").click()
    page.get_by_text("Queued 1 run(s)").wait_for()
    until(lambda: grid_cells(page).count("filled") == 3, "three entry intents filled")
    page.get_by_text("Last execution:").wait_for()
    no_app_errors(page)
    shoot(page, shots, "strategies")

    with db.read() as s:
        run = s.scalars(select(StrategyRun)).one()
        legs = {(e.symbol, e.action): e for e in s.scalars(select(Execution).where(Execution.run_id == run.id))}
    assert len(legs) == 3 and {a for _, a in legs} == {"BUY", "SELL"}
    short_ce = next(sym for sym, a in legs if a == "SELL" and sym.endswith("CE"))
    until(lambda: db_run(db, run.id).status == "active", "the run to become active")

    # -- 5. Positions & Orders: three legs; Dashboard: P&L tiles and line for the account -------------------
    goto(page, "Positions & Orders")
    page.get_by_role("tab", name="Positions").click()
    page.get_by_text("Positions P&L").wait_for()  # only drawn once the account sync stored positions
    until(lambda: grid_has(page, *[sym for sym, _ in legs]), "positions of the three legs")
    with db.read() as s:
        held = {p.symbol: p.quantity for p in s.scalars(select(Position).where(Position.quantity != 0))}
    assert {sym: (65 if a == "BUY" else -65) for sym, a in legs} == held, held
    no_app_errors(page)
    shoot(page, shots, "orders")

    goto(page, "Dashboard")
    page.get_by_text("Total P&L").wait_for()
    page.locator('[data-testid="stMetricLabel"]', has_text=ACCOUNT).wait_for()
    # 10 s buckets, cached 10 s: wait for a line (two points), not just a dot
    until(lambda: page.get_by_text(re.compile(r"^([2-9]|\d\d[\d,]*) points")).count() > 0, "P&L chart line", 45)
    no_app_errors(page)
    shoot(page, shots, "dashboard")

    # -- 6. the sold CE spikes: P&L breaches -max loss, the risk manager exits (BUY-to-close before SELL) ---
    n_entries = len(sim.orders())
    ce_ltp = db_ltp(db, short_ce, "NFO")
    spike = round(ce_ltp + max(100.0, ce_ltp), 1)  # loss ≥ 100 points × lot 65, far beyond ₹500
    sim.set_price(short_ce, "NFO", spike)
    until(lambda: db_run(db, run.id).status == "exited", "the run to be exited by the risk manager")

    goto(page, "Risk Monitor")  # today's runs, the one just exited among them, are listed by default
    page.get_by_text("Exit reason: max_loss").wait_for()
    with db.read() as s:
        event = s.scalars(select(RiskEvent).where(RiskEvent.run_id == run.id, RiskEvent.event_type == "max_loss")).one()
        exit_ids = json.loads(event.exit_order_ids)
        exits = list(s.scalars(select(OrderIntent).where(OrderIntent.run_id == run.id, OrderIntent.purpose == "exit")))
    assert len(exit_ids) == 3 and event.threshold == -MAX_LOSS
    until(lambda: grid_has(page, "max_loss", exit_ids[0]), "the max_loss event with exit order ids")
    no_app_errors(page)
    shoot(page, shots, "risk")

    orders = sim.orders()
    exit_orders = [o for o in orders[n_entries:] if o["account"] == ACCOUNT]
    assert len(exit_orders) == 3, exit_orders
    assert sorted((o["symbol"], o["action"]) for o in exit_orders) == sorted(
        (sym, "BUY" if a == "SELL" else "SELL") for sym, a in legs), "exactly one exit per leg, opposite side"
    actions = [o["action"] for o in exit_orders]
    assert actions == ["BUY", "BUY", "SELL"], f"short legs must be closed before the long wing: {actions}"
    assert {e.status for e in exits} == {"filled"} and len(exits) == 3

    # -- 7. Service Health: every component up, the feed on our account ------------------------------------
    goto(page, "Service Health")
    page.locator('[data-testid="stMetricValue"]', has_text="connected").wait_for()
    until(lambda: grid_has(page, "dispatcher", "market_data", "● ok"), "component heartbeats")
    no_app_errors(page)
    shoot(page, shots, "health")
    assert key not in page.content()

    # -- 8. Kill switch: an order placed outside the app, flattened from the sidebar; the alert is toasted -----
    r = sim.api("placeorder", {"apikey": key, "strategy": "outside", "symbol": "SBIN", "exchange": "NSE",
                               "action": "BUY", "quantity": 1, "pricetype": "MARKET", "product": "MIS"}).json()
    assert r.get("orderid"), r
    page.get_by_text("Kill switch").click()
    confirm = page.locator("label", has_text="Yes, flatten ALL accounts").locator("input")
    # a click that lands while the sidebar's live fragment redraws can be lost: click until the box is ticked
    until(lambda: confirm.is_checked() or page.get_by_text("Yes, flatten ALL accounts").click() or False,
          "the flatten confirmation ticked", every=1.5)  # long enough for a click's rerun to show it
    page.get_by_role("button", name="Flatten all").click()
    page.get_by_text("Flatten requested").wait_for()
    until(lambda: page.get_by_text(re.compile(r"flatten #\d+: account \d+: cancelled 0/0, closed 1/1")).count() > 0,
          "the flatten alert toast", 60)
    positions = sim.api("positionbook", {"apikey": key}).json()["data"]
    assert all(int(float(p["quantity"])) == 0 for p in positions), positions
    no_app_errors(page)
    elapsed = time.monotonic() - t0
    print(f"e2e browser flow: {elapsed:.1f}s; screenshots in {shots}")


def add_wing_leg(page):
    """Third leg in the st.data_editor (a canvas grid): click a cell of the add-row line, type, Enter; every
    edit reruns the script and redraws the grid, so each cell is clicked afresh once the last edit landed."""
    editor = page.locator(".st-key-strategies-legs")
    row_y = 35 + 2 * 35 + 17  # header + two legs + half a row: the add-row line, then the new third row
    # column centres as fractions of the editor width (1400 px viewport, wide layout)
    for col, frac, value in ((0, 0.122, "CE"), (1, 0.282, "BUY"), (2, 0.424, "OTM"), (3, 0.593, "2"),
                             (5, 0.932, "1")):
        for _attempt in range(3):  # a rerun landing mid-typing swallows the keys: then type again
            settle(page)
            bb = editor.bounding_box()
            page.mouse.click(bb["x"] + frac * bb["width"], bb["y"] + row_y)
            settle(page)  # the first click on the add-row line adds the row (a rerun)
            page.keyboard.type(value)
            page.keyboard.press("Enter")
            try:
                until(lambda c=col, v=value: legs_editor_cells(page)[12 + c:13 + c] == [v],
                      f"leg 3 column {col} = {value}", 5, 0.2)
                break
            except AssertionError:
                page.keyboard.press("Escape")
        else:
            raise AssertionError(f"could not set leg 3 column {col} to {value}: {legs_editor_cells(page)}")
    page.keyboard.press("Escape")
    page.get_by_role("heading", name="Builder").click()  # leave the grid (drops its hover tooltip)


def legs_editor_cells(page) -> list[str]:
    return page.locator('.st-key-strategies-legs [id^="glide-cell"]').all_inner_texts()


def db_run(db, run_id: int) -> StrategyRun:
    with db.read() as s:
        return s.get(StrategyRun, run_id)


def db_ltp(db, symbol: str, exchange: str) -> float:
    with db.read() as s:
        row = s.get(LatestPrice, (symbol, exchange))
    assert row is not None and row.ltp > 0, f"no price for {symbol}"
    return float(row.ltp)
