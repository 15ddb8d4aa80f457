"""Prices: seeded random walk for spots, futures by carry, options by Black-Scholes with a smile."""

from __future__ import annotations

import datetime as dt
import math
import random
import zlib

from .instruments import STOCKS, UNDERLYINGS, Instrument, SymbolMaster
from .timeutil import IST, epoch_ms, now_ist, today_ist

RATE = 0.065
STEP_SD = {"INDEX": 0.00025, "EQ": 0.0004}
YEAR_SECONDS = 365.0 * 86400.0


def round_tick(price: float, tick: float = 0.05) -> float:
    return round(round(price / tick) * tick, 2)


def norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def bs_price(spot: float, strike: float, t: float, vol: float, otype: str, r: float = RATE) -> float:
    """Black-Scholes price of a European option (t in years)."""
    if t <= 0 or vol <= 0:
        return max(0.0, spot - strike) if otype == "CE" else max(0.0, strike - spot)
    sq = vol * math.sqrt(t)
    d1 = (math.log(spot / strike) + (r + 0.5 * vol * vol) * t) / sq
    d2 = d1 - sq
    if otype == "CE":
        return spot * norm_cdf(d1) - strike * math.exp(-r * t) * norm_cdf(d2)
    return strike * math.exp(-r * t) * norm_cdf(-d2) - spot * norm_cdf(-d1)


def smile_vol(atm_vol: float, spot: float, strike: float) -> float:
    m = math.log(strike / spot)
    return min(1.5, max(0.03, atm_vol + 1.6 * m * m - 0.12 * m))


def years_to(expiry: dt.date, now: dt.datetime | None = None) -> float:
    close = dt.datetime(expiry.year, expiry.month, expiry.day, 15, 30, tzinfo=IST)
    secs = (close - (now or now_ist())).total_seconds()
    return max(secs, 600.0) / YEAR_SECONDS


class State:
    """Live quote state of one instrument."""

    __slots__ = ("high", "low", "ltp", "ltq", "ltt", "oi", "open", "prev_close", "ver", "volume")

    def __init__(self, price: float, oi: int = 0):
        self.ltp = price
        self.open = self.high = self.low = self.prev_close = price
        self.volume = 0
        self.oi = oi
        self.ver = -1
        self.ltt = epoch_ms()
        self.ltq = 0

    def set(self, price: float, qty: int) -> None:
        self.ltp = price
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.volume += qty
        self.ltq = qty
        self.ltt = epoch_ms()


