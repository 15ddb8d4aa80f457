"""Issue #15 in a real browser: build a strategy with per-leg stops, a relative expiry and per-account
multipliers, see the margin each account needs, execute; then check the simulator and the DB, not only the page.

One stack (simulator + ``python -m services`` + Streamlit) with three simulator accounts, on the Strategies page:
  a NIFTY short straddle (SELL CE ATM + SELL PE ATM, 1 lot each) with expiry "Current week" (the payoff resolves it
  to the simulator's nearest weekly expiry), leg 1 stop-loss 30 points, leg 2 stop-loss 40 % (the "More leg
  settings" columns of the legs grid), saved -> Execute on two of the accounts at 1x and 2x (the third stays out)
  -> the preview's quantities -> Check margin: the page shows each account's required margin, equal to what the
  simulator's /margin says for that account's basket (screenshot) -> Execute, clicked twice 0.5 s apart -> the
  simulator's order log holds exactly one entry per leg per chosen account, quantity = lots x lot size x
  multiplier, none twice and none for the third account; the DB has one run per account (its multiplier), each
  leg's sl_mode / sl_value on its execution, and every leg on the nearest weekly expiry.

The expectations come from the simulator (its /expiry list, /symbol lot size, /margin), never from the product's
own resolvers, so a multiplier dropped anywhere on the way (preview, margin check, execute, dispatcher) fails the
quantity or margin assertions: 1x and 2x would both read 65.
"""
from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlalchemy import func, select

from db import Database
from db.accounts import add_account
from db.commands import enqueue_control
from db.models import (Execution, Funds, Instrument, LatestPrice, MarginCheck, OrderIntent, ServiceHeartbeat,
                       Strategy, StrategyRun)
from tests.e2e.helpers import choose, failure_artifacts, fill_selected_cell, goto, no_app_errors, settle, shoot, until
from ui.strategy_form import column_order

pytestmark = pytest.mark.timeout(240)
NAME = "NIFTY day straddle"
MULT = {"day-1x": 1, "day-2x": 2}  # the accounts chosen on the page, and their lots multiplier
IDLE = "day-idle"  # an active account not chosen: it must get nothing
STOPS = {1: ("points", 30.0), 2: ("pct", 40.0)}  # leg_no -> the stop-loss typed into the legs grid
# legs grid cell ids are glide-cell-<col>-<row>, col 0 being the row marker: a field's column is its place in the
# grid's column order (with the extra leg columns shown) plus one
SL_MODE_COL = column_order(True).index("sl_mode") + 1
SL_VALUE_COL = column_order(True).index("sl_value") + 1


def test_strategies_when_relative_expiry_leg_stops_and_multipliers_then_margin_shown_and_one_entry_per_leg_each(
        browser_page, stack, shots):
    try:
        flow(browser_page, stack, shots)
    except BaseException:
        failure_artifacts(browser_page, stack, shots)
        raise


