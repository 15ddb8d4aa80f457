"""Unit tests of the pure pricing, symbol, fill and validation logic."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from simulator import fills as F
from simulator import history as H
from simulator.broker import Broker
from simulator.guards import Faults, RateLimiter, mask
from simulator.instruments import (
    fmt_expiry,
    monthly_expiries,
    option_symbol,
    parse_expiry,
    weekly_expiries,
)
from simulator.market import Market, bs_price, round_tick
from simulator.schema import ORDER, validate

OPT_RE = re.compile(r"^(NIFTY|BANKNIFTY|SENSEX)(\d{2})([A-Z]{3})(\d{2})(\d+)(CE|PE)$")


def test_black_scholes_put_call_parity():
    s, k, t, v, r = 26000.0, 26100.0, 30 / 365, 0.13, 0.065
    import math
    c, p = bs_price(s, k, t, v, "CE", r), bs_price(s, k, t, v, "PE", r)
    assert c - p == pytest.approx(s - k * math.exp(-r * t), abs=1e-6)
    assert bs_price(s, k, 0, v, "CE") == 0.0 and bs_price(s, k, 0, v, "PE") == 100.0


def test_round_tick():
    assert round_tick(100.03) == 100.05
    assert round_tick(100.02) == 100.0


def test_expiry_calendar():
    wed = dt.date(2025, 11, 26)
    assert weekly_expiries(wed, 1, 4) == [dt.date(2025, 12, 2), dt.date(2025, 12, 9),
                                          dt.date(2025, 12, 16), dt.date(2025, 12, 23)]
    assert weekly_expiries(dt.date(2025, 12, 2), 1, 1) == [dt.date(2025, 12, 2)]
    assert monthly_expiries(wed, 1, 2) == [dt.date(2025, 11, 25) + dt.timedelta(days=35), dt.date(2026, 1, 27)]
    assert fmt_expiry(dt.date(2025, 12, 2)) == "02DEC25"
    assert option_symbol("NIFTY", dt.date(2025, 12, 2), 26000.0, "CE") == "NIFTY02DEC2526000CE"
    assert parse_expiry("30-dec-25") == dt.date(2025, 12, 30) and parse_expiry("31FEB25") is None


def test_symbol_master_contents():
    m = Market(seed=3, today=dt.date(2025, 11, 26))
    items = m.master.items
    opts = [i for i in items.values() if i.is_option]
    assert all(OPT_RE.match(i.symbol) for i in opts)
    nifty = [i for i in opts if i.name == "NIFTY"]
    assert {i.lotsize for i in nifty} == {65} and {i.freeze for i in nifty} == {1800}
    assert sorted({i.expiry for i in nifty}) == weekly_expiries(dt.date(2025, 11, 26), 1, 4)
    assert len({i.strike for i in nifty}) == 121
    bn = [i for i in opts if i.name == "BANKNIFTY"]
    assert {i.lotsize for i in bn} == {30} and len({i.expiry for i in bn}) == 2
    assert all(i.expiry.weekday() == 1 for i in bn)
    sx = [i for i in opts if i.name == "SENSEX"]
    assert {i.exchange for i in sx} == {"BFO"} and {i.lotsize for i in sx} == {20}
    assert all(i.expiry.weekday() == 3 for i in sx)
    assert ("NFO", "NIFTY30DEC25FUT") in items and ("BFO", "SENSEX25DEC25FUT") in items
    assert items[("NSE", "RELIANCE")].lotsize == 1


def test_random_walk_is_deterministic_per_seed():
    a, b, c = Market(seed=9), Market(seed=9), Market(seed=10)
    for _ in range(20):
        a.step(), b.step(), c.step()
    key = ("NSE_INDEX", "NIFTY")
    assert a.state(key).ltp == b.state(key).ltp
    assert a.state(key).ltp != c.state(key).ltp


def test_options_reprice_with_underlying_and_smile():
    m = Market(seed=1)
    m.frozen = False
    exp = m.master.expiries[("NIFTY", "OPT")][1]
    strikes = m.master.strikes("NIFTY", exp)
    atm = strikes[60]
    ce = ("NFO", option_symbol("NIFTY", exp, atm, "CE"))
    pe = ("NFO", option_symbol("NIFTY", exp, atm, "PE"))
    c0, p0 = m.state(ce).ltp, m.state(pe).ltp
    m.set_price(("NSE_INDEX", "NIFTY"), m.state(("NSE_INDEX", "NIFTY")).ltp + 300)
    assert m.state(ce).ltp > c0 and m.state(pe).ltp < p0
    q = m.quote(ce)
    assert q["bid"] < q["ltp"] < q["ask"] and q["oi"] > 0


def test_forced_option_price_when_the_spot_moves_then_it_holds_until_released_or_forced_again():
    m = Market(seed=1)
    exp = m.master.expiries[("NIFTY", "OPT")][0]
    atm = m.master.strikes("NIFTY", exp)[60]
    ce = ("NFO", option_symbol("NIFTY", exp, atm, "CE"))
    pe = ("NFO", option_symbol("NIFTY", exp, atm, "PE"))
    spot = ("NSE_INDEX", "NIFTY")
    p0 = m.state(pe).ltp
    assert m.set_price(ce, 123.42) == [ce]
    for _ in range(5):
        m.set_price(spot, m.state(spot).ltp + 100)
        m.step()
    assert m.state(ce).ltp == 123.4  # held, on its tick size, while the spot walked 500+ points up
    assert m.state(pe).ltp < p0      # the other leg, never forced, still follows the spot
    m.set_price(ce, 150)
    m.set_price(spot, m.state(spot).ltp + 100)
    assert m.state(ce).ltp == 150.0  # forced again: holds the new price
    assert m.release(ce) == [ce] and m.release(ce) == []
    assert m.state(ce).ltp == m.fair_price(m.master.items[ce]) > 150  # back on the model at once
    m.set_price(spot, m.state(spot).ltp + 100)
    assert m.state(ce).ltp == m.fair_price(m.master.items[ce])  # and follows the spot again
    m.set_price(spot, 20000.0)
    assert m.held == set()  # forcing a spot holds nothing: it walks on from there
    m.set_price(ce, 99.0), m.set_price(pe, 98.0)
    assert sorted(m.release_all()) == sorted([ce, pe]) and m.held == set()


@pytest.mark.parametrize("pt,action,price,trig,ltp,expect", [
    ("MARKET", "BUY", 0, 0, 100, ("complete", 100.05)),
    ("MARKET", "SELL", 0, 0, 100, ("complete", 99.95)),
    ("LIMIT", "BUY", 101, 0, 100, ("complete", 100)),
    ("LIMIT", "BUY", 99, 0, 100, ("open", None)),
    ("LIMIT", "SELL", 99, 0, 100, ("complete", 100)),
    ("SL-M", "BUY", 0, 105, 100, ("trigger pending", None)),
    ("SL-M", "SELL", 0, 101, 100, ("complete", 100)),
    ("SL", "SELL", 101, 101, 100, ("open", None)),
    ("SL", "SELL", 99, 101, 100, ("complete", 100)),
])
def test_initial_fill(pt, action, price, trig, ltp, expect):
    assert F.initial_fill(action, pt, price, trig, ltp, ltp - 0.05, ltp + 0.05) == expect


def test_later_fill_rules():
    assert F.later_fill("BUY", "LIMIT", "open", 99, 0, 98, False) == ("complete", 99)
    assert F.later_fill("SELL", "SL-M", "trigger pending", 0, 95, 96, False) == ("trigger pending", None)
    assert F.later_fill("SELL", "SL-M", "trigger pending", 0, 95, 94.5, False) == ("complete", 94.5)
    assert F.later_fill("SELL", "SL", "trigger pending", 90, 95, 94, False) == ("complete", 94)
    assert F.later_fill("SELL", "SL", "trigger pending", 95, 96, 94, False) == ("open", None)
    assert F.later_fill("SELL", "SL", "open", 95, 96, 95.5, True) == ("complete", 95.5)


def test_position_netting_and_realized_pnl():
    p = F.Position("X", "NSE", "MIS")
    p.apply(10, 100)
    p.apply(10, 110)
    assert p.quantity == 20 and p.average_price == 105
    assert p.apply(-15, 120) == pytest.approx(225)
    assert p.quantity == 5 and p.average_price == 105
    p.apply(-10, 100)  # reverse to short 5 @ 100
    assert p.quantity == -5 and p.average_price == 100 and p.realized == pytest.approx(200)
    assert p.unrealized(90) == pytest.approx(50)
    assert F.reducing_qty(5, -8) == 5 and F.reducing_qty(5, 3) == 0


def _frozen_broker(capital: float):
    """A broker on a frozen market with one account and SBIN at 1000."""
    m = Market(seed=2)
    m.frozen = True
    b = Broker(m)
    a = b.add_account("u", capital=capital)
    m.set_price(("NSE", "SBIN"), 1000)
    return m, b, a


def test_broker_margin_and_reduce_blocks_nothing():
    m, b, a = _frozen_broker(100000)
    base = dict(strategy="s", symbol="SBIN", exchange="NSE", pricetype="MARKET", product="MIS",
                price=0.0, trigger_price=0.0)
    code, _ = b.place(a, dict(base, action="BUY", quantity=100))
    assert code == 200
    assert b.used_margin(a) == pytest.approx(100 * 1000.05 / 5)
    code, body = b.place(a, dict(base, action="BUY", quantity=1000))
    assert code == 400 and body["message"].startswith("Insufficient funds. Required: ₹")
    code, _ = b.place(a, dict(base, action="SELL", quantity=100))
    assert code == 200 and b.used_margin(a) == 0
    assert a.realized() == pytest.approx(100 * (999.95 - 1000.05))


def test_schema_messages():
    _, e = validate(ORDER, {"apikey": "k", "exchange": "XX", "symbol": "A", "action": "hold", "quantity": "x"})
    assert e == {"strategy": ["Missing data for required field."],
                 "exchange": ["Must be one of: NSE, NFO, CDS, BSE, BFO, BCD, MCX, NCDEX, NCO, NSE_INDEX, "
                              "BSE_INDEX, MCX_INDEX, GLOBAL_INDEX, CRYPTO."],
                 "action": ["Must be one of: BUY, SELL, buy, sell."], "quantity": ["Not a valid number."]}
    d, e = validate(ORDER, {"apikey": "k", "strategy": "s", "exchange": "NSE", "symbol": "A",
                            "action": "buy", "quantity": "10"})
    assert not e and d["quantity"] == 10 and d["action"] == "BUY" and d["pricetype"] == "MARKET"
    _, e = validate(ORDER, {"apikey": "k", "strategy": "s", "exchange": "NSE", "symbol": "A",
                            "action": "BUY", "quantity": 1.5})
    assert e == {"quantity": ["Fractional quantity (1.5) is not allowed for non-crypto exchanges."]}


def test_rate_limiter_moving_window():
    rl = RateLimiter(order_rate=2, api_rate=3, window=0.2)
    assert [rl.hit("k", "placeorder") for _ in range(3)] == [None, None, "2 per 1 second"]
    assert rl.hit("k2", "placeorder") is None and rl.hit("k", "funds") is None
    import time
    time.sleep(0.25)
    assert rl.hit("k", "placeorder") is None


def test_faults_count_and_scope():
    f = Faults()
    f.add({"kind": "http_500", "count": 2, "endpoints": ["funds"], "account": "a"})
    assert f.match("http_500", "quotes", "k", "a") is None
    assert f.match("http_500", "funds", "k", "b") is None
    assert f.match("http_500", "funds", "k", "a") and f.match("http_500", "funds", "k", "a")
    assert f.match("http_500", "funds", "k", "a") is None
    with pytest.raises(ValueError):
        f.add({"kind": "bogus"})
    assert "abcd" in mask("abcdef0123456789") and "0123456789" not in mask("abcdef0123456789")


def test_history_deterministic_epoch_seconds():
    a = H.bars(1, "SBIN", "NSE", "5m", dt.date(2025, 1, 6), dt.date(2025, 1, 7), 800)
    b = H.bars(1, "SBIN", "NSE", "5m", dt.date(2025, 1, 6), dt.date(2025, 1, 7), 800)
    assert a == b and len(a) == 2 * 75
    assert a[0]["timestamp"] == int(dt.datetime(2025, 1, 6, 3, 45, tzinfo=dt.UTC).timestamp())
    d = H.bars(1, "SBIN", "NSE", "D", dt.date(2025, 1, 4), dt.date(2025, 1, 10), 800)
    assert len(d) == 5 and d[0]["timestamp"] == int(dt.datetime(2025, 1, 6, tzinfo=dt.UTC).timestamp())
    assert all(x["low"] <= min(x["open"], x["close"]) <= max(x["open"], x["close"]) <= x["high"] for x in a + d)


def test_tick_loop_slices_when_a_full_period_runs_then_each_subscribed_key_ticks_once_spread_over_slices():
    from simulator.engine import Config, Sim

    sim = Sim(Config(tick_hz=20))
    published: list[list] = []

    class Hub:  # what Sim.step needs of the WebSocket hub
        subscribed = {k: {} for k in list(sim.market.master.items)[:60]}

        def publish(self, keys):
            published.append(list(keys))

    sim.hub = Hub()
    parts = sim.slices()
    assert parts == 20  # 50 ms period cut into 2.5 ms slices
    for part in range(parts):
        sim.step(part, parts)
    flat = [k for keys in published for k in keys]
    assert sorted(flat) == sorted(Hub.subscribed)  # every key once per period, none twice
    assert max(len(keys) for keys in published) <= len(flat) // 4  # spread, not one burst
    assert all(sim.market.slot(k, parts) == sim.market.slot(k, parts) for k in flat)  # stable
    sim.market.frozen = True
    published.clear()
    sim.step(0, parts)
    assert published == []


def test_freeze_when_an_underlying_moved_after_its_options_ticked_then_subscribers_get_the_prices_it_freezes_at():
    """Found in the browser e2e: an option re-prices when NIFTY moves but ticks in its own slice of the period, so
    freezing right after a NIFTY move left subscribers with an option price ~3 s (the freeze) old and ~5 points off
    the price orders then filled at; the risk manager valued the run on it and exited a flat position."""
    from simulator.engine import Config, Sim

    sim = Sim(Config(tick_hz=20))
    m = sim.market
    parts = sim.slices()
    nifty = ("NSE_INDEX", "NIFTY")
    options = [k for k in m.master.derived[nifty] if m.master.items[k].itype in ("CE", "PE")]
    before = [k for k in options if m.slot(k, parts) < m.slot(nifty, parts)]  # tick before NIFTY moves
    assert len(before) > 10
    last: dict = {}
    calls = []

    class Hub:
        subscribed = {k: {} for k in before[:40]}

        def publish(self, keys):
            calls.append(len(keys))
            last.update((k, m.tick_data(k, 1)["ltp"]) for k in keys)

    sim.hub = Hub()
    for _ in range(3):
        for part in range(parts):
            sim.step(part, parts)
    stale = [k for k in Hub.subscribed if last[k] != m.quote(k)["ltp"]]
    assert stale  # the moment the e2e froze in: NIFTY moved after these options' last tick
    sim.freeze(True)
    assert {k: last[k] for k in Hub.subscribed} == {k: m.quote(k)["ltp"] for k in Hub.subscribed}
    n = len(calls)
    sim.freeze(True)  # already frozen: no second burst
    sim.step(0, parts)
    assert len(calls) == n and m.frozen
    sim.freeze(False)
    assert not m.frozen


def test_orderbook_and_tradebook_encoding_when_cached_per_row_then_byte_identical_and_follows_changes():
    from simulator import accountviews as av
    from simulator.broker import compact_json
    m, b, a = _frozen_broker(1_000_000)
    base = dict(strategy="s", symbol="SBIN", exchange="NSE", product="MIS", trigger_price=0.0)
    b.place(a, dict(base, action="BUY", quantity=3, pricetype="MARKET", price=0.0))
    _, placed = b.place(a, dict(base, action="BUY", quantity=2, pricetype="LIMIT", price=900.0))  # rests open
    resting = placed["orderid"]

    def same() -> bool:
        return (av.orderbook_json(a) == compact_json(av.orderbook(a))
                and av.tradebook_json(a) == compact_json(av.tradebook(a)))

    assert same() and same()  # the second call is served from the per-row cache
    assert b.modify(a, dict(orderid=resting, quantity=4, price=950.0, trigger_price=0.0))[0] == 200
    assert '"quantity":4' in av.orderbook_json(a) and same()
    m.set_price(("NSE", "SBIN"), 949)  # crosses the limit: filled, a trade appears
    b.on_prices([("NSE", "SBIN")])
    assert a.orders[resting].status == "complete" and len(a.trades) == 2 and same()
    assert b.cancel(a, resting)[0] == 400 and same()
    empty = b.add_account("v", capital=1)
    assert av.orderbook_json(empty) == compact_json(av.orderbook(empty)) and '"orders":[]' in av.orderbook_json(empty)
