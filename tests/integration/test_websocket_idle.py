"""Idle handling of WebSocket tunnels, for a plain and a TLS client: the node's keepalive pings
reach a silent client and the pong answering each is absorbed without disturbing the frame
stream (the next message still echoes); a route's idle timeout closes a silent socket with
Close 1001 while a socket that keeps talking stays open. The client speaks raw RFC 6455 frames
over a socket, so it sees every control frame the node sends."""

import base64
import os
import socket
import ssl
import struct
import tempfile
import time

import pytest

import dp_support as dp
import ws_support as wss
from test_dataplane_tls import make_cert

KEEPALIVE = 0.5
IDLE = 1.0


class RawWs:
    """A minimal WebSocket client: masked frames out, unmasked frames in."""

    def __init__(self, port, path, tls_cafile=None, timeout=10.0):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls_cafile:
            sock = ssl.create_default_context(cafile=tls_cafile).wrap_socket(
                sock, server_hostname="localhost")
        self.sock = sock
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {wss.SITE_ORIGIN}\r\n"
            f"Cookie: {wss.COOKIE}\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, timeout):
        """(opcode, payload) of the next frame; socket.timeout when none comes in time."""
        self.sock.settimeout(timeout)
        b0, b1 = self._take(2)
        assert b1 & 0x80 == 0, "server frames are never masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        return b0 & 0x0F, self._take(n)

    def send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        else:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def close(self):
        self.sock.close()


@pytest.fixture(params=["plain", "tls"])
def plane_factory(request, procs):
    """Starts a data plane whose `ws` route has the given WebSocket policy override; yields
    (port, cafile-or-None) for a plain or a TLS listener."""

    def start(route_policy):
        _, backend = dp.start_demo_backend(procs)
        doc = wss.ws_bootstrap([backend], route_ws_policy=route_policy)
        cafile = None
        workdir = tempfile.mkdtemp(prefix="dp-wsidle-")
        if request.param == "tls":
            cafile, key = make_cert(workdir, "server", "localhost")
            doc["snapshot"]["listeners"] = [{"name": "main", "address": dp.LOOPBACK, "port": 0,
                                             "tls": {"cert_file": cafile, "key_file": key}}]
        node = dp.start_dataplane(procs, doc, workdir=workdir)
        return node, cafile

    return start


def read_until_data(ws, timeout):
    """Reads frames until a data frame; returns (its opcode and payload, pings seen)."""
    pings = []
    deadline = time.monotonic() + timeout
    while True:
        opcode, payload = ws.read_frame(max(0.05, deadline - time.monotonic()))
        if opcode == 0x9:
            pings.append(payload)
            ws.send_frame(0xA, payload)  # the pong the node absorbs
            continue
        return (opcode, payload), pings


def test_keepalive_pings_reach_a_silent_client_and_pongs_are_absorbed(plane_factory):
    node, cafile = plane_factory({"keepalive_interval": f"{int(KEEPALIVE * 1000)}ms"})
    ws = RawWs(node.port, "/ws/chat/7", tls_cafile=cafile)
    (opcode, hello), _ = read_until_data(ws, 10)
    assert opcode == 0x1 and b'"hello"' in hello
    # Silent for 4 keepalive intervals: the node pings each time, and we answer each.
    pings = []
    deadline = time.monotonic() + 4 * KEEPALIVE
    while time.monotonic() < deadline:
        try:
            opcode, payload = ws.read_frame(max(0.05, deadline - time.monotonic()))
        except socket.timeout:
            break
        assert opcode == 0x9, (opcode, payload)  # nothing but the node's pings
        pings.append(payload)
        ws.send_frame(0xA, payload)
    assert len(pings) >= 2, pings
    # The stream is intact after the absorbed pongs: a message still echoes whole.
    ws.send_frame(0x1, b"still here")
    (opcode, payload), _ = read_until_data(ws, 10)
    assert (opcode, payload) == (0x1, b"still here")
    # A client ping goes to the backend, whose pong comes back (not absorbed).
    ws.send_frame(0x9, b"mine")
    deadline = time.monotonic() + 5
    while True:
        opcode, payload = ws.read_frame(max(0.05, deadline - time.monotonic()))
        if opcode == 0x9:
            ws.send_frame(0xA, payload)
            continue
        assert (opcode, payload) == (0xA, b"mine")
        break
    ws.close()


def test_idle_timeout_closes_a_silent_socket_with_1001_but_not_a_busy_one(plane_factory):
    node, cafile = plane_factory({"idle_timeout": f"{int(IDLE * 1000)}ms"})
    silent = RawWs(node.port, "/ws/chat/1", tls_cafile=cafile)
    busy = RawWs(node.port, "/ws/chat/2", tls_cafile=cafile)
    for ws in (silent, busy):
        (opcode, hello), _ = read_until_data(ws, 10)
        assert opcode == 0x1 and b'"hello"' in hello
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 2.5 * IDLE:  # bounded: about 8 round trips
        msg = f"tick {i}".encode()
        busy.send_frame(0x1, msg)
        (opcode, payload), _ = read_until_data(busy, 10)
        assert (opcode, payload) == (0x1, msg)
        i += 1
        time.sleep(IDLE / 4)
    # The silent one got Close 1001 from the node by now.
    opcode, payload = silent.read_frame(5)
    assert opcode == 0x8, (opcode, payload)
    assert struct.unpack("!H", payload[:2])[0] == 1001
    silent.send_frame(0x8, payload[:2])  # complete the close handshake
    # The busy one still works.
    busy.send_frame(0x1, b"after")
    (opcode, payload), _ = read_until_data(busy, 10)
    assert (opcode, payload) == (0x1, b"after")
    dp.wait_metric(node, "onedomain_websocket_connections_active", 1, route="ws")
    silent.close()
    busy.close()
