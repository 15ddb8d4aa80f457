"""Background service: market data, orders, risk. Entry point: `python -m services`."""
