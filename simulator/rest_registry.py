"""The registry of /api/v1 endpoints: ``rest_data`` and ``rest_orders`` register into it, ``rest`` serves it.

It sits apart from ``rest`` so the endpoint modules import the registry and ``rest`` imports them: one way.
"""
from __future__ import annotations

ENDPOINTS: dict[str, tuple] = {}  # name -> (schema, family, fn, sort_keys)


def endpoint(name: str, schema: dict, family: str, sort_keys: bool = True):
    """Register ``fn(sim, acct, data) -> (http_code, body)`` (or a coroutine) as POST /api/v1/<name>.

    ``family`` picks the shape of a validation error (OpenAlgo's endpoints answer in three styles, "A"/"B"/"C");
    ``sort_keys`` False keeps the body's key order on the wire."""
    def deco(fn):
        ENDPOINTS[name] = (schema, family, fn, sort_keys)
        return fn
    return deco
