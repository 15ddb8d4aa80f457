"""OpenAlgo-protocol paper-market simulator (REST + WebSocket)."""

__all__ = ["__version__"]
__version__ = "1.0.0"
