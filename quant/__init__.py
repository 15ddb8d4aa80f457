"""Pure option maths (Black-Scholes price, implied volatility, greeks) shared by db/ (strike selection by delta)
and ui/ (payoff, chain, greeks): standard library only, importing nothing of ours."""
