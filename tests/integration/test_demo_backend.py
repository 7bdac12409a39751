"""Integration tests of deploy/demo/demo_backend: the real binary on 127.0.0.1, ephemeral
ports via --port-file, HTTP through http.client / raw sockets and WebSockets through Debian's
python3-websockets (10.4, legacy asyncio API). Every wait has a deadline."""

import asyncio
import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import struct
import threading
import time

import pytest
import websockets

import support

TIMEOUT = 10.0


def start_backend(procs, *extra, frontend=True):
    args = [support.binary("demo_backend"), "--port", "0"]
    if frontend:
        args += ["--frontend-port", "0"]
    p = procs(args + list(extra))
    ports = p.wait_ports()
    return p, ports["api"], ports.get("frontend")


def request(port, method, target, headers=None, body=None, conn=None, encode_chunked=False):
    """One request; returns (status, header list, body bytes). Reuses `conn` when given."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        c.request(method, target, body=body, headers=headers or {}, encode_chunked=encode_chunked)
        resp = c.getresponse()
        data = resp.read()
        return resp.status, resp.getheaders(), data
    finally:
        if own:
            c.close()


def get_json(port, target, headers=None):
    status, _, data = request(port, "GET", target, headers)
    return status, json.loads(data)


def header_values(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def raw_exchange(port, payload, read_limit=65536):
    """Sends raw bytes, returns everything the server answers before closing (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(payload)
        chunks = []
        total = 0
        deadline = time.monotonic() + TIMEOUT
        while total < read_limit and time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
            total += len(data)
        return b"".join(chunks)


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def uses_asan(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def ws_url(port, chat="room1"):
    return f"ws://127.0.0.1:{port}/ws/chat/{chat}"


# ---------------------------------------------------------------------------------------
# HTTP API


def test_help_and_bad_flags():
    binary = support.binary("demo_backend")
    import subprocess
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0
    for flag in ["--address", "--port", "--frontend-port", "--port-file", "--instance",
                 "--threads", "--cookie-domain", "--cookie-secure", "--cookie-samesite",
                 "--cookie-path"]:
        assert flag in out.stdout
    for bad in (["--bogus"], ["--port", "x"], ["--cookie-samesite", "Sometimes"],
                ["--threads", "0"], ["--port"]):
        out = subprocess.run([binary] + bad, capture_output=True, text=True, timeout=TIMEOUT)
        assert out.returncode == 2, bad
        assert out.stderr.strip(), bad


def test_echo_returns_headers_and_cookies_in_order(procs):
    _, api, _ = start_backend(procs, "--instance", "alpha")
    # http.client keeps duplicates and order when headers are given as putheader calls.
    c = http.client.HTTPConnection("127.0.0.1", api, timeout=TIMEOUT)
    c.putrequest("PUT", "/api/v1/echo?q=1&r=two", skip_accept_encoding=True)
    c.putheader("X-First", "1")
    c.putheader("Cookie", "b=2; sess_abc=s3cr3t")
    c.putheader("X-Dup", "one")
    c.putheader("X-Dup", "two")
    c.putheader("Cookie", "a=1")
    c.putheader("Content-Length", "5")
    c.endheaders(b"hello")
    resp = c.getresponse()
    body = json.loads(resp.read())
    c.close()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/json"
    assert body["instance"] == "alpha"
    assert body["method"] == "PUT"
    assert body["target"] == "/api/v1/echo?q=1&r=two"
    names = [h[0] for h in body["headers"]]
    assert names == ["Host", "X-First", "Cookie", "X-Dup", "X-Dup", "Cookie", "Content-Length"]
    assert body["headers"][3:5] == [["X-Dup", "one"], ["X-Dup", "two"]]
    assert list(body["cookies"].items()) == [("b", "2"), ("sess_abc", "s3cr3t"), ("a", "1")]
    assert body["body_bytes"] == 5
    assert body["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PATCH"])
def test_any_api_path_echoes(procs, method):
    _, api, _ = start_backend(procs, frontend=False)
    status, _, data = request(api, method, "/api/v1/some/other/path", body=b"x" * 10)
    assert status == 200
    body = json.loads(data)
    assert body["method"] == method and body["target"] == "/api/v1/some/other/path"


def test_head_echo_has_length_but_no_body(procs):
    _, api, _ = start_backend(procs, frontend=False)
    c = http.client.HTTPConnection("127.0.0.1", api, timeout=TIMEOUT)
    status, headers, data = request(api, "HEAD", "/api/v1/echo", conn=c)
    assert status == 200 and data == b""
    assert int(header_values(headers, "Content-Length")[0]) > 0
    # The connection stays usable: no stray body bytes were sent.
    status, _, data = request(api, "GET", "/healthz", conn=c)
    assert (status, data) == (200, b"ok\n")
    c.close()


def test_chunked_upload_hash(procs):
    p, api, _ = start_backend(procs, frontend=False)
    rng = random.Random(7)
    pieces = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 5000))) for _ in range(50)]
    expected = hashlib.sha256(b"".join(pieces)).hexdigest()
    status, _, data = request(api, "POST", "/api/v1/upload", body=iter(pieces),
                              encode_chunked=True)
    body = json.loads(data)
    assert status == 200
    assert ["Transfer-Encoding", "chunked"] in body["headers"]
    assert body["body_bytes"] == sum(len(x) for x in pieces)
    assert body["body_sha256"] == expected


