"""Tiny echo applications for the real-backend tests: the same behaviour as a WSGI app (for
gunicorn) and as an ASGI app (for uvicorn). GET answers a JSON description of the request;
POST answers its body byte for byte. Both say which client port (the node's upstream
connection) carried the request, so a test can see pooled connections being replaced."""

import hashlib
import json


def _describe(method, path, query, client_port, body):
    return json.dumps({"method": method, "path": path, "query": query,
                       "client_port": client_port, "body_bytes": len(body),
                       "body_sha256": hashlib.sha256(body).hexdigest()}).encode()


def wsgi_app(environ, start_response):
    method = environ["REQUEST_METHOD"]
    body = environ["wsgi.input"].read()
    port = int(environ.get("REMOTE_PORT") or 0)
    if method == "POST":
        out = body
        ctype = "application/octet-stream"
    else:
        out = _describe(method, environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
                        port, body)
        ctype = "application/json"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(out))),
                              ("X-Client-Port", str(port))])
    return [out]


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    method = scope["method"]
    port = (scope.get("client") or ("", 0))[1]
    if method == "POST":
        out, ctype = body, b"application/octet-stream"
    else:
        out = _describe(method, scope["path"], scope["query_string"].decode(), port, body)
        ctype = b"application/json"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", ctype),
                            (b"content-length", str(len(out)).encode()),
                            (b"x-client-port", str(port).encode())]})
    await send({"type": "http.response.body", "body": out})
