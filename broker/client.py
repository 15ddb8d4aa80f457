"""OpenAlgo REST v1 client (httpx; placeorder to an http:// gateway over http.client, see broker/orderconn.py).

- connect/read timeouts (default 3 s / 10 s);
- per-account token buckets: one for order calls, one for reads (the poller adds its own 1 req/s pacing);
- reads are retried with exponential backoff (base 2 s, cap 60 s) on network errors, 5xx and 429;
- placeorder is NEVER retried: a timeout or 5xx after sending raises OrderOutcomeUnknown, a 4xx/`status:error`
  raises OrderRejected, a 429 raises RateLimited (refused before processing: nothing was placed);
- 403 raises AuthError; the API key never appears in any message.
"""
from __future__ import annotations

import html
import json
import logging
import random
import re
import time

import httpx

from broker.errors import (AuthError, BrokerError, ConfigError, OrderNotFound, OrderOutcomeUnknown, OrderRejected,
                           RateLimited, TemporaryBrokerError)
from broker.orderconn import MaybeSent, NotSent, OrderConnections
from broker.ratelimit import TokenBucket

log = logging.getLogger(__name__)
ORDER_ENDPOINTS = {"placeorder", "modifyorder", "cancelorder", "placesmartorder"}
# What one call came to, for the observer (Service Health): answered ok; answered with a refusal of the request
# itself (an order rejected, a 4xx) - the gateway is healthy; rate limited; key rejected (403); no such path (404);
# the gateway failed (5xx); no answer at all (timeout, connection refused, reset).
CALL_OUTCOMES = ("ok", "refused", "rate_limited", "auth", "not_found", "server_error", "network")


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>|<h1[^>]*>(.*?)</h1>", re.IGNORECASE | re.DOTALL)
HOST_HINT = "is the host URL the OpenAlgo root (e.g. http://127.0.0.1:5000, without /api/v1)?"


def _non_json_message(code: int, raw: bytes) -> str:
    """A short message for a body that is not JSON: an HTML error page (a wrong path on the gateway, a proxy) is
    reduced to its status and title, never shown whole."""
    text = raw.decode("utf-8", "replace")
    if "<html" in text[:500].lower() or "<!doctype" in text[:100].lower():
        m = _TITLE.search(text)
        title = re.sub(r"\s+", " ", html.unescape(next(g for g in m.groups() if g))).strip() if m else ""
        if not title:
            return f"HTTP {code}"
        return f"HTTP {title}" if title.startswith(str(code)) else f"HTTP {code} {title}"
    return text.strip()[:200] or f"HTTP {code}"


def _outcome_of(exc: BrokerError) -> str:
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, AuthError):
        return "auth"
    if isinstance(exc, OrderNotFound):
        return "not_found"
    if isinstance(exc, TemporaryBrokerError):
        return "server_error"
    return "refused"


def _message(body) -> str:
    if isinstance(body, dict):
        msg = body.get("message", body)
        return msg if isinstance(msg, str) else json.dumps(msg)[:300]
    return str(body)[:300]


class OrderCall:
    """A placeorder whose request is written (over httpx: about to be, in ``result``)."""

    __slots__ = ("_finish",)

    def __init__(self, finish):
        self._finish = finish

    def result(self) -> str:
        """The broker's order id; the same exceptions as ``OpenAlgoClient.placeorder``. Call it once."""
        try:
            body = self._finish()
        except NotSent as exc:  # never connected: nothing was sent
            raise TemporaryBrokerError(f"placeorder: cannot connect ({exc})") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never connected: nothing was sent
            raise TemporaryBrokerError(f"placeorder: cannot connect ({type(exc).__name__})") from None
        except MaybeSent as exc:
            raise OrderOutcomeUnknown(f"placeorder: no answer ({exc}); outcome unknown") from None
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise OrderOutcomeUnknown(f"placeorder: no answer ({type(exc).__name__}); outcome unknown") from None
        except RateLimited:
            raise
        except TemporaryBrokerError as exc:
            raise OrderOutcomeUnknown(f"placeorder: {exc.message}; outcome unknown", exc.status_code) from None
        except OrderNotFound as exc:
            # no such path on the gateway (or its broker module is missing): the request was not processed
            detail = exc.message if exc.message.startswith("HTTP") else f"HTTP 404: {exc.message}".rstrip(": ")
            raise OrderRejected(f"the gateway has no placeorder here ({detail}); {HOST_HINT}", 404) from None
        orderid = body.get("orderid")
        if not orderid:
            raise OrderRejected(_message(body) or "no orderid in response")
        return str(orderid)