def flow(page, stack, shots):
    sim, t0 = stack.sim, time.monotonic()
    db = Database(stack.db_path, key_file=stack.db_path.parent / "algomirror.key")
    keys, ids = {}, {}
    for i, name in enumerate([*MULT, IDLE]):  # as the Accounts page adds them, then asks the service to reload
        keys[name] = sim.create_account(name)
        ids[name] = add_account(db, name, sim.rest_url, sim.ws_url, keys[name], is_primary=i == 0)
    enqueue_control(db, "reload_accounts", {})
    until(lambda: service_ready(db, list(ids.values())), "symbol master, feed, NIFTY price, funds of 3 accounts", 60)
    key = keys["day-1x"]
    weekly = sim.api("expiry", {"apikey": key, "symbol": "NIFTY", "exchange": "NFO",
                                "instrumenttype": "options"}).json()["data"]
    nearest = weekly[0]  # the simulator lists NIFTY's weekly (and monthly) expiries from today on, nearest first

    # -- 1. the builder: NIFTY short straddle (the default legs), current week, a stop-loss on each leg -------------
    page.goto(stack.ui_url + "/")
    page.get_by_role("heading", name="Dashboard", level=1).wait_for()
    goto(page, "Strategies")
    page.get_by_role("heading", name="Builder").wait_for()
    choose(page, "Underlying", "NIFTY")
    page.get_by_text("More leg settings: premium / delta target, LIMIT entry").click()
    editor = page.locator(".st-key-strategies-legs_1")  # showing the extra columns draws the grid anew
    until(lambda: [legs_row(editor, r)[:4] for r in (0, 1)] == [["CE", "SELL", "ATM", "0"], ["PE", "SELL", "ATM", "0"]],
          "the default legs (SELL CE ATM + SELL PE ATM) in the grid with the stop columns", 30)
    set_leg_cell(page, editor, 0, SL_VALUE_COL, "30")  # leg 1: 30 points (the default mode)
    set_leg_cell(page, editor, 1, SL_MODE_COL, "pct")  # leg 2: 40 % of its entry price
    set_leg_cell(page, editor, 1, SL_VALUE_COL, "40")
    box = page.get_by_role("textbox", name="Strategy name", exact=True)
    box.fill(NAME)
    box.press("Enter")  # commit it before the next click
    settle(page)
    choose(page, "Expiry", f"Current week ({nearest})")  # the label names the date it trades today
    page.get_by_text(f"at expiry ({nearest})").wait_for()  # the payoff resolved the relative choice to it
    page.get_by_role("button", name="Save strategy").click()
    page.get_by_text(f"Saved strategy '{NAME}'").wait_for()
    with db.read() as s:
        saved = s.scalars(select(Strategy).where(Strategy.name == NAME)).one()
        assert (saved.expiry_mode, saved.expiry) == ("current_week", ""), (saved.expiry_mode, saved.expiry)
        assert {leg.leg_no: (leg.sl_mode, leg.sl_value) for leg in saved.legs} == STOPS
        strategy_id = saved.id
    no_app_errors(page)

    # -- 2. Execute on two accounts at 1x and 2x: the preview's quantities -----------------------------------------
    # the market held still from here on, so the ATM strike the preview shows is the one the margin check prices
    # and Execute sends (a move in between would ask to check margin again); the DB first takes the last price
    sim.freeze(True)
    spot = float(sim.api("quotes", {"apikey": key, "symbol": "NIFTY", "exchange": "NSE_INDEX"}).json()["data"]["ltp"])
    until(lambda: db_ltp(db, "NIFTY", "NSE_INDEX") == spot, f"the service's NIFTY price at the frozen {spot}", 30)
    for name in MULT:
        choose(page, "Accounts", name)
    page.keyboard.press("Escape")  # close the multiselect's list (it covers the second multiplier)
    settle(page)
    assert page.get_by_label("day-1x: lots ×", exact=True).input_value() == "1"
    mult_box = page.get_by_label("day-2x: lots ×", exact=True)
    mult_box.fill("2")
    mult_box.press("Enter")
    preview = table_of(page, "orders")  # account, multiplier, leg_no, action, symbol, lots, quantity, orders
    rows = until(lambda: (lambda r: r if sorted((x[0], x[1]) for x in r) == [
        ("day-1x", "1"), ("day-1x", "1"), ("day-2x", "2"), ("day-2x", "2")] else None)(table_rows(preview)),
        "the preview of day-1x at 1x and day-2x at 2x", 30)
    symbols = {int(r[2]): r[4] for r in rows}  # leg_no -> contract, the same for both accounts
    assert all(symbols[int(r[2])] == r[4] for r in rows) and len(symbols) == 2, rows
    contracts = {sym: sim.api("symbol", {"apikey": key, "symbol": sym, "exchange": "NFO"}).json()["data"]
                 for sym in symbols.values()}
    lot = {sym: int(c["lotsize"]) for sym, c in contracts.items()}
    assert {c["expiry"] for c in contracts.values()} == {nearest}, contracts  # current week = nearest weekly
    assert [contracts[symbols[n]]["instrumenttype"] for n in (1, 2)] == ["CE", "PE"], contracts
    assert len({c["strike"] for c in contracts.values()}) == 1, contracts  # a straddle: one strike
    assert sorted((r[0], r[4], int(r[5]), int(r[6])) for r in rows) == sorted(
        (a, sym, m, lot[sym] * m) for a, m in MULT.items() for sym in symbols.values()), rows

    # -- 3. Check margin: each account's requirement, as the simulator prices that account's basket ----------------
    page.get_by_role("button", name="Check margin").click()
    margin_table = table_of(page, "shortfall")  # account, multiplier, required, available, shortfall, error
    shown = until(lambda: (lambda r: {x[0]: x for x in r} if len(r) == 2 and all(x[2] for x in r) else None)(
        table_rows(margin_table)), "the margin table with both accounts priced", 45)
    execute = page.get_by_role("button", name="Execute", exact=True)
    until(execute.is_enabled, "Execute enabled by the margin check", 15)
    for name, m in MULT.items():
        basket = [dict(symbol=sym, exchange="NFO", action="SELL", quantity=str(lot[sym] * m), product="NRML",
                       pricetype="MARKET", price="0", trigger_price="0") for sym in symbols.values()]
        priced = sim.api("margin", {"apikey": keys[name], "positions": basket}).json()["data"]
        account, mult, required, _available, short, error = shown[name]
        assert (account, int(mult), short, error) == (name, m, "0", ""), shown[name]
        assert float(required) == pytest.approx(priced["total_margin_required"], abs=0.05), (name, required, priced)
    assert float(shown["day-2x"][2]) == pytest.approx(2 * float(shown["day-1x"][2]), rel=1e-4), shown
    with db.read() as s:
        checked = {r.account_id: (r.multiplier, r.required, json.loads(r.plan_json))
                   for r in s.scalars(select(MarginCheck))}
    assert checked == {ids[a]: (m, pytest.approx(float(shown[a][2]), abs=0.05),
                                [[symbols[n], "SELL", lot[symbols[n]] * m] for n in (1, 2)])
                       for a, m in MULT.items()}, checked  # the service priced each account's own basket
    no_app_errors(page)
    shoot(page, shots, "strategy_day_margin")  # the margin per account, the preview, Execute enabled

    # -- 4. Execute (gated by the margin check above), clicked twice as an impatient user does: one fan-out ------
    execute.click()
    # the second click 0.5 s on usually lands after the first one's runs are written (before the fix in
    # pages/strategies.py it then sent every leg again, with a new execute key); whenever it lands, one run each
    page.wait_for_timeout(500)
    execute.click()
    said = page.get_by_text(re.compile(r"(Queued 2 run\(s\)|Already executed on this margin check) \(group "
                                       r"[0-9a-f]{8}\)"))
    said.wait_for(timeout=30_000)
    page.get_by_text("Last execution:").wait_for()

    def entries() -> list[dict]:
        return [o for o in sim.orders() if o.get("strategy") == NAME]
    until(lambda: len(entries()) >= 4 and all(o["order_status"] == "complete" for o in entries()),
          "four entry orders filled at the simulator", 60)
    with db.read() as s:
        runs = list(s.scalars(select(StrategyRun).where(StrategyRun.strategy_id == strategy_id)))
    until(lambda: all(status_of(db, r.id) == "active" for r in runs), "the runs active", 30)
    until(lambda: (lambda r: len(r) == 4 and all(x[6] == "filled" for x in r))(table_rows(table_of(
        page, "status_reason"))), "the page's last execution: four entry intents filled", 30)
    # nothing placed twice: the order log stays at four through a few dispatcher / poller / reconciler rounds (1 s)
    hold_deadline = time.monotonic() + 3.0
    while time.monotonic() < hold_deadline:
        assert len(entries()) == 4, entries()
        time.sleep(0.5)
    placed = entries()

    # -- 5. the simulator's order log: one entry per leg per chosen account, lots x lot size x multiplier -----------
    got = sorted((o["account"], o["symbol"], o["action"], int(o["quantity"]), int(o["filled_quantity"]))
                 for o in placed)
    want = sorted((a, sym, "SELL", lot[sym] * m, lot[sym] * m) for a, m in MULT.items() for sym in symbols.values())
    assert got == want, f"the simulator's entries {got} are not one per leg per account at 1x / 2x: {want}"
    assert not [o for o in sim.orders() if o["account"] == IDLE], "an order reached the account not chosen"
    assert {o["product"] for o in placed} == {"NRML"} and {o["pricetype"] for o in placed} == {"MARKET"}

    # -- 6. the DB: the runs, their multipliers, each leg's stop on its execution, the resolved expiry ---------------
    # one run per chosen account with its multiplier, none for the idle one, all of one fan-out
    assert sorted((r.account_id, r.multiplier) for r in runs) == sorted((ids[a], m) for a, m in MULT.items()), runs
    assert len({r.group_id for r in runs}) == 1
    broker_ids = {(o["account"], o["symbol"]): o["orderid"] for o in placed}
    names = {v: k for k, v in ids.items()}
    with db.read() as s:
        execs = list(s.scalars(select(Execution).where(Execution.run_id.in_([r.id for r in runs]))))
        expiries = {sym: s.scalar(select(Instrument.expiry).where(Instrument.symbol == sym,
                                                                  Instrument.exchange == "NFO"))
                    for sym in symbols.values()}
        intents = {e.id: s.get(OrderIntent, e.entry_intent_id) for e in execs}
    assert expiries == {sym: nearest for sym in symbols.values()}, expiries
    assert sorted((names[e.account_id], e.leg_no, e.symbol, e.quantity, e.sl_mode, e.sl_value) for e in execs) == \
        sorted((a, n, symbols[n], lot[symbols[n]] * m, *STOPS[n]) for a, m in MULT.items() for n in STOPS), execs
    for e in execs:
        it = intents[e.id]
        assert (it.purpose, it.status, it.requested_qty) == ("entry", "filled", e.quantity), it
        assert it.broker_order_id == broker_ids[(names[e.account_id], e.symbol)], (it.broker_order_id, broker_ids)
    no_app_errors(page)
    said = said.inner_text()  # by now the second click's run has answered too
    print(f"strategy day e2e: {time.monotonic() - t0:.1f}s; margin 1x ₹{float(shown['day-1x'][2]):,.2f}, "
          f"2x ₹{float(shown['day-2x'][2]):,.2f}; after the second click: {said!r}; "
          f"screenshot {shots / 'strategy_day_margin.png'}")