def test_large_upload_and_download_are_streamed(procs):
    p, api, _ = start_backend(procs, frontend=False)
    size = 256 * 1024 * 1024
    piece = bytes(range(256)) * 1024  # 256 KiB
    digest = hashlib.sha256()
    for _ in range(size // len(piece)):
        digest.update(piece)
    status, _, data = request(
        api, "POST", "/api/v1/upload",
        body=(piece for _ in range(size // len(piece))), encode_chunked=True)
    body = json.loads(data)
    assert status == 200 and body["body_bytes"] == size
    assert body["body_sha256"] == digest.hexdigest()
    # 256 MiB down, counted without keeping it.
    c = http.client.HTTPConnection("127.0.0.1", api, timeout=TIMEOUT)
    c.request("GET", f"/api/v1/bytes?n={size}")
    resp = c.getresponse()
    got = 0
    while True:
        chunk = resp.read(1 << 20)
        if not chunk:
            break
        got += len(chunk)
    c.close()
    assert got == size
    # Neither body was held whole: the process's peak RSS stays far below 256 MiB.
    # (Not under AddressSanitizer, whose quarantine keeps freed memory resident.)
    if not uses_asan(p.pid):
        assert peak_rss_kib(p.pid) < 64 * 1024, peak_rss_kib(p.pid)


def test_expect_100_continue(procs):
    _, api, _ = start_backend(procs, frontend=False)
    with socket.create_connection(("127.0.0.1", api), timeout=TIMEOUT) as s:
        s.sendall(b"POST /api/v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        interim = s.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(b"abc")
        rest = b""
        deadline = time.monotonic() + TIMEOUT
        while b"}" not in rest and time.monotonic() < deadline:
            rest += s.recv(4096)
    assert b"HTTP/1.1 200 OK" in rest
    assert hashlib.sha256(b"abc").hexdigest().encode() in rest


def test_login_flow_default_cookie_attributes(procs):
    _, api, _ = start_backend(procs, frontend=False)
    status, headers, _ = request(api, "GET", "/api/v1/auth/login")
    assert status == 302
    location = header_values(headers, "Location")[0]
    assert re.fullmatch(r"/api/v1/auth/callback\?code=[0-9a-f]{32}", location)
    status, headers, _ = request(api, "GET", location)
    assert status == 302
    assert header_values(headers, "Location") == ["/"]
    cookies = header_values(headers, "Set-Cookie")
    assert len(cookies) == 1
    m = re.fullmatch(r"(sess_[0-9a-f]{16})=([0-9a-f]{32}); Path=/; HttpOnly; SameSite=Lax",
                     cookies[0])
    assert m, cookies[0]
    status, me = get_json(api, "/api/v1/me", {"Cookie": f"x=1; {m.group(1)}={m.group(2)}"})
    assert status == 200 and me["session"] == m.group(2) and me["instance"] == "demo"
    status, me = get_json(api, "/api/v1/me")
    assert status == 401 and me["error"] == "no session"
    status, _, _ = request(api, "GET", "/api/v1/auth/callback")
    assert status == 400


def test_login_flow_configured_cookie_attributes(procs):
    _, api, _ = start_backend(procs, "--cookie-domain", ".example.test", "--cookie-secure",
                              "--cookie-samesite", "Strict", "--cookie-path", "/app",
                              frontend=False)
    status, headers, _ = request(api, "GET", "/api/v1/auth/callback?code=abc")
    assert status == 302
    cookie = header_values(headers, "Set-Cookie")[0]
    assert re.fullmatch(r"sess_[0-9a-f]{16}=[0-9a-f]{32}; Path=/app; Domain=\.example\.test; "
                        r"Secure; HttpOnly; SameSite=Strict", cookie), cookie
    # Every login makes a new session.
    _, headers2, _ = request(api, "GET", "/api/v1/auth/callback?code=abc")
    assert header_values(headers2, "Set-Cookie")[0] != cookie


def test_multiple_set_cookie_in_order(procs):
    _, api, _ = start_backend(procs, frontend=False)
    status, headers, _ = request(api, "GET", "/api/v1/set-cookies?n=5")
    assert status == 200
    assert header_values(headers, "Set-Cookie") == [f"c{i}=v{i}; Path=/" for i in range(1, 6)]
    assert request(api, "GET", "/api/v1/set-cookies?n=x")[0] == 400


@pytest.mark.parametrize("code", [200, 201, 204, 404, 418, 500, 502, 503])
def test_status_codes(procs, code):
    _, api, _ = start_backend(procs, frontend=False)
    c = http.client.HTTPConnection("127.0.0.1", api, timeout=TIMEOUT)
    status, _, data = request(api, "GET", f"/api/v1/status/{code}", conn=c)
    assert status == code
    if code == 204:
        assert data == b""
    else:
        assert json.loads(data)["status"] == code
    # Keep-alive survives any status.
    assert request(api, "GET", "/healthz", conn=c)[0] == 200
    c.close()
    assert request(api, "GET", "/api/v1/status/99")[0] == 400
    assert request(api, "GET", "/api/v1/status/abc")[0] == 400


def test_slow_does_not_block_other_requests(procs):
    _, api, _ = start_backend(procs, frontend=False)  # one thread
    result = {}
    # The backend counts API requests as it reads their heads, so a stats request counts
    # itself: `base` includes the first one, and each poll below adds one more.
    base = get_json(api, "/api/v1/stats")[1]["requests"]

    def slow():
        t0 = time.monotonic()
        result["status"], result["body"] = get_json(api, "/api/v1/slow?ms=800")
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=slow)
    t.start()
    polls = 0

    def slow_request_read():
        nonlocal polls
        polls += 1
        return get_json(api, "/api/v1/stats")[1]["requests"] >= base + polls + 1

    support.wait_for(slow_request_read, timeout=TIMEOUT, interval=0.01,
                     what="the backend to read the slow request")
    t0 = time.monotonic()
    assert request(api, "GET", "/healthz")[0] == 200
    assert time.monotonic() - t0 < 0.5
    # /healthz was answered while the slow request was still in flight.
    assert t.is_alive() and "status" not in result
    t.join(timeout=TIMEOUT)
    assert not t.is_alive()
    assert result["status"] == 200 and result["body"]["slept_ms"] == 800
    assert result["elapsed"] >= 0.75


@pytest.mark.parametrize("chunked", [False, True])
def test_bytes_endpoint(procs, chunked):
    _, api, _ = start_backend(procs, frontend=False)
    n = 1_000_003
    status, headers, data = request(api, "GET", f"/api/v1/bytes?n={n}" + ("&chunked=1" if chunked else ""))
    assert status == 200
    assert len(data) == n
    assert data == bytes(ord("a") + i % 26 for i in range(n))
    if chunked:
        assert header_values(headers, "Transfer-Encoding") == ["chunked"]
        assert header_values(headers, "Content-Length") == []
    else:
        assert header_values(headers, "Content-Length") == [str(n)]
    status, _, data = request(api, "GET", "/api/v1/bytes?n=0")
    assert status == 200 and data == b""


def test_stats_count_accepts_and_requests(procs):
    _, api, _ = start_backend(procs, "--instance", "B", frontend=False)
    c = http.client.HTTPConnection("127.0.0.1", api, timeout=TIMEOUT)
    _, _, data = request(api, "GET", "/api/v1/stats", conn=c)
    before = json.loads(data)
    assert before["instance"] == "B"
    for _ in range(5):
        assert request(api, "GET", "/api/v1/echo", conn=c)[0] == 200
    _, _, data = request(api, "GET", "/api/v1/stats", conn=c)
    after = json.loads(data)
    c.close()
    assert after["accepts"] == before["accepts"]  # one keep-alive connection
    assert after["requests"] == before["requests"] + 6
    request(api, "GET", "/healthz")
    request(api, "GET", "/healthz")
    _, stats = get_json(api, "/api/v1/stats")
    assert stats["accepts"] == before["accepts"] + 3


def test_unknown_paths_are_404(procs):
    _, api, _ = start_backend(procs, frontend=False)
    status, _, data = request(api, "GET", "/nope")
    assert status == 404 and json.loads(data)["error"] == "not found"
    assert request(api, "GET", "/ws/chat/x")[0] == 426  # no upgrade
    assert request(api, "POST", "/api/v1/me")[0] == 405


def test_malformed_requests_get_400_and_never_crash(procs):
    p, api, _ = start_backend(procs, frontend=False)
    assert raw_exchange(api, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(api, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(api, b"POST /api/v1/echo HTTP/1.1\r\nHost: x\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\nZZZ\r\n").find(b" 400 ") > 0
    big = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    assert raw_exchange(api, big).startswith(b"HTTP/1.1 431 ")
    rng = random.Random(1234)
    for _ in range(200):
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
        with socket.create_connection(("127.0.0.1", api), timeout=TIMEOUT) as s:
            s.sendall(b"GET / HTTP/1.1\r\n" + junk + b"\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(65536):
                    pass
            except (ConnectionResetError, socket.timeout):
                pass
    assert p.proc.poll() is None
    assert request(api, "GET", "/healthz")[0] == 200


def test_sigterm_exits_zero_promptly(procs):
    p, api, _ = start_backend(procs, "--threads", "2")

    async def hold_open_websocket():
        async with websockets.connect(ws_url(api)) as ws:
            await ws.recv()
            t0 = time.monotonic()
            p.signal(signal.SIGTERM)
            rc = await asyncio.get_running_loop().run_in_executor(None, p.wait_exit, 10)
            return rc, time.monotonic() - t0

    rc, elapsed = run(hold_open_websocket())
    assert rc == 0
    assert elapsed < 3.0


# ---------------------------------------------------------------------------------------
# WebSocket


def test_ws_hello_carries_session_cookie_and_origin(procs):
    _, api, _ = start_backend(procs, "--instance", "wsA", frontend=False)

    async def go():
        async with websockets.connect(
                ws_url(api, "chat-42"), origin="http://app.example.test",
                extra_headers=[("Cookie", "theme=dark; sess_0123=abcdef")]) as ws:
            hello = json.loads(await ws.recv())
        async with websockets.connect(ws_url(api)) as ws:
            anonymous = json.loads(await ws.recv())
        return hello, anonymous

    hello, anonymous = run(go())
    assert hello == {"type": "hello", "instance": "wsA", "chat": "chat-42", "session": "abcdef",
                     "cookie_header": "theme=dark; sess_0123=abcdef",
                     "origin": "http://app.example.test", "subprotocol": None}
    assert anonymous["session"] is None and anonymous["cookie_header"] is None
    assert anonymous["origin"] is None


def test_ws_echo_text_binary_and_large(procs):
    _, api, _ = start_backend(procs, frontend=False)
    big = os.urandom(16 * 1024 * 1024)

    async def go():
        async with websockets.connect(ws_url(api), compression=None, max_size=None) as ws:
            await ws.recv()
            await ws.send("héllo")
            text = await ws.recv()
            await ws.send(b"\x00\x01\xff")
            binary = await ws.recv()
            await ws.send(big)
            echoed = await ws.recv()
            await ws.ping()
            return text, binary, echoed

    text, binary, echoed = run(go())
    assert text == "héllo"
    assert binary == b"\x00\x01\xff"
    assert isinstance(echoed, bytes) and echoed == big


def test_ws_send_command(procs):
    _, api, _ = start_backend(procs, frontend=False)

    async def go():
        async with websockets.connect(ws_url(api), max_size=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"cmd": "send", "n": 3, "size": 100000}))
            got = [await ws.recv() for _ in range(3)]
            await ws.send(json.dumps({"cmd": "close", "code": 999}))
            error = json.loads(await ws.recv())
            return got, error

    got, error = run(go())
    expected = "".join(chr(ord("a") + i % 26) for i in range(100000))
    assert got == [expected] * 3
    assert error["type"] == "error"


@pytest.mark.parametrize("code", [1000, 1001, 4001])
def test_ws_close_codes_propagate(procs, code):
    _, api, _ = start_backend(procs, frontend=False)

    async def server_closes():
        async with websockets.connect(ws_url(api)) as ws:
            await ws.recv()
            await ws.send(json.dumps({"cmd": "close", "code": code}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code

    async def client_closes():
        ws = await websockets.connect(ws_url(api))
        await ws.recv()
        await ws.close(code=code)
        return ws.close_code  # the code of the server's Close

    assert run(server_closes()) == code
    assert run(client_closes()) == code


def test_ws_permessage_deflate_and_subprotocol(procs):
    _, api, _ = start_backend(procs, frontend=False)

    async def go():
        async with websockets.connect(ws_url(api), subprotocols=["superchat", "chat"],
                                      max_size=None) as ws:
            hello = json.loads(await ws.recv())
            extensions = ws.response_headers.get("Sec-WebSocket-Extensions", "")
            text = "compress me " * 100000
            await ws.send(text)
            echoed = await ws.recv()
            return ws.subprotocol, hello, extensions, echoed == text
        
    subprotocol, hello, extensions, same = run(go())
    assert "permessage-deflate" in extensions
    assert subprotocol == "chat" and hello["subprotocol"] == "chat"
    assert same

    async def plain():
        async with websockets.connect(ws_url(api), compression=None) as ws:
            await ws.recv()
            return ws.response_headers.get("Sec-WebSocket-Extensions"), ws.subprotocol

    assert run(plain()) == (None, None)


def read_frame(sock, buf):
    """Reads one unmasked server frame; returns (opcode, payload, rest of buffer)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        if len(buf) >= 2:
            length = buf[1] & 0x7F
            offset = 2
            if length == 126 and len(buf) >= 4:
                length, offset = struct.unpack("!H", buf[2:4])[0], 4
            elif length == 127 and len(buf) >= 10:
                length, offset = struct.unpack("!Q", buf[2:10])[0], 10
            if length < 126 or offset > 2:
                if len(buf) >= offset + length:
                    return buf[0] & 0x0F, buf[offset:offset + length], buf[offset + length:]
        assert time.monotonic() < deadline, "timed out reading a frame"
        data = sock.recv(65536)
        assert data, "connection closed"
        buf += data


def masked_frame(opcode, payload):
    mask = os.urandom(4)
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def test_ws_frames_sent_with_the_upgrade_are_not_lost(procs):
    _, api, _ = start_backend(procs, frontend=False)
    upgrade = (f"GET /ws/chat/early HTTP/1.1\r\nHost: 127.0.0.1:{api}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\nCookie: sess_1=early\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", api), timeout=TIMEOUT) as s:
        s.sendall(upgrade + masked_frame(1, b"first") + masked_frame(2, b"second"))
        buf = b""
        deadline = time.monotonic() + TIMEOUT
        while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
            buf += s.recv(65536)
        head, _, buf = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        op, hello, buf = read_frame(s, buf)
        assert op == 1 and json.loads(hello)["session"] == "early"
        op, first, buf = read_frame(s, buf)
        assert (op, first) == (1, b"first")
        op, second, buf = read_frame(s, buf)
        assert (op, second) == (2, b"second")


def test_ws_stats_and_threads(procs):
    _, api, _ = start_backend(procs, "--threads", "3", frontend=False)

    async def go():
        conns = [await websockets.connect(ws_url(api, f"c{i}")) for i in range(10)]
        for ws in conns:
            await ws.recv()
        await asyncio.gather(*(ws.send(f"m{i}") for i, ws in enumerate(conns)))
        answers = await asyncio.gather(*(ws.recv() for ws in conns))
        _, during = await asyncio.get_running_loop().run_in_executor(
            None, get_json, api, "/api/v1/stats")
        await asyncio.gather(*(ws.close() for ws in conns))
        return answers, during

    answers, during = run(go())
    assert answers == [f"m{i}" for i in range(10)]
    assert during["websockets_active"] == 10 and during["websockets_total"] == 10
    after = support.wait_for(
        lambda: (s := get_json(api, "/api/v1/stats")[1])["websockets_active"] == 0 and s,
        what="websockets_active back to 0")
    assert after["websockets_total"] == 10


# ---------------------------------------------------------------------------------------
# Frontend port


def test_frontend_page(procs):
    _, api, front = start_backend(procs)
    status, headers, data = request(front, "GET", "/")
    assert status == 200
    assert header_values(headers, "Content-Type")[0].startswith("text/html")
    page = data.decode()
    for needle in ['id="ws-session"', 'id="ws-status"', 'id="ws-reconnects"',
                   'id="ws-instance"', "/api/v1/auth/login", "fetch('/api/v1/me'",
                   "location.host + '/ws/chat/'", "auto"]:
        assert needle in page, needle
    assert "http://" not in page and "https://" not in page  # no external resources
    assert request(front, "GET", "/healthz")[0] == 200
    assert request(front, "GET", "/api/v1/echo")[0] == 404
    assert request(front, "GET", "/other")[0] == 404
    assert request(api, "GET", "/")[0] == 404  # the page is not on the API port
