"""Helpers for the client-limit tests (issue 20): raw clients bound to a chosen loopback source
address (127.0.0.2 ... 127.0.0.250 all reach 127.0.0.1 on Linux), PROXY protocol v1/v2
headers, raw WebSocket upgrades and frames, and an in-process upstream that answers upgrades
with a 101 and then holds, echoes or floods. Every wait has a deadline."""

import base64
import hashlib
import os
import socket
import struct
import threading

import dp_support as dp

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


def source(i):
    """The i-th test source address, 127.0.0.2 .. 127.0.0.250."""
    assert 0 <= i < 249
    return f"127.0.0.{2 + i}"


class SrcConn(dp.Conn):
    """dp.Conn from a given source address, optionally opening with raw bytes (a PROXY
    header)."""

    def __init__(self, port, src="127.0.0.1", prefix=b"", timeout=10.0):  # noqa: super not called
        self.sock = socket.create_connection((dp.LOOPBACK, port), timeout=timeout,
                                             source_address=(src, 0))
        self.buf = b""
        if prefix:
            self.send(prefix)


def proxy_v1(src, dst="127.0.0.1", sport=40000, dport=443):
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(src, dst="127.0.0.1", sport=40000, dport=443, tlvs=b"", command=1):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if command == 0:
        return sig + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    if ":" in src:
        dst = dst if ":" in dst else "::ffff:" + dst
        body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                + struct.pack("!HH", sport, dport))
        fam = 0x21
    else:
        body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
        fam = 0x11
    body += tlvs
    return sig + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def upgrade_request(path="/ws/x", cookie=None, origin="http://127.0.0.1", extra=()):
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: test.local", "Connection: Upgrade",
             "Upgrade: websocket", "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {key}",
             f"Origin: {origin}"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    lines.extend(f"{n}: {v}" for n, v in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def upgrade(conn, **kwargs):
    """Sends an upgrade on `conn`; returns the response (status 101 leaves the tunnel open)."""
    conn.send(upgrade_request(**kwargs))
    status, reason, headers, raw = conn.read_head()
    r = dp.Response(status, reason, headers, b"", raw)
    if status != 101:
        cl = r.header("Content-Length")
        if cl is not None:
            r.body = conn.read_exact(int(cl))
    return r


def client_frame(opcode, payload=b""):
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frame(opcode, payload=b""):
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def read_frame(conn):
    """(opcode, payload) of the next unmasked frame on `conn`."""
    b0, b1 = conn.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", conn.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", conn.read_exact(8))[0]
    if b1 & 0x80:
        mask = conn.read_exact(4)
        data = conn.read_exact(n)
        return b0 & 0x0F, bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    return b0 & 0x0F, conn.read_exact(n)


class WsUpstream(dp.PyUpstream):
    """Answers plain requests with 200 (echoing X-Forwarded-For in the body) and upgrades with
    a 101; then `mode`: "hold" reads and drops, "echo" answers each client frame's payload as
    a text frame, "flood" sends `flood_bytes` in 64 KiB binary frames without reading.
    Counts upgrades."""

    def __init__(self, mode="echo", flood_bytes=0):
        self.mode = mode
        self.flood_bytes = flood_bytes
        self.upgrades = 0
        self.flood_sent = 0
        super().__init__(self._behave)

    def _behave(self, index, method, path, headers, body, sock):
        h = {n.lower(): v for n, v in headers}
        if h.get("upgrade", "").lower() != "websocket":
            xff = h.get("x-forwarded-for", "")
            return dp.ok_response(xff.encode(), headers=[("X-Seen-XFF", xff)])
        accept = base64.b64encode(hashlib.sha1(h["sec-websocket-key"].encode() + WS_GUID)
                                  .digest()).decode()
        with self._lock:
            self.upgrades += 1
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        if self.mode == "flood":
            self._flood(sock)
        else:
            self._relay(sock)
        return None

    def _flood(self, sock):
        frame = server_frame(2, b"x" * 65536)
        sock.settimeout(30)
        while self.flood_sent < self.flood_bytes and not self._stop:
            try:
                sock.sendall(frame)
            except OSError:
                return
            self.flood_sent += len(frame)

    def _relay(self, sock):
        conn = dp.Conn.__new__(dp.Conn)
        conn.sock, conn.buf = sock, b""
        sock.settimeout(60)
        try:
            while not self._stop:
                op, payload = read_frame(conn)
                if op == 8:  # Close: answer it and end
                    sock.sendall(server_frame(8, payload[:2]))
                    return
                if self.mode == "echo" and op in (1, 2):
                    sock.sendall(server_frame(1, payload))
        except (OSError, EOFError):
            return


def run_threads(fn, args_list, timeout=60.0):
    """Runs fn(*args) for each args in threads; returns results in order (raises the first
    error)."""
    results = [None] * len(args_list)
    errors = []

    def run(i, args):
        try:
            results[i] = fn(*args)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, a), daemon=True)
               for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a client thread did not finish in time"
    if errors:
        raise errors[0]
    return results


def closed_without_answer(conn, timeout=5.0):
    """True when the peer closes `conn` (EOF or reset) within `timeout` without sending a
    byte."""
    conn.sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = conn.sock.recv(1 << 16)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        return False
    return got == b""
