"""Helpers for the rollout tests: a fleet of managed data planes with two good backends and
one that answers 503, and a bounded request loop through every node."""

import http.client
import http.server
import json
import threading
import time

import cp_support
import fleet_support
import support


class Always503(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = b'{"error":"unavailable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Backend503:
    """A backend on 127.0.0.1:0 that answers 503 to everything; stop() in a finally."""

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Always503)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def rollout_config(bake="3s", min_requests=20, default_mode=None, waves=None):
    """The `rollout:` block for cp_support.ControlPlane(extra=...)."""
    text = f"\nrollout:\n  bake: {bake}\n  min_requests: {min_requests}"
    if default_mode:
        text += f"\n  default_mode: {default_mode}"
    if waves:
        text += "\n  waves: [" + ", ".join(f'"{w}"' for w in waves) + "]"
    return text


def wait_all_acked(cp, version, count, timeout=30.0):
    def done():
        listed = fleet_support.nodes(cp)
        acked = [n for n in listed.get("nodes", [])
                 if n.get("connected") and int(n.get("version_acked", 0)) == version]
        return len(acked) == count
    support.wait_for(done, timeout, interval=0.1, what=f"{count} nodes acking {version}")


def start_fleet(procs, tmp_path, count=10, extra=""):
    """Control plane (file store) + `count` data planes + backends A and B. Returns a dict."""
    a = fleet_support.start_backend(procs, "A")
    b = fleet_support.start_backend(procs, "B")
    seed = cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{a.ports['api']}",))
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp"), seed=seed, extra=extra).start()
    dps = []
    for i in range(count):
        dps.append(fleet_support.start_managed_dataplane(
            procs, str(tmp_path / f"dp{i}"), cp.address, f"node-{i}"))
    ports = [fleet_support.wait_listener(dp) for dp in dps]
    wait_all_acked(cp, 1, count)
    return {"a": a, "b": b, "cp": cp, "dps": dps, "ports": ports,
            "ids": [f"node-{i}" for i in range(count)]}


class Load:
    """Requests /api/v1/echo through every node in turn, about `rate` per second, on one
    keep-alive connection per node; records statuses per node. Bounded in time and count."""

    def __init__(self, ports, rate=150, max_seconds=240, max_requests=200000):
        self.ports = ports
        self.interval = 1.0 / rate
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.by_port = {p: {} for p in ports}  # port -> {status or error: count}
        self.instances = {p: None for p in ports}  # last backend instance per port
        self.total = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        self.thread.join(30)

    def _run(self):
        conns = {}
        deadline = time.monotonic() + self.max_seconds
        i = 0
        while (not self.stop_event.is_set() and i < self.max_requests
               and time.monotonic() < deadline):
            port = self.ports[i % len(self.ports)]
            i += 1
            key = "error"
            instance = None
            try:
                conn = conns.get(port)
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conns[port] = conn
                conn.request("GET", "/api/v1/echo")
                resp = conn.getresponse()
                body = resp.read()
                key = resp.status
                if resp.status == 200:
                    instance = json.loads(body).get("instance")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conns.pop(port, None)
            except Exception:  # counted as "error"; a fresh connection next time
                conns.pop(port, None)
            with self.lock:
                counts = self.by_port[port]
                counts[key] = counts.get(key, 0) + 1
                if instance:
                    self.instances[port] = instance
                self.total += 1
            # Paces the load (not a wait for a condition): about `rate` requests per second.
            self.stop_event.wait(self.interval)
        for conn in conns.values():
            conn.close()

    def count(self, port, key):
        with self.lock:
            return self.by_port[port].get(key, 0)

    def snapshot(self):
        with self.lock:
            return {p: dict(c) for p, c in self.by_port.items()}, self.total


def rollout_status(cp, token="read"):
    r = cp.admin("rollout", "status", "-o", "json", token=token, check=True)
    return json.loads(r.stdout)


TERMINAL = ("ROLLOUT_STATE_SUCCEEDED", "ROLLOUT_STATE_ROLLED_BACK", "ROLLOUT_STATE_ABORTED",
            "ROLLOUT_STATE_SUPERSEDED")


def ended(st):
    """The rollout has ended: a terminal state and `finished` set (for a rollback, only once
    its revert has committed, so revert_version is known)."""
    return st.get("state") in TERMINAL and "finished" in st


def wait_rollout(cp, predicate, timeout, what):
    """Waits until predicate(status) holds; returns that status."""
    seen = {}

    def check():
        st = rollout_status(cp)
        seen["last"] = st
        return st if predicate(st) else None
    try:
        return support.wait_for(check, timeout, interval=0.1, what=what)
    except Exception as e:
        raise AssertionError(f"{e}; last status: {json.dumps(seen.get('last'), indent=1)}")
