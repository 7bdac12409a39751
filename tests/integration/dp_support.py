"""Helpers for the data-plane integration tests: bootstrap files, starting `dataplane` and the
demo backend on 127.0.0.1:0, raw HTTP over sockets (to send exactly the bytes a test needs),
metrics scraping, and a small in-process upstream for failure injection (reset mid-response,
never answer, count accepts). Every wait has a deadline."""

import hashlib
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import time

import segment_relay
import support

LOOPBACK = "127.0.0.1"


# ---- configuration and processes ---------------------------------------------------------

def cluster(name, ports, **extra):
    """A cluster of 127.0.0.1 endpoints; under ONEDOMAIN_SEGMENT each live endpoint is reached
    through a segmenting relay, so responses reach the node in pieces."""
    c = {"name": name, "endpoints": [{"host": LOOPBACK, "port": segment_relay.relay_port(p)}
                                     for p in ports]}
    c.update(extra)
    return c


def route(name, prefix, cluster_name, **extra):
    r = {"name": name, "match": {"prefix": prefix}, "cluster": cluster_name}
    r.update(extra)
    return r


def bootstrap(clusters, routes, listeners=None, **extra):
    """A bootstrap document (JSON is YAML) with admin and listeners on ephemeral ports."""
    doc = {
        "admin": {"address": LOOPBACK, "port": 0},
        "drain": {"delay": "0s", "timeout": "10s"},
        "snapshot": {
            "listeners": listeners or [{"name": "main", "address": LOOPBACK, "port": 0}],
            "clusters": clusters,
            "routes": routes,
        },
    }
    doc.update(extra)
    return doc


def write_bootstrap(directory, doc, name="dataplane.yaml"):
    path = os.path.join(directory, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)
    return path


class Dataplane:
    """A running dataplane: its Process, config path and ports. Under ONEDOMAIN_SEGMENT,
    `port` and `listener()` are a segmenting relay's port in front of the listener (one relay
    per listener); `direct_port()` is always the listener's own."""

    def __init__(self, proc, config_path):
        self.proc = proc
        self.config_path = config_path
        self.ports = proc.wait_ports()
        self._relays = {}

    @property
    def port(self):
        return self.listener("main")

    def listener(self, name):
        if name not in self._relays:
            self._relays[name] = segment_relay.relay_port(self.ports[f"listener.{name}"],
                                                              probe=False)
        return self._relays[name]

    def direct_port(self, name="main"):
        return self.ports[f"listener.{name}"]

    @property
    def admin(self):
        return self.ports["admin"]

    def metrics(self):
        status, _, body = support.http_get(f"http://{LOOPBACK}:{self.admin}/metrics")
        assert status == 200
        return parse_metrics(body.decode())

    def counter(self, name, **labels):
        return metric_value(self.metrics(), name, **labels)

    def rss_kib(self, field="VmRSS"):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"{field} not found")


def start_dataplane(procs, doc, workers=1, extra_args=(), workdir=None):
    workdir = workdir or tempfile.mkdtemp(prefix="dp-test-")
    path = write_bootstrap(workdir, doc)
    p = procs([support.binary("dataplane"), "--config", path, "--workers", str(workers),
               *extra_args], name="dataplane")
    return Dataplane(p, path)


def start_demo_backend(procs, instance="A"):
    p = procs([support.binary("demo_backend"), "--port", "0", "--instance", instance],
              name=f"demo-{instance}")
    return p, p.wait_ports()["api"]


# ---- metrics -----------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """[(name, {labels}, value)] from Prometheus text."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group(3) or ""))
            out.append((m.group(1), labels, float(m.group(4))))
    return out


def metric_value(samples, name, **labels):
    total = 0.0
    for n, l, v in samples:
        if n == name and all(l.get(k) == str(val) for k, val in labels.items()):
            total += v
    return total


def wait_metric(dp, name, at_least, timeout=10.0, **labels):
    return support.wait_for(lambda: dp.counter(name, **labels) >= at_least, timeout,
                            what=f"{name}{labels} >= {at_least}")


# ---- raw HTTP ----------------------------------------------------------------------------

class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] in wire order
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)


