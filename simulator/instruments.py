"""Symbol master: indices, stocks, futures and option chains in OpenAlgo format."""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
TUE, THU = 1, 3
STRIKES_EACH_SIDE = 60
TICK = 0.05

# name -> spec. weekly: (weekday, count) ; monthly_opts: (weekday, count); fut: (weekday, count)
UNDERLYINGS = {
    "NIFTY": dict(exchange="NSE_INDEX", fo="NFO", spot=26000.0, step=50, lot=65, freeze=1800,
                  vol=0.12, weekly=(TUE, 4), monthly_opts=None, fut=(TUE, 2)),
    "BANKNIFTY": dict(exchange="NSE_INDEX", fo="NFO", spot=59000.0, step=100, lot=30, freeze=900,
                      vol=0.14, weekly=None, monthly_opts=(TUE, 2), fut=(TUE, 2)),
    "SENSEX": dict(exchange="BSE_INDEX", fo="BFO", spot=85000.0, step=100, lot=20, freeze=1000,
                   vol=0.12, weekly=(THU, 4), monthly_opts=None, fut=(THU, 2)),
}
STOCKS = {"RELIANCE": 1500.0, "SBIN": 960.0, "INFY": 1600.0, "HDFCBANK": 1000.0, "TCS": 3200.0}
BR_EXCHANGE = {"NSE_INDEX": "NSE", "BSE_INDEX": "BSE"}


@dataclass(slots=True)
class Instrument:
    symbol: str
    exchange: str
    name: str
    itype: str  # INDEX | EQ | FUT | CE | PE
    lotsize: int = 1
    tick: float = TICK
    freeze: int = 0
    expiry: dt.date | None = None
    strike: float = 0.0
    token: str = ""
    base: tuple[str, str] | None = None  # (exchange, symbol) of the spot this derives from
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.exchange, self.symbol)

    @property
    def is_option(self) -> bool:
        return self.itype in ("CE", "PE")

    def as_dict(self, with_id: bool = True) -> dict:
        d = {
            "brexchange": BR_EXCHANGE.get(self.exchange, self.exchange),
            "brsymbol": self.symbol,
            "exchange": self.exchange,
            "expiry": fmt_expiry_dash(self.expiry) if self.expiry else "",
            "freeze_qty": self.freeze,
            "instrumenttype": self.itype,
            "lotsize": self.lotsize,
            "name": self.name,
            "strike": float(self.strike) if self.is_option else -0.01,
            "symbol": self.symbol,
            "tick_size": self.tick,
            "token": self.token,
        }
        if with_id:
            d["id"] = int(self.token)
        return dict(sorted(d.items()))


def fmt_expiry(d: dt.date) -> str:
    """DDMMMYY, e.g. 30DEC25 (symbol / request form)."""
    return f"{d.day:02d}{MONTHS[d.month - 1]}{d.year % 100:02d}"


def fmt_expiry_dash(d: dt.date) -> str:
    """DD-MMM-YY, e.g. 30-DEC-25 (symbol master / /expiry form)."""
    return f"{d.day:02d}-{MONTHS[d.month - 1]}-{d.year % 100:02d}"


def parse_expiry(text: str) -> dt.date | None:
    """Parse DDMMMYY or DD-MMM-YY (case-insensitive); None if invalid."""
    t = (text or "").replace("-", "").upper()
    if len(t) != 7 or t[2:5] not in MONTHS:
        return None
    try:
        return dt.date(2000 + int(t[5:7]), MONTHS.index(t[2:5]) + 1, int(t[0:2]))
    except ValueError:
        return None


def fmt_strike(strike: float) -> str:
    return str(int(strike)) if float(strike).is_integer() else str(strike)


def option_symbol(base: str, expiry: dt.date, strike: float, otype: str) -> str:
    return f"{base}{fmt_expiry(expiry)}{fmt_strike(strike)}{otype}"


def future_symbol(base: str, expiry: dt.date) -> str:
    return f"{base}{fmt_expiry(expiry)}FUT"


def weekly_expiries(today: dt.date, weekday: int, count: int) -> list[dt.date]:
    first = today + dt.timedelta(days=(weekday - today.weekday()) % 7)
    return [first + dt.timedelta(weeks=i) for i in range(count)]


def last_weekday(year: int, month: int, weekday: int) -> dt.date:
    last = dt.date(year, month, calendar.monthrange(year, month)[1])
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def monthly_expiries(today: dt.date, weekday: int, count: int) -> list[dt.date]:
    out, y, m = [], today.year, today.month
    while len(out) < count:
        d = last_weekday(y, m, weekday)
        if d >= today:
            out.append(d)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def atm_strike(spot: float, step: int) -> float:
    return float(round(spot / step) * step)


class SymbolMaster:
    """All instruments, indexed by (exchange, symbol)."""

    def __init__(self, spots: dict[str, float], today: dt.date):
        self.today = today
        self.items: dict[tuple[str, str], Instrument] = {}
        self.derived: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.expiries: dict[tuple[str, str], list[dt.date]] = {}  # (name, FUT|OPT) -> dates
        for name in STOCKS:
            self._add(Instrument(name, "NSE", name, "EQ", meta={"spot": spots[name]}))
        for name, spec in UNDERLYINGS.items():
            self._add_underlying(name, spec, spots[name])

    def _add(self, inst: Instrument) -> None:
        inst.token = str(len(self.items) + 1)
        self.items[inst.key] = inst
        if inst.base:
            self.derived.setdefault(inst.base, []).append(inst.key)

    def _add_underlying(self, name: str, spec: dict, spot: float) -> None:
        idx = Instrument(name, spec["exchange"], name, "INDEX", meta={"spot": spot})
        self._add(idx)
        common = dict(lotsize=spec["lot"], freeze=spec["freeze"], base=idx.key)
        futs = monthly_expiries(self.today, spec["fut"][0], spec["fut"][1])
        self.expiries[(name, "FUT")] = futs
        for exp in futs:
            self._add(Instrument(future_symbol(name, exp), spec["fo"], name, "FUT", expiry=exp, **common))
        opt_dates: list[dt.date] = []
        if spec["weekly"]:
            opt_dates += weekly_expiries(self.today, *spec["weekly"])
        if spec["monthly_opts"]:
            opt_dates += monthly_expiries(self.today, *spec["monthly_opts"])
        opt_dates = sorted(set(opt_dates))
        self.expiries[(name, "OPT")] = opt_dates
        atm = atm_strike(spot, spec["step"])
        strikes = [atm + i * spec["step"] for i in range(-STRIKES_EACH_SIDE, STRIKES_EACH_SIDE + 1)]
        for exp in opt_dates:
            for k in strikes:
                for ot in ("CE", "PE"):
                    sym = option_symbol(name, exp, k, ot)
                    self._add(Instrument(sym, spec["fo"], name, ot, expiry=exp, strike=k, **common))

    def get(self, exchange: str, symbol: str) -> Instrument | None:
        return self.items.get((exchange, symbol))

    def strikes(self, name: str, expiry: dt.date) -> list[float]:
        fo = UNDERLYINGS[name]["fo"]
        out = {i.strike for i in self.items.values()
               if i.name == name and i.exchange == fo and i.is_option and i.expiry == expiry}
        return sorted(out)

    def search(self, query: str, exchange: str | None) -> list[Instrument]:
        terms = [t.upper() for t in query.split() if t]
        out = []
        for inst in self.items.values():
            if exchange and inst.exchange != exchange:
                continue
            if all(t in inst.symbol for t in terms):
                out.append(inst)
        return out
