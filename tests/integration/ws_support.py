"""Helpers for the WebSocket integration tests: a data plane in front of the demo backend with
a `ws` route (websocket: true, required cookie sess_*), an `api` route without WebSockets,
and python3-websockets clients. Every wait has a deadline."""

import asyncio
import json

import websockets

import dp_support as dp
import support

SITE_ORIGIN = "http://127.0.0.1"
COOKIE = "sess_abc=tok123; theme=dark"


def ws_bootstrap(backend_ports, ws_policy=None, route_ws_policy=None, extra_routes=(),
                 drain=None, cookie_policy=None):
    routes = [dp.route("ws", "/ws/", "backend", websocket=True,
                       **({"websocket_policy": route_ws_policy} if route_ws_policy else {})),
              *extra_routes,
              dp.route("api", "/", "backend")]
    doc = dp.bootstrap([dp.cluster("backend", backend_ports)], routes)
    snap = doc["snapshot"]
    snap["site"] = {"origins": [SITE_ORIGIN]}
    snap["websocket_policy"] = ws_policy or {"required_cookie": "sess_*"}
    if cookie_policy:
        snap["cookie_policy"] = cookie_policy
    if drain:
        doc["drain"] = drain
    return doc


def backend_stats(port):
    status, _, body = support.http_get(f"http://127.0.0.1:{port}/api/v1/stats")
    assert status == 200
    return json.loads(body)


def connect(port, path="/ws/chat/1", origin=SITE_ORIGIN, cookie=COOKIE, **kwargs):
    headers = {"Cookie": cookie} if cookie else {}
    return websockets.connect(f"ws://127.0.0.1:{port}{path}", origin=origin,
                                    extra_headers=headers, open_timeout=10, close_timeout=10,
                                    max_size=None, **kwargs)


async def hello(ws):
    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert msg["type"] == "hello", msg
    return msg


async def status_of(port, **kwargs):
    """The HTTP status an upgrade is refused with, or 101."""
    try:
        ws = await connect(port, **kwargs)
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    return 101
