"""Black-Scholes for the renderers: the one copy lives in quant/black_scholes.py (db/ selects strikes by delta with
it too); this module only names it for ui/ and the pages."""
from quant.black_scholes import (IST, RISK_FREE, bs_price, greeks, implied_vol, norm_cdf, norm_pdf, vega,
                                 years_to_expiry)

__all__ = ["IST", "RISK_FREE", "bs_price", "greeks", "implied_vol", "norm_cdf", "norm_pdf", "vega",
           "years_to_expiry"]
