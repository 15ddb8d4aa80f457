"""ui/black_scholes.greeks against finite differences of the price, and ui/greeks sums (pure functions)."""
from datetime import datetime

import pandas as pd
import pytest

from ui.black_scholes import bs_price, greeks
from ui.greeks import leg_greeks, net


@pytest.mark.parametrize("kind, strike", [("CE", 26000), ("PE", 26000), ("CE", 26500), ("PE", 25500)])
def test_greeks_when_compared_with_finite_differences_then_match(kind, strike):
    s, t, v = 26000.0, 10 / 365, 0.13
    g = greeks(s, strike, t, v, kind)
    h = 0.5
    assert g["delta"] == pytest.approx((bs_price(s + h, strike, t, v, kind) - bs_price(s - h, strike, t, v, kind))
                                       / (2 * h), rel=1e-4)
    assert g["gamma"] == pytest.approx((bs_price(s + 5, strike, t, v, kind) - 2 * bs_price(s, strike, t, v, kind)
                                        + bs_price(s - 5, strike, t, v, kind)) / 25, rel=1e-2)
    assert g["vega"] == pytest.approx(bs_price(s, strike, t, v + 0.0005, kind) * 10
                                      - bs_price(s, strike, t, v - 0.0005, kind) * 10, rel=1e-3)
    dt = 1e-4
    assert g["theta"] == pytest.approx((bs_price(s, strike, t - dt, v, kind) - bs_price(s, strike, t, v, kind))
                                       / dt / 365, rel=1e-2)


def test_leg_greeks_when_a_leg_has_no_price_then_nan_and_counted_unpriced():
    now = datetime(2026, 1, 5, 4, 0)
    legs = pd.DataFrame([
        dict(run_id=1, account="a", strategy="s", leg_no=1, symbol="X", action="SELL", quantity=65, kind="CE",
             strike=26000.0, expiry="13-JAN-26", ltp=bs_price(26000, 26000, 8.4 / 365, 0.12, "CE"), spot=26000.0),
        dict(run_id=1, account="a", strategy="s", leg_no=2, symbol="Y", action="BUY", quantity=65, kind="FUT",
             strike=0.0, expiry="27-JAN-26", ltp=26100.0, spot=26000.0),
        dict(run_id=1, account="a", strategy="s", leg_no=3, symbol="Z", action="BUY", quantity=65, kind="PE",
             strike=26000.0, expiry="13-JAN-26", ltp=None, spot=26000.0)])
    g = leg_greeks(legs, now)
    assert g.loc[0, "iv"] == pytest.approx(12.0, abs=0.2) and -40 < g.loc[0, "delta"] < -25
    assert g.loc[1, "delta"] == 65 and pd.isna(g.loc[2, "delta"])
    tot = net(g).iloc[0]
    assert tot["unpriced"] == 1 and tot["delta"] == pytest.approx(g.loc[0, "delta"] + 65)