def service_ready(db: Database, account_ids: list[int]) -> bool:
    """The symbol master, the feed, a NIFTY price, and the funds of every account (the service has them all)."""
    with db.read() as s:
        n_opts = s.scalar(select(func.count()).select_from(Instrument).where(Instrument.exchange == "NFO"))
        md = s.get(ServiceHeartbeat, "market_data")
        nifty = s.get(LatestPrice, ("NIFTY", "NSE_INDEX"))
        funded = s.scalar(select(func.count()).select_from(Funds).where(Funds.account_id.in_(account_ids)))
    feed = json.loads(md.details_json or "{}") if md else {}
    return bool(n_opts and feed.get("connected") and nifty and nifty.ltp > 0 and funded == len(account_ids))


def db_ltp(db: Database, symbol: str, exchange: str) -> float | None:
    with db.read() as s:
        row = s.get(LatestPrice, (symbol, exchange))
    return float(row.ltp) if row is not None else None


def status_of(db: Database, run_id: int) -> str:
    with db.read() as s:
        return s.get(StrategyRun, run_id).status


# -- the page's tables (glide grids: their accessibility cells carry the raw values) ------------------------------
def table_of(page, header: str):
    """The st.dataframe with a column headed ``header`` (keys of st.dataframe do not reach the DOM)."""
    return page.locator('[data-testid="stDataFrame"]').filter(
        has=page.locator('[role="columnheader"]', has_text=re.compile(rf"^{re.escape(header)}$")))


