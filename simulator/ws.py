"""WebSocket proxy emulation (OpenAlgo websocket_proxy protocol): the aiohttp endpoint.

Each connection becomes a ``ws_hub.Client`` of the ``Hub``; its text messages go to ``ws_proto``.
"""
from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web

from .engine import Sim
from .ws_hub import Client, Hub
from .ws_proto import handle_message


async def serve_client(hub: Hub, request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4 * 1024 * 1024)
    await ws.prepare(request)
    c = Client(ws, hub)
    hub.clients.add(c)
    timer = asyncio.get_running_loop().call_later(hub.sim.cfg.ws_auth_timeout, _auth_timeout, c)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                handle_message(hub, c, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        timer.cancel()
        hub.drop_client(c)
    return ws


def _auth_timeout(c: Client) -> None:
    if c.account is None and not c.ws.closed:
        asyncio.get_running_loop().create_task(c.ws.close(code=4401, message=b"auth timeout"))


def setup_ws(app: web.Application, sim: Sim) -> Hub:
    hub = Hub(sim)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        return await serve_client(hub, request)

    app.router.add_get("/", handler)
    app.router.add_get("/ws", handler)
    return hub