class Market:
    def __init__(self, seed: int = 1, today: dt.date | None = None):
        self.seed = seed
        rng = random.Random(f"init:{seed}")
        bases = dict(STOCKS, **{k: v["spot"] for k, v in UNDERLYINGS.items()})
        spots = {k: round_tick(v * (1 + rng.uniform(-0.01, 0.01))) for k, v in bases.items()}
        self.master = SymbolMaster(spots, today or today_ist())
        self.frozen = False
        self._slots: dict[tuple[str, str], int] = {}
        self.zero_counts: dict[tuple[str, str], int] = {}
        self.states: dict[tuple[str, str], State] = {}
        self.walk: dict[tuple[str, str], float] = {}  # unrounded spot of walking instruments
        self.rngs: dict[tuple[str, str], random.Random] = {}
        self.versions: dict[tuple[str, str], int] = {}
        # Derivatives whose price was forced (/_sim/price, /_sim/path): they keep that price, and are not re-priced
        # from their underlying, until released or forced again, so a test can push one option leg through its
        # stop while the spot (and every other leg) keeps walking.
        self.held: set[tuple[str, str]] = set()
        self.aux = random.Random(f"aux:{seed}")
        self.oi_walk = random.Random(f"oi-walk:{seed}")  # its own stream: the other draws stay as they were
        for inst in self.master.items.values():
            if inst.base is None:
                spot = inst.meta["spot"]
                self.walk[inst.key] = spot
                self.rngs[inst.key] = random.Random(f"walk:{seed}:{inst.exchange}:{inst.symbol}")
                self.versions[inst.key] = 0
                self.states[inst.key] = State(spot)
        self.prev_close_derived()

    def prev_close_derived(self) -> None:
        for key, inst in self.master.items.items():
            if inst.base is not None:
                st = self.state(key)
                st.open = st.high = st.low = st.prev_close = st.ltp

    # ----- lookups -------------------------------------------------------
    def get(self, exchange: str, symbol: str) -> Instrument | None:
        return self.master.get(exchange, symbol)

    def fair_price(self, inst: Instrument) -> float:
        spot = self.states[inst.base].ltp
        spec = UNDERLYINGS[inst.name]
        t = years_to(inst.expiry)
        if inst.itype == "FUT":
            return round_tick(spot * math.exp(RATE * t), inst.tick)
        vol = smile_vol(spec["vol"], spot, inst.strike)
        return max(inst.tick, round_tick(bs_price(spot, inst.strike, t, vol, inst.itype), inst.tick))

    def state(self, key: tuple[str, str]) -> State:
        """State of any instrument; derived ones re-price lazily when their spot moved."""
        st = self.states.get(key)
        inst = self.master.items[key]
        if inst.base is None:
            return st
        base_ver = self.versions[inst.base]
        if st is None:
            oi = int(random.Random(f"oi:{self.seed}:{key}").uniform(1e4, 5e6)) // inst.lotsize * inst.lotsize
            st = self.states[key] = State(self.fair_price(inst), oi)
            st.ver = base_ver
        elif st.ver != base_ver and key not in self.held:
            st.set(self.fair_price(inst), inst.lotsize * self.aux.randint(1, 20))
            st.oi = max(0, st.oi + inst.lotsize * self.oi_walk.randint(-10, 12))  # open interest builds and unwinds
            st.ver = base_ver
        return st

    # ----- movement ------------------------------------------------------
    def slot(self, key: tuple[str, str], parts: int) -> int:
        """The stable slice (0..parts-1) of the tick period in which ``key`` moves and ticks."""
        if parts == 1:
            return 0
        h = self._slots.get(key)
        if h is None:
            h = self._slots[key] = zlib.crc32(f"{key[0]}:{key[1]}".encode())
        return h % parts

    def step(self, part: int = 0, parts: int = 1) -> list[tuple[str, str]]:
        """One random-walk step of every spot in slice ``part`` of ``parts`` (all of them by default); returns
        the moved spot keys."""
        if self.frozen:
            return []
        moved = []
        for key, val in self.walk.items():
            if self.slot(key, parts) != part:
                continue
            itype = self.master.items[key].itype
            rng = self.rngs[key]
            val *= math.exp(rng.gauss(0.0, STEP_SD[itype]))
            self.walk[key] = val
            self._move_spot(key, round_tick(val), rng.randint(1, 500))
            moved.append(key)
        return moved

    def _move_spot(self, key: tuple[str, str], price: float, qty: int) -> None:
        self.states[key].set(price, qty)
        self.versions[key] += 1

    def set_price(self, key: tuple[str, str], ltp: float) -> list[tuple[str, str]]:
        """Force a price now. Returns the keys whose price changed (instrument + derivatives)."""
        inst = self.master.items[key]
        ltp = round_tick(ltp, inst.tick)
        if inst.base is None:
            self.walk[key] = ltp
            self._move_spot(key, ltp, 1)
            return [key] + self.master.derived.get(key, [])
        st = self.state(key)
        st.set(ltp, inst.lotsize)
        self.held.add(key)
        return [key]

    def release(self, key: tuple[str, str]) -> list[tuple[str, str]]:
        """Let a held derivative follow its underlying again; it re-prices at once. Returns the keys whose price
        changed (none for an instrument that was not held)."""
        if key not in self.held:
            return []
        self.held.discard(key)
        self.states[key].ver = -1  # stale: the next read re-prices from the current spot
        self.state(key)
        return [key]

    def release_all(self) -> list[tuple[str, str]]:
        return [k for key in list(self.held) for k in self.release(key)]

    def affected(self, spots: list[tuple[str, str]]) -> list[tuple[str, str]]:
        out = list(spots)
        for k in spots:
            out.extend(self.master.derived.get(k, []))
        return out

    # ----- quote views ---------------------------------------------------
    def take_zero(self, key: tuple[str, str]) -> bool:
        n = self.zero_counts.get(key, 0)
        if n <= 0:
            return False
        if n == 1:
            del self.zero_counts[key]
        else:
            self.zero_counts[key] = n - 1
        return True

    def bid_ask(self, inst: Instrument, st: State) -> tuple[float, float]:
        if inst.itype == "INDEX":
            return 0.0, 0.0
        return max(0.0, round_tick(st.ltp - inst.tick, inst.tick)), round_tick(st.ltp + inst.tick, inst.tick)

    def quote(self, key: tuple[str, str], zero: bool = False) -> dict:
        inst = self.master.items[key]
        st = self.state(key)
        bid, ask = self.bid_ask(inst, st)
        q = {"ask": ask, "bid": bid, "high": st.high, "low": st.low, "ltp": st.ltp,
             "oi": st.oi, "open": st.open, "prev_close": st.prev_close, "volume": st.volume}
        if zero:
            q["ltp"] = 0.0
        return q

    def depth_levels(self, key: tuple[str, str]) -> tuple[list[dict], list[dict]]:
        inst = self.master.items[key]
        st = self.state(key)
        if inst.itype == "INDEX":
            empty = [{"price": 0.0, "quantity": 0, "orders": 0} for _ in range(5)]
            return empty, [dict(x) for x in empty]
        bid, ask = self.bid_ask(inst, st)
        rnd = random.Random(f"d:{self.seed}:{key}:{st.ltt}")
        lot = inst.lotsize
        bids = [{"price": round_tick(bid - i * inst.tick, inst.tick), "quantity": lot * rnd.randint(1, 60),
                 "orders": rnd.randint(1, 25)} for i in range(5)]
        asks = [{"price": round_tick(ask + i * inst.tick, inst.tick), "quantity": lot * rnd.randint(1, 60),
                 "orders": rnd.randint(1, 25)} for i in range(5)]
        return bids, asks

    def depth(self, key: tuple[str, str], zero: bool = False) -> dict:
        st = self.state(key)
        bids, asks = self.depth_levels(key)
        def strip(lv):
            return [{"price": x["price"], "quantity": x["quantity"]} for x in lv]
        return {"asks": strip(asks), "bids": strip(bids), "high": st.high, "low": st.low,
                "ltp": 0.0 if zero else st.ltp, "ltq": st.ltq, "oi": st.oi, "open": st.open,
                "prev_close": st.prev_close, "totalbuyqty": sum(x["quantity"] for x in bids),
                "totalsellqty": sum(x["quantity"] for x in asks), "volume": st.volume}

    def tick_data(self, key: tuple[str, str], mode: int, zero: bool = False) -> dict:
        """The `data` dict of a WS market_data push for a mode (1 LTP, 2 Quote, 3 Depth)."""
        exchange, symbol = key
        st = self.state(key)
        ltp = 0.0 if zero else st.ltp
        d = {"symbol": symbol, "exchange": exchange, "mode": mode, "ltp": ltp, "ltt": st.ltt,
             "timestamp": epoch_ms()}
        if mode == 1:
            return d
        change = round(ltp - st.prev_close, 2)
        d.update(volume=st.volume, open=st.open, high=st.high, low=st.low, close=st.prev_close,
                 last_quantity=st.ltq, last_trade_quantity=st.ltq, average_price=st.ltp,
                 avg_trade_price=st.ltp, total_buy_quantity=st.volume // 2,
                 total_sell_quantity=st.volume - st.volume // 2, oi=st.oi, change=change,
                 change_percent=round(100.0 * change / st.prev_close, 2) if st.prev_close else 0.0)
        if mode == 3:
            bids, asks = self.depth_levels(key)
            d["depth"] = {"buy": bids, "sell": asks}
        return d
