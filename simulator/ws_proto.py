"""Handling of client -> server WebSocket messages (actions, acks, errors)."""

from __future__ import annotations

import json

from .timeutil import epoch_ms
from .ws_hub import BROKER, LABELS, Client, Hub, error, parse_mode


def handle_message(hub: Hub, c: Client, text: str) -> None:
    try:
        msg = json.loads(text)
        if not isinstance(msg, dict):
            raise ValueError
    except ValueError:
        c.send_json(error("INVALID_JSON", "Invalid JSON message"))
        return
    action = msg.get("action") or msg.get("type")
    if action in ("authenticate", "auth"):
        return authenticate(hub, c, msg)
    if action == "ping":
        return c.send_json(pong(msg))
    if action == "get_supported_brokers":
        return c.send_json({"type": "supported_brokers", "status": "success", "brokers": [BROKER], "count": 1})
    if action not in HANDLERS:
        return c.send_json(error("INVALID_ACTION", f"Invalid action: {action}"))
    if c.account is None:
        return c.send_json(error("NOT_AUTHENTICATED", "You must authenticate first"))
    HANDLERS[action](hub, c, msg)


def pong(msg: dict) -> dict:
    out = {"type": "pong", "status": "success", "server_timestamp": epoch_ms(),
           "client_timestamp": msg.get("timestamp")}
    if "_pingId" in msg:
        out["_pingId"] = msg["_pingId"]
    return out


def authenticate(hub: Hub, c: Client, msg: dict) -> None:
    key = msg.get("api_key") or msg.get("apikey")
    acct = hub.sim.broker.by_key.get(key) if isinstance(key, str) else None
    if acct is None or hub.sim.faults.key_revoked(key, acct.name):
        return c.send_json(error("AUTHENTICATION_ERROR", "Invalid API key"))
    c.account = acct
    c.send_json({"type": "auth", "status": "success", "message": "Authentication successful",
                 "broker": BROKER, "user_id": acct.name,
                 "supported_features": {"ltp": True, "quote": True, "depth": True}})


def _symbols(msg: dict) -> list[dict] | None:
    syms = msg.get("symbols")
    if isinstance(syms, list):
        return [s for s in syms if isinstance(s, dict)]
    if msg.get("symbol") and msg.get("exchange"):
        return [{"symbol": msg["symbol"], "exchange": msg["exchange"], "mode": msg.get("mode")}]
    return None


def subscribe(hub: Hub, c: Client, msg: dict) -> None:
    mode = parse_mode(msg.get("mode", "Quote"))
    if mode is None:
        return c.send_json(error("INVALID_MODE", f"Invalid mode: {msg.get('mode')}"))
    syms = _symbols(msg)
    if not syms:
        return c.send_json(error("INVALID_PARAMETERS", "At least one symbol must be specified"))
    depth = msg.get("depth", 5)
    results, ok_keys, failed = [], [], False
    for s in syms:
        sym, ex = s.get("symbol"), s.get("exchange")
        if not sym or not ex:
            continue
        entry = {"symbol": sym, "exchange": ex}
        if hub.sim.market.get(ex, sym) is None:
            failed = True
            entry.update(status="error", message=f"Symbol {sym} not found on {ex}", broker=BROKER)
        else:
            hub.add_sub(c, (ex, sym), mode)
            ok_keys.append((ex, sym))
            entry.update(status="success", mode=LABELS[mode], depth=depth, broker=BROKER)
        results.append(entry)
    ack = {"type": "subscribe", "status": "partial" if failed else "success", "subscriptions": results,
           "message": "Subscription processing complete", "broker": BROKER}
    if "request_id" in msg:
        ack["request_id"] = msg["request_id"]
    c.send_json(ack)
    muted, scoped = hub._muted()
    if not muted and c.account.name not in scoped:
        for key in ok_keys:  # initial snapshot so a frozen market still shows a price
            c.send(hub.envelope(key, mode))
            hub.sim.stats.ticks_sent += 1


def unsubscribe(hub: Hub, c: Client, msg: dict) -> None:
    if msg.get("unsubscribe_all") is True:
        return unsubscribe_all(hub, c, msg)
    syms = _symbols(msg)
    if not syms:
        return c.send_json(error("INVALID_PARAMETERS", "Either symbols or unsubscribe_all is required"))
    ok, bad = [], []
    for s in syms:
        sym, ex = s.get("symbol"), s.get("exchange")
        if not sym or not ex:
            continue
        mode = parse_mode(s.get("mode", msg.get("mode", 2)))
        entry = {"symbol": sym, "exchange": ex}
        if mode is not None and hub.remove_sub(c, (ex, sym), mode):
            ok.append(dict(entry, status="success", broker=BROKER))
        else:
            bad.append(dict(entry, status="error", message="Not subscribed", broker=BROKER))
    _unsub_ack(c, msg, ok, bad)


def unsubscribe_all(hub: Hub, c: Client, msg: dict) -> None:
    ok = []
    for (ex, sym) in list(c.subs):
        hub.remove_sub(c, (ex, sym), None)
        ok.append({"symbol": sym, "exchange": ex, "status": "success", "broker": BROKER})
    _unsub_ack(c, msg, ok, [])


def _unsub_ack(c: Client, msg: dict, ok: list, bad: list) -> None:
    status = "success" if not bad else ("partial" if ok else "error")
    ack = {"type": "unsubscribe", "status": status, "message": "Unsubscription processing complete",
           "successful": ok, "failed": bad, "broker": BROKER}
    if "request_id" in msg:
        ack["request_id"] = msg["request_id"]
    c.send_json(ack)


def orders_sub(on: bool):
    def fn(hub: Hub, c: Client, msg: dict) -> None:
        c.orders = on
        ack = {"type": "subscribe_orders" if on else "unsubscribe_orders", "status": "success",
               "message": "Subscribed to order updates" if on else "Unsubscribed from order updates"}
        if "request_id" in msg:
            ack["request_id"] = msg["request_id"]
        c.send_json(ack)
    return fn


def broker_info(hub: Hub, c: Client, msg: dict) -> None:
    c.send_json({"type": "broker_info", "status": "success", "broker": BROKER,
                 "adapter_status": "connected", "user_id": c.account.name})


HANDLERS = {"subscribe": subscribe, "unsubscribe": unsubscribe, "unsubscribe_all": unsubscribe_all,
            "subscribe_orders": orders_sub(True), "unsubscribe_orders": orders_sub(False),
            "get_broker_info": broker_info}
