"""Helpers for the browser end-to-end test: a test CA and server certificate (openssl CLI),
the playwright-core driver process (driver.js), Prometheus text parsing, a foreign-origin page
server. Integration helpers (support, cp_support) come from tests/integration, unchanged."""

import base64
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("ONEDOMAIN_SOURCE_DIR", os.path.join(HERE, "..", ".."))
TOOLS_DIR = os.path.join(os.environ.get("ONEDOMAIN_TOOLS_DIR",
                                        os.path.join(SOURCE_DIR, ".tools")), "browser")
CHROMIUM = "/usr/bin/chromium"

SITE_HOST = "amir.hirecj.ai"
FOREIGN_HOST = "evil.example"


def free_port():
    """A port the kernel just handed out on 127.0.0.1. Both data planes bind it (SO_REUSEPORT:
    the kernel spreads connections over them, like a load balancer in front of a fleet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30,
                   stdin=subprocess.DEVNULL)


def make_ca_and_server_cert(directory, host):
    """A test CA and a leaf for `host` signed by it. Returns dict with paths and the leaf's and
    CA's SPKI SHA-256 (base64), as Chromium's --ignore-certificate-errors-spki-list wants."""
    ca_key = os.path.join(directory, "ca.key")
    ca_crt = os.path.join(directory, "ca.crt")
    key = os.path.join(directory, "server.key")
    csr = os.path.join(directory, "server.csr")
    crt = os.path.join(directory, "server.crt")
    chain = os.path.join(directory, "server-chain.crt")
    ext = os.path.join(directory, "server.ext")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2",
             "-subj", "/CN=onedomain browser-test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={host}")
    with open(ext, "w") as f:
        f.write(f"basicConstraints=critical,CA:FALSE\n"
                f"keyUsage=critical,digitalSignature\n"
                f"extendedKeyUsage=serverAuth\n"
                f"subjectAltName=DNS:{host}\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
             "-out", crt, "-days", "2", "-sha256", "-extfile", ext)
    with open(chain, "w") as out:
        for part in (crt, ca_crt):
            with open(part) as f:
                out.write(f.read())
    return {"ca": ca_crt, "cert": crt, "chain": chain, "key": key,
            "spki": spki_sha256(crt), "ca_spki": spki_sha256(ca_crt)}


def spki_sha256(cert_path):
    pub = subprocess.run(["openssl", "x509", "-in", cert_path, "-pubkey", "-noout"],
                         check=True, capture_output=True, timeout=30).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True, timeout=30).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der,
                            check=True, capture_output=True, timeout=30).stdout
    return base64.b64encode(digest).decode()


# ---- Prometheus text -----------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_sum(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(_LABEL.findall(m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def metric_lines(text, prefix):
    return "\n".join(l for l in text.splitlines() if l.startswith(prefix))


# ---- the foreign origin ----------------------------------------------------------------------

class ForeignSite:
    """http://evil.example:<port>/ — a page of another origin (the host name is mapped to
    127.0.0.1 in Chromium) that opens a WebSocket to the site. Runs in a thread."""

    def __init__(self, ws_url):
        page = (f"<!doctype html><html><head><meta charset=utf-8><title>foreign</title></head>"
                f"<body><p id=state>opening</p><script>"
                f"const ws = new WebSocket({json.dumps(ws_url)});"
                f"ws.onopen = () => document.getElementById('state').textContent = 'open';"
                f"ws.onclose = (e) => document.getElementById('state').textContent = "
                f"'closed ' + e.code;"
                f"</script></body></html>").encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = page if self.path.split("?")[0] == "/" else b"not found"
                self.send_response(200 if body is page else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://{FOREIGN_HOST}:{self.port}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---- the browser -----------------------------------------------------------------------------

class BrowserError(AssertionError):
    pass


class Browser:
    """node driver.js: Chromium through playwright-core, stepped command by command."""

    def __init__(self, user_data_dir, chromium_args, log_path):
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed: run scripts/install-browser.sh")
        modules = os.path.join(TOOLS_DIR, "node_modules")
        if not os.path.isfile(os.path.join(modules, "playwright-core", "package.json")):
            raise RuntimeError(f"playwright-core is not in {modules}: "
                               "run scripts/install-browser.sh")
        if not os.access(CHROMIUM, os.X_OK):
            raise RuntimeError(f"{CHROMIUM} is missing: run scripts/install-browser.sh")
        env = dict(os.environ)
        env["NODE_PATH"] = modules
        # playwright-core must not try to fetch a browser of its own.
        env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
        options = {"executablePath": CHROMIUM, "userDataDir": user_data_dir,
                   "args": chromium_args}
        self._log = open(log_path, "wb")
        self.log_path = log_path
        self.proc = subprocess.Popen([node, os.path.join(HERE, "driver.js"), json.dumps(options)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env)
        self._answers = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0
        first = self._get(timeout=45.0)
        if not first.get("ok"):
            raise BrowserError(f"driver did not start: {first}")

    def _read(self):
        for line in self.proc.stdout:
            try:
                self._answers.put(json.loads(line))
            except ValueError:
                self._answers.put({"id": None, "ok": False, "error": f"bad line {line!r}"})
        self._answers.put(None)

    def _get(self, timeout):
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"browser driver gave no answer within {timeout}s:\n"
                               f"{self.stderr()}")
        if answer is None:
            raise BrowserError(f"browser driver exited ({self.proc.poll()}):\n{self.stderr()}")
        return answer

    def stderr(self):
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def call(self, cmd, wait=30.0, **args):
        """Sends one command; waits at most `wait` seconds for its answer."""
        self._next_id += 1
        msg = dict(args, cmd=cmd, id=self._next_id)
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()
        while True:
            answer = self._get(wait)
            if answer.get("id") == self._next_id:
                break
        if not answer["ok"]:
            raise BrowserError(f"{cmd} failed: {answer['error']}")
        return answer.get("value")

    def eval(self, page, expr, wait=30.0):
        return self.call("eval", wait=wait, page=page, expr=expr)

    def wait_for(self, page, expr, timeout_s=10.0, what=None):
        """Waits (in the page) until the JS expression is truthy; returns its value."""
        try:
            return self.call("waitFor", wait=timeout_s + 10, page=page, expr=expr,
                             timeout=int(timeout_s * 1000))
        except BrowserError as e:
            if "Timeout" in str(e):
                raise TimeoutError(f"timed out after {timeout_s}s waiting for "
                                   f"{what or expr}") from None
            raise

    def ws_log(self, page):
        return self.eval(page, "window.__wsLog || []")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd":"quit","id":-1}\n')
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # playwright's SIGTERM handler closes Chromium, then the driver exits.
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        self._log.close()


def chromium_args(spki_hashes):
    """The flags of issue 9, the host mapping and the certificate exception."""
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--host-resolver-rules=MAP {SITE_HOST} 127.0.0.1, MAP {FOREIGN_HOST} 127.0.0.1",
        "--ignore-certificate-errors-spki-list=" + ",".join(spki_hashes),
    ]


def deadline_wait(predicate, timeout, what, interval=0.05):
    """Polls predicate() until truthy (returned) or the deadline passes (TimeoutError)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