class OpenAlgoClient:
    def __init__(self, host_url: str, api_key: str, *, connect_timeout: float = 3.0, read_timeout: float = 10.0,
                 order_rate: float = 8.0, read_rate: float = 20.0, retries: int = 4, backoff_base: float = 2.0,
                 backoff_max: float = 60.0, sleep=time.sleep, name: str = "", observer=None):
        """``observer(endpoint, http_status | None, duration_ms, outcome, error)`` is told of every call after it
        ended (outcome from CALL_OUTCOMES; error text never holds the key). It must be cheap: it runs on the
        caller's thread, placeorder's included."""
        if not host_url.startswith(("http://", "https://")):
            raise ConfigError("host URL must start with http:// or https://")
        self.base = host_url.rstrip("/") + "/api/v1/"
        self._key = api_key
        self.name = name or host_url
        self.retries, self.backoff_base, self.backoff_max = retries, backoff_base, backoff_max
        self.sleep = sleep
        self.order_bucket = TokenBucket(order_rate, sleep=sleep)
        self.read_bucket = TokenBucket(read_rate, sleep=sleep)
        self.http = httpx.Client(timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
                                 limits=httpx.Limits(max_connections=20, max_keepalive_connections=10))
        # placeorder on a plain-HTTP gateway (OpenAlgo on this machine or the LAN): the leaner http.client path
        self.orders = (OrderConnections(self.base, connect_timeout, read_timeout)
                       if host_url.startswith("http://") else None)
        self.calls: dict[str, int] = {}
        self.observer = observer

    def close(self) -> None:
        self.http.close()
        if self.orders is not None:
            self.orders.close()

    def __repr__(self) -> str:  # never show the key
        return f"OpenAlgoClient({self.name})"

    # ---- transport -------------------------------------------------------------------------------------------
    def _post_once(self, endpoint: str, payload: dict, lean: bool = False) -> dict:
        """One POST. ``lean``: through ``self.orders`` (raises NotSent / MaybeSent), else httpx (its errors)."""
        return self._start_post(endpoint, payload, lean)()

    def _start_post(self, endpoint: str, payload: dict, lean: bool, wait: bool = True):
        """Take the rate token and, ``lean``, write the request now; returns the function that reads and parses the
        answer (raising what ``_post_once`` raises, a failed write included). ``wait=False`` does not wait: None,
        with nothing sent and no token taken, unless the request can go at once (lean, a token free, a kept-alive
        connection idle or a new one made within a few ms: OrderConnections' quick connect)."""
        bucket = self.order_bucket if endpoint in ORDER_ENDPOINTS else self.read_bucket
        sent = None
        if wait:
            bucket.acquire()
        elif not lean:
            return None
        t0 = time.perf_counter()
        if lean:
            body = json.dumps({"apikey": self._key, **payload}).encode()
            try:
                sent = self.orders.send(endpoint, body, connect=True if wait else "quick",
                                        admit=None if wait else bucket.try_acquire)
            except Exception as exc:  # noqa: BLE001 - raised by the answer, where every caller handles it
                sent = exc
            if sent is None:
                return None
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        return lambda: self._answer(endpoint, payload, bucket, t0, sent)

    def _answer(self, endpoint: str, payload: dict, bucket, t0: float, sent) -> dict:
        if self.observer is None:
            return self._answer_raw(endpoint, payload, bucket, sent)
        try:
            body = self._answer_raw(endpoint, payload, bucket, sent)
        except BrokerError as exc:
            self._observe(endpoint, exc.status_code, t0, _outcome_of(exc), exc.message)
            raise
        except Exception as exc:
            self._observe(endpoint, None, t0, "network", type(exc).__name__)
            raise
        self._observe(endpoint, 200, t0, "ok", "")
        return body

    def _observe(self, endpoint: str, code: int | None, t0: float, outcome: str, error: str) -> None:
        try:
            self.observer(endpoint, code, (time.perf_counter() - t0) * 1000.0, outcome, error[:300])
        except Exception:  # noqa: BLE001 - recording a call must never fail the call
            log.exception("broker call observer failed")

    def _answer_raw(self, endpoint: str, payload: dict, bucket, sent) -> dict:
        if isinstance(sent, BaseException):
            raise sent
        if sent is not None:
            code, raw = sent.answer()
        else:
            resp = self.http.post(self.base + endpoint, json={"apikey": self._key, **payload})
            code, raw = resp.status_code, resp.content
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"message": _non_json_message(code, raw)}
        if code == 429:
            bucket.block_for(1.0)
            raise RateLimited(f"rate limited by the server ({_message(body)})", code)
        if code == 403:
            raise AuthError(_message(body) or "Invalid openalgo apikey", code)
        if code >= 500:
            raise TemporaryBrokerError(f"server error {code}: {_message(body)}", code)
        if code == 404:
            raise OrderNotFound(_message(body), code)
        if code >= 400 or (isinstance(body, dict) and body.get("status") == "error"):
            raise OrderRejected(_message(body), code)
        return body

    def _read(self, endpoint: str, payload: dict | None = None) -> dict:
        """Idempotent read with exponential backoff + jitter on temporary errors."""
        attempt = 0
        while True:
            try:
                return self._post_once(endpoint, payload or {})
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                err: BrokerError = TemporaryBrokerError(f"{endpoint}: {type(exc).__name__}")
            except TemporaryBrokerError as exc:
                err = exc
            if attempt >= self.retries:
                raise err
            delay = min(self.backoff_max, self.backoff_base * (2 ** attempt)) * (0.5 + random.random() / 2)
            log.warning("%s %s failed (%s); retry %d in %.1fs", self.name, endpoint, err.message, attempt + 1, delay)
            self.sleep(delay)
            attempt += 1

    # ---- orders (never retried) -----------------------------------------------------------------------------
    def placeorder(self, *, strategy: str, symbol: str, exchange: str, action: str, quantity: int,
                   pricetype: str = "MARKET", product: str = "MIS", price: float = 0.0, trigger_price: float = 0.0,
                   disclosed_quantity: int = 0) -> str:
        return self.start_placeorder(strategy=strategy, symbol=symbol, exchange=exchange, action=action,
                                     quantity=quantity, pricetype=pricetype, product=product, price=price,
                                     trigger_price=trigger_price, disclosed_quantity=disclosed_quantity).result()

    def start_placeorder(self, *, strategy: str, symbol: str, exchange: str, action: str, quantity: int,
                         pricetype: str = "MARKET", product: str = "MIS", price: float = 0.0,
                         trigger_price: float = 0.0, disclosed_quantity: int = 0, wait: bool = True):
        """placeorder in two halves: the request is written now, ``.result()`` of the returned ``OrderCall`` reads
        the answer (on any thread) and returns the order id or raises as placeorder does. ``wait=False``: only
        if it can be written at once (see ``_start_post``), else None and nothing was sent: a thread that must
        not wait (the market-data thread posting a risk exit) writes it itself and leaves the answer to another."""
        payload = dict(strategy=strategy, symbol=symbol, exchange=exchange, action=action, quantity=quantity,
                       pricetype=pricetype, product=product, price=price, trigger_price=trigger_price,
                       disclosed_quantity=disclosed_quantity)
        finish = self._start_post("placeorder", payload, lean=self.orders is not None, wait=wait)
        return None if finish is None else OrderCall(finish)

    def modifyorder(self, orderid: str, *, strategy: str, symbol: str, exchange: str, action: str, product: str,
                    pricetype: str, quantity: int, price: float = 0.0, trigger_price: float = 0.0,
                    disclosed_quantity: int = 0) -> str:
        """POST modifyorder (every field is required by OpenAlgo's schema). Never retried: a refusal raises
        OrderRejected (OrderNotFound for an unknown id), no connection TemporaryBrokerError (not sent), and no
        answer, a timeout or a 5xx OrderOutcomeUnknown (the order may or may not have changed; the orderbook
        says). Returns the order id."""
        payload = dict(strategy=strategy, orderid=orderid, symbol=symbol, exchange=exchange, action=action,
                       product=product, pricetype=pricetype, quantity=quantity, price=price,
                       trigger_price=trigger_price, disclosed_quantity=disclosed_quantity)
        body = self._action_once("modifyorder", payload)
        return str(body.get("orderid") or orderid)

    def closeposition(self, strategy: str = "AlgoMirror") -> dict:
        """POST closeposition: the gateway squares off every open position of the account with MARKET orders.
        Never retried (it places orders); errors as modifyorder's. Returns the body (message, counts)."""
        return self._action_once("closeposition", {"strategy": strategy})

    def _action_once(self, endpoint: str, payload: dict) -> dict:
        try:
            return self._post_once(endpoint, payload)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TemporaryBrokerError(f"{endpoint}: cannot connect ({type(exc).__name__})") from None
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise OrderOutcomeUnknown(f"{endpoint}: no answer ({type(exc).__name__}); outcome unknown") from None
        except (RateLimited, AuthError):
            raise
        except TemporaryBrokerError as exc:
            raise OrderOutcomeUnknown(f"{endpoint}: {exc.message}; outcome unknown", exc.status_code) from None

    def cancelorder(self, orderid: str, strategy: str = "AlgoMirror") -> dict:
        return self._read("cancelorder", {"orderid": orderid, "strategy": strategy})

    # ---- reads ----------------------------------------------------------------------------------------------
    def ping(self) -> dict:
        return self._read("ping").get("data", {})

    def funds(self) -> dict:
        return self._read("funds").get("data", {})

    def orderbook(self) -> list[dict]:
        data = self._read("orderbook").get("data") or {}
        return list(data.get("orders") or []) if isinstance(data, dict) else list(data)

    def tradebook(self) -> list[dict]:
        return list(self._read("tradebook").get("data") or [])

    def positionbook(self) -> list[dict]:
        return list(self._read("positionbook").get("data") or [])

    def holdings(self) -> list[dict]:
        data = self._read("holdings").get("data") or {}
        return list(data.get("holdings") or []) if isinstance(data, dict) else list(data)

    def orderstatus(self, orderid: str, strategy: str = "AlgoMirror") -> dict:
        return self._read("orderstatus", {"orderid": orderid, "strategy": strategy}).get("data", {})

    def quotes(self, symbol: str, exchange: str) -> dict:
        return self._read("quotes", {"symbol": symbol, "exchange": exchange}).get("data", {})

    def multiquotes(self, symbols: list[dict]) -> list[dict]:
        return list(self._read("multiquotes", {"symbols": symbols}).get("results") or [])

    def depth(self, symbol: str, exchange: str) -> dict:
        return self._read("depth", {"symbol": symbol, "exchange": exchange}).get("data", {})

    def expiry(self, symbol: str, exchange: str, instrumenttype: str = "options") -> list[str]:
        return list(self._read("expiry", {"symbol": symbol, "exchange": exchange,
                                          "instrumenttype": instrumenttype}).get("data") or [])

    def search(self, query: str, exchange: str | None = None) -> list[dict]:
        payload = {"query": query, **({"exchange": exchange} if exchange else {})}
        return list(self._read("search", payload).get("data") or [])

    def optiongreeks(self, symbol: str, exchange: str, interest_rate: float | None = None) -> dict:
        """The whole /optiongreeks body: implied_volatility, greeks {delta, gamma, theta, vega, rho}, spot_price..."""
        payload = {"symbol": symbol, "exchange": exchange,
                   **({"interest_rate": interest_rate} if interest_rate is not None else {})}
        return self._read("optiongreeks", payload)

    def margin(self, positions: list[dict]) -> dict:
        """Basket margin: {total_margin_required, span_margin, exposure_margin, margin_benefit?}. Each position is
        {symbol, exchange, action, quantity, product, pricetype, price?, trigger_price?}; OpenAlgo's schema takes
        the numbers as strings, so they are sent so. A gateway whose broker has no margin API answers 404: a
        BrokerError saying so (never retried: it will not change)."""
        sent = [{**p, **{k: str(p.get(k, 0) or 0) for k in ("quantity", "price", "trigger_price")}}
                for p in positions]
        try:
            return dict(self._read("margin", {"positions": sent}).get("data") or {})
        except OrderNotFound as exc:
            raise BrokerError(f"margin calculation not available on this gateway ({exc.message})", 404) from None

    def instruments(self, exchange: str) -> list[dict]:
        """GET /instruments?apikey&exchange (format json)."""
        attempt = 0
        while True:
            self.read_bucket.acquire()
            try:
                resp = self.http.get(self.base + "instruments", params={"apikey": self._key, "exchange": exchange})
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if attempt >= self.retries:
                    raise TemporaryBrokerError(f"instruments: {type(exc).__name__}") from None
                self.sleep(min(self.backoff_max, self.backoff_base * 2 ** attempt))
                attempt += 1
                continue
            if resp.status_code == 403:
                raise AuthError("Invalid openalgo apikey", 403)
            if resp.status_code != 200:
                raise BrokerError(f"instruments {exchange}: HTTP {resp.status_code}", resp.status_code)
            return list(resp.json().get("data") or [])