class Conn:
    """One client connection speaking raw HTTP/1.1, with a deadline on every read."""

    def __init__(self, port, timeout=10.0, tls_context=None, server_hostname="localhost"):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        if tls_context is not None:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        _, status, *reason = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers.append((name, value.strip()))
        return int(status), (reason[0] if reason else ""), headers, head

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def skip(self, n):
        """Reads and drops n bytes (a large body, never accumulated); returns n."""
        skipped = 0
        while skipped < n:
            if not self.buf:
                self._fill()
            take = min(len(self.buf), n - skipped)
            skipped += take
            self.buf = self.buf[take:]
        return skipped

    def read_chunked(self, sink=None):
        """The de-chunked body; with `sink`, each piece goes to sink(bytes) instead (large
        bodies are never accumulated)."""
        body = bytearray()
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while b"\r\n" not in self.buf:
                    self._fill()
                while not self.buf.startswith(b"\r\n"):  # trailers
                    _, self.buf = self.buf.split(b"\r\n", 1)
                    while b"\r\n" not in self.buf:
                        self._fill()
                self.buf = self.buf[2:]
                return bytes(body)
            while size > 0:
                if not self.buf:
                    self._fill()
                piece = self.buf[:size]
                self.buf = self.buf[len(piece):]
                size -= len(piece)
                if sink is not None:
                    sink(piece)
                else:
                    body += piece
            self.read_exact(2)

    def read_to_eof(self):
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        data, self.buf = self.buf, b""
        return data

    def response(self, head_request=False):
        status, reason, headers, raw = self.read_head()
        r = Response(status, reason, headers, b"", raw)
        if head_request or status in (204, 304) or 100 <= status < 200:
            return r
        te = r.header("Transfer-Encoding")
        cl = r.header("Content-Length")
        if te and te.lower() == "chunked":
            r.body = self.read_chunked()
        elif cl is not None:
            r.body = self.read_exact(int(cl))
        else:
            r.body = self.read_to_eof()
        return r

    def request(self, method, path, headers=None, body=b"", host="test.local"):
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        for n, v in (headers or []):
            lines.append(f"{n}: {v}")
        if body and not any(n.lower() in ("content-length", "transfer-encoding")
                            for n, _ in (headers or [])):
            lines.append(f"Content-Length: {len(body)}")
        self.send("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        return self.response(head_request=(method == "HEAD"))

    def closed_by_peer(self, timeout=5.0):
        """True when the peer closes (EOF or reset) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(1 << 16):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def request(port, method, path, **kwargs):
    c = Conn(port)
    try:
        return c.request(method, path, **kwargs)
    finally:
        c.close()


# ---- an in-process upstream for failure injection ----------------------------------------

class PyUpstream:
    """A tiny HTTP/1.1 upstream in a thread. `behaviour(conn_index, method, path, headers,
    body, sock)` returns bytes to send (or None after handling `sock` itself). Counts accepts.
    Keep-alive unless the behaviour closes. Bodies are read by Content-Length only."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.accepts = 0
        self.requests = []
        self._stop = False
        self._threads = []
        self._socks = []
        self._lock = threading.Lock()
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self):
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                s, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.accepts += 1
                index = self.accepts
                self._socks.append(s)
            t = threading.Thread(target=self._serve, args=(s, index), daemon=True)
            t.start()

    def _serve(self, s, index):
        buf = b""
        s.settimeout(30)
        try:
            while not self._stop:
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = [(l.split(":", 1)[0], l.split(":", 1)[1].strip()) for l in lines[1:]]
                length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
                while len(buf) < length:
                    chunk = s.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                with self._lock:
                    self.requests.append((method, path, headers, body))
                out = self.behaviour(index, method, path, headers, body, s)
                if out is None:
                    return
                s.sendall(out)
        except OSError:
            return
        finally:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self._stop = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def ok_response(body=b"ok", headers=()):
    head = "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    for n, v in headers:
        head += f"{n}: {v}\r\n"
    return head.encode() + b"\r\n" + body


def free_port():
    """A port nothing listens on (bound and released: connecting to it is refused)."""
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def tls_client_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx


def wait_until(predicate, timeout=10.0, what="condition"):
    return support.wait_for(predicate, timeout, what=what)


def monotonic():
    return time.monotonic()