def table_rows(frame) -> list[list[str]]:
    """The rows a grid draws, each a list of its cell texts by column."""
    cells = frame.locator('[id^="glide-cell"]')
    rows: dict[int, dict[int, str]] = {}
    for cid, text in zip(cells.evaluate_all("els => els.map(e => e.id)"), cells.all_inner_texts(), strict=True):
        m = re.fullmatch(r"glide-cell-(\d+)-(\d+)", cid)
        if m:
            rows.setdefault(int(m.group(2)), {})[int(m.group(1))] = text.strip()
    return [[r[c] for c in sorted(r)] for _, r in sorted(rows.items())]


def legs_row(editor, row: int) -> list[str]:
    """The cells of one leg the grid has drawn (the columns in view), by column."""
    cells = editor.locator(f'[id^="glide-cell-"][id$="-{row}"]')
    pairs = [(int(re.fullmatch(r"glide-cell-(\d+)-\d+", i).group(1)), t) for i, t in
             zip(cells.evaluate_all("els => els.map(e => e.id)"), cells.all_inner_texts(), strict=True)]
    return [t for _, t in sorted(pairs)]


def cell_text(editor, col: int, row: int) -> str | None:
    cell = editor.locator(f"#glide-cell-{col}-{row}")
    return cell.inner_text(timeout=1_000) if cell.count() else None


ACTIVE_CELL = "() => (document.activeElement && document.activeElement.id) || ''"


def set_leg_cell(page, editor, row: int, col: int, value: str) -> None:
    """Type ``value`` into the legs grid's cell (col, row), wherever the grid is scrolled: click a cell of the leg
    in view, walk to the column with the arrow keys (the grid scrolls along), open the cell's editor with Enter,
    fill it in one go, Enter (helpers.fill_grid_cell explains why not key by key). A rerun that redraws the grid
    mid-way drops the selection: then again."""
    overlay = page.locator('[id^="gdg-overlay-"]')
    for _attempt in range(4):
        settle(page)
        if overlay.count():
            page.keyboard.press("Escape")
        bb = editor.bounding_box()
        page.mouse.click(bb["x"] + 90, bb["y"] + 35 * (row + 1) + 17)  # past the row marker; header is 35 px
        try:
            at = until(lambda: (lambda m: int(m.group(1)) if m else None)(
                re.fullmatch(rf"glide-cell-(\d+)-{row}", page.evaluate(ACTIVE_CELL))), f"a cell of leg {row + 1}",
                3, 0.1)
        except AssertionError:
            continue
        if overlay.count():  # the click opened the cell it landed on: close it, the selection stays
            page.keyboard.press("Escape")
        for _ in range(abs(col - at)):
            page.keyboard.press("ArrowRight" if col > at else "ArrowLeft")
        if not fill_selected_cell(page, value):
            continue
        try:
            until(lambda: cell_text(editor, col, row) == value, f"leg {row + 1} column {col} = {value}", 5, 0.2)
            settle(page)
            return
        except AssertionError:
            page.keyboard.press("Escape")
    raise AssertionError(f"could not set leg {row + 1} column {col} to {value}: {legs_row(editor, row)}")
