"""Fixtures for the simulator tests (the only conftest of tests/simulator)."""

from __future__ import annotations

import itertools
import json

import pytest
import websocket

from simulator.testing import SimProcess

_names = itertools.count(1)


@pytest.fixture(scope="session")
def sim():
    """A live simulator: random walk running at 10 Hz."""
    with SimProcess(seed=11, tick_hz=10) as s:
        yield s


@pytest.fixture(scope="session")
def fsim():
    """A frozen simulator: prices move only through control calls (deterministic fills)."""
    with SimProcess(seed=5, args=["--frozen"]) as s:
        yield s


def _new_key(s: SimProcess, prefix: str, capital=None) -> str:
    return s.create_account(f"{prefix}{next(_names)}", capital=capital)


@pytest.fixture
def key(fsim):
    """A fresh account (own funds, orders, rate-limit buckets) on the frozen sim."""
    return _new_key(fsim, "acct")


@pytest.fixture
def live_key(sim):
    return _new_key(sim, "live")


@pytest.fixture
def new_key():
    return _new_key


class WS:
    """Tiny synchronous WS client for tests."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.ws = websocket.create_connection(url, timeout=timeout)

    def send(self, obj) -> None:
        self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def recv(self) -> dict:
        return json.loads(self.ws.recv())

    def recv_until(self, pred, limit: int = 500) -> dict:
        for _ in range(limit):
            m = self.recv()
            if pred(m):
                return m
        raise AssertionError("expected message not received")

    def auth(self, key: str) -> dict:
        self.send({"action": "authenticate", "api_key": key})
        return self.recv()

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def ws_factory():
    opened = []

    def make(url: str, timeout: float = 5.0) -> WS:
        c = WS(url, timeout)
        opened.append(c)
        return c

    yield make
    for c in opened:
        try:
            c.close()
        except Exception:
            pass
