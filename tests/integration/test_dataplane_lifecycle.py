"""The data plane's life: flags and config errors at start, readiness, /config_dump, the
access log, SIGHUP reloads (good, bad, listener changes, requests in flight keep their
snapshot), and SIGTERM drains (in-flight requests finish, exit 0; drain.timeout bounds it)."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import dp_support as dp
import support


def run_cli(*args, timeout=30):
    return subprocess.run([support.binary("dataplane"), *args], capture_output=True, text=True,
                          timeout=timeout)


# ---- flags and start-up ------------------------------------------------------------------

def test_help_version_and_bad_flags():
    h = run_cli("--help")
    assert h.returncode == 0
    for flag in ("--config", "--check-config", "--workers", "--port-file", "--log-level",
                 "--version"):
        assert flag in h.stdout
    v = run_cli("--version")
    assert v.returncode == 0 and v.stdout.startswith("dataplane ")
    bad = run_cli("--frobnicate")
    assert bad.returncode == 2
    assert "unknown flag '--frobnicate'" in bad.stderr
    assert run_cli().returncode == 2  # --config is required
    assert run_cli("--config", "x.yaml", "--workers", "zero").returncode == 2


def test_check_config_accepts_good_and_rejects_bad_files():
    d = tempfile.mkdtemp(prefix="dp-check-")
    good = dp.write_bootstrap(d, dp.bootstrap([dp.cluster("agents", [8000])],
                                              [dp.route("api", "/", "agents")]), "good.yaml")
    r = run_cli("--config", good, "--check-config")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK"

    bad = os.path.join(d, "bad.yaml")
    with open(bad, "w") as f:
        f.write("snapshot:\n  listeners:\n    - name: main\n      port: 70000\n"
                "  clusters: []\n  routes: []\n")
    r = run_cli("--config", bad, "--check-config")
    assert r.returncode == 1
    assert "bad.yaml:4" in r.stderr and "port" in r.stderr and "70000" in r.stderr, r.stderr

    tls = dp.bootstrap([dp.cluster("agents", [8000])], [dp.route("api", "/", "agents")],
                       listeners=[{"name": "main", "port": 0,
                                   "tls": {"cert_file": "/nonexistent.crt",
                                           "key_file": "/nonexistent.key"}}])
    r = run_cli("--config", dp.write_bootstrap(d, tls, "tls.yaml"), "--check-config")
    assert r.returncode == 1
    assert "listeners[0].tls" in r.stderr and "/nonexistent.crt" in r.stderr, r.stderr


def test_start_fails_clearly_when_the_port_is_taken(procs):
    holder = socket.socket()
    holder.bind((dp.LOOPBACK, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    d = tempfile.mkdtemp(prefix="dp-busy-")
    doc = dp.bootstrap([dp.cluster("agents", [8000])], [dp.route("api", "/", "agents")],
                       listeners=[{"name": "main", "address": dp.LOOPBACK, "port": port}])
    r = run_cli("--config", dp.write_bootstrap(d, doc), "--workers", "1")
    holder.close()
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr


# ---- admin endpoints and access log ------------------------------------------------------

def test_readiness_config_dump_and_access_log(procs):
    _, api = dp.start_demo_backend(procs)
    d = tempfile.mkdtemp(prefix="dp-admin-")
    log_path = os.path.join(d, "access.log")
    doc = dp.bootstrap([dp.cluster("agents", [api])],
                       [dp.route("api", "/api/v1/", "agents", max_body_bytes=4096)],
                       access_log={"enabled": True, "format": "json", "path": log_path})
    doc["snapshot"]["version"] = 42
    plane = dp.start_dataplane(procs, doc, workdir=d)
    base = f"http://{dp.LOOPBACK}:{plane.admin}"
    assert support.http_get(base + "/healthz")[0] == 200
    assert support.http_get(base + "/readyz")[0] == 200
    status, headers, body = support.http_get(base + "/config_dump")
    assert status == 200
    dump = json.loads(body)
    assert dump["version"] == "42"
    assert dump["routes"][0]["max_body_bytes"] == "4096"  # proto field names preserved
    assert dump["listeners"][0]["name"] == "main"
    assert plane.counter("onedomain_config_version") == 42

    assert dp.request(plane.port, "GET", "/api/v1/echo?q=1").status == 200
    assert dp.request(plane.port, "GET", "/missing").status == 404

    def lines():
        try:
            with open(log_path) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []
    dp.wait_until(lambda: len(lines()) >= 2, 5, "two access log lines")
    first, second = lines()[:2]
    assert first["method"] == "GET" and first["target"] == "/api/v1/echo?q=1"
    assert first["status"] == 200 and first["route"] == "api"
    assert first["upstream"] == f"127.0.0.1:{api}"
    assert second["status"] == 404 and second["route"] == "none" and second["error"] == "no_route"


# ---- SIGHUP reloads ----------------------------------------------------------------------

def reload_and_wait(plane, expected_applies_ok=None, expected_rejected=None):
    ok_before = plane.counter("onedomain_config_applies_total", result="ok")
    rejected_before = plane.counter("onedomain_config_applies_total", result="rejected")
    plane.proc.signal(signal.SIGHUP)
    dp.wait_until(lambda: plane.counter("onedomain_config_applies_total", result="ok") > ok_before
                  or plane.counter("onedomain_config_applies_total", result="rejected")
                  > rejected_before, 10, "the reload to finish")
    return plane.counter("onedomain_config_applies_total", result="ok") > ok_before


def test_sighup_applies_a_good_file_and_keeps_serving_on_a_bad_one(procs):
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap([dp.cluster("agents", [api])], [dp.route("api", "/api/v1/", "agents")])
    plane = dp.start_dataplane(procs, doc)
    keep = dp.Conn(plane.port)
    assert keep.request("GET", "/api/v1/echo").status == 200
    assert dp.request(plane.port, "GET", "/new/x").status == 404

    doc["snapshot"]["version"] = 2
    doc["snapshot"]["routes"].append(dp.route("new", "/new/", "agents", prefix_rewrite="/api/v1/"))
    dp.write_bootstrap(os.path.dirname(plane.config_path), doc)
    assert reload_and_wait(plane)
    r = dp.request(plane.port, "GET", "/new/echo")
    assert r.status == 200 and r.json()["target"] == "/api/v1/echo"
    assert plane.counter("onedomain_config_version") == 2
    assert keep.request("GET", "/api/v1/echo").status == 200  # same connection, new config

    # A broken file: unknown cluster. Nothing changes; the reason is logged.
    doc["snapshot"]["version"] = 3
    doc["snapshot"]["routes"].append(dp.route("broken", "/broken/", "nope"))
    dp.write_bootstrap(os.path.dirname(plane.config_path), doc)
    assert not reload_and_wait(plane)
    assert "unknown cluster 'nope'" in plane.proc.output()
    assert plane.counter("onedomain_config_version") == 2
    assert dp.request(plane.port, "GET", "/new/echo").status == 200
    with open(plane.config_path, "w") as f:
        f.write("snapshot: [unterminated\n")
    assert not reload_and_wait(plane)
    assert keep.request("GET", "/api/v1/echo").status == 200
    keep.close()


def test_sighup_adds_and_removes_listeners(procs):
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap([dp.cluster("agents", [api])], [dp.route("api", "/api/v1/", "agents")])
    plane = dp.start_dataplane(procs, doc, workers=2)
    main_port = plane.port
    doc["snapshot"]["listeners"].append({"name": "second", "address": dp.LOOPBACK, "port": 0})
    dp.write_bootstrap(os.path.dirname(plane.config_path), doc)
    assert reload_and_wait(plane)
    ports = dp.wait_until(lambda: (lambda p: p if "listener.second" in p else None)(
        json.load(open(plane.proc.port_file))), 5, "the port file to list the new listener")
    assert ports["listener.main"] == main_port  # unchanged listeners keep their sockets
    assert dp.request(ports["listener.second"], "GET", "/api/v1/echo").status == 200

    doc["snapshot"]["listeners"] = doc["snapshot"]["listeners"][1:]  # drop "main"
    dp.write_bootstrap(os.path.dirname(plane.config_path), doc)
    assert reload_and_wait(plane)

    def refused():
        try:
            socket.create_connection((dp.LOOPBACK, main_port), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True
    dp.wait_until(refused, 5, "the removed listener to close")
    assert dp.request(ports["listener.second"], "GET", "/api/v1/echo").status == 200


def test_requests_in_flight_finish_on_their_snapshot(procs):
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap([dp.cluster("agents", [api])], [dp.route("api", "/api/v1/", "agents")])
    plane = dp.start_dataplane(procs, doc)
    result = {}

    def slow():
        result["r"] = dp.request(plane.port, "GET", "/api/v1/slow?ms=1500")
    t = threading.Thread(target=slow)
    t.start()
    dp.wait_until(lambda: plane.counter("onedomain_upstream_connections_active") >= 1, 5,
                  "the slow request to reach the upstream")
    doc["snapshot"]["routes"] = [dp.route("other", "/other/", "agents")]
    dp.write_bootstrap(os.path.dirname(plane.config_path), doc)
    assert reload_and_wait(plane)
    assert dp.request(plane.port, "GET", "/api/v1/echo").status == 404  # new snapshot
    t.join(timeout=10)
    assert result["r"].status == 200  # the old one, for the request that started on it


# ---- SIGTERM drains ----------------------------------------------------------------------

def test_sigterm_drains_requests_in_flight_and_exits_zero(procs):
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap([dp.cluster("agents", [api])], [dp.route("api", "/api/v1/", "agents")],
                       drain={"delay": "500ms", "timeout": "20s"})
    plane = dp.start_dataplane(procs, doc, workers=2)
    idle = dp.Conn(plane.port)
    assert idle.request("GET", "/api/v1/echo").status == 200  # then idles (keep-alive)
    results = []

    def slow(i):
        results.append(dp.request(plane.port, "GET", f"/api/v1/slow?ms={1500 + 100 * i}",
                                  headers=[("X-I", str(i))]))
    threads = [threading.Thread(target=slow, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    dp.wait_until(lambda: plane.counter("onedomain_upstream_connections_active") >= 8, 10,
                  "8 requests in flight")
    sent_at = time.monotonic()
    plane.proc.signal(signal.SIGTERM)
    base = f"http://{dp.LOOPBACK}:{plane.admin}"
    dp.wait_until(lambda: support.http_get(base + "/readyz")[0] == 503, 5, "readiness to drop")
    assert idle.closed_by_peer(timeout=5)  # idle keep-alive connections close at once
    # During drain.delay new connections are still served, with Connection: close.
    r = dp.request(plane.port, "GET", "/api/v1/echo")
    assert r.status == 200 and r.header("Connection") == "close"
    assert plane.proc.wait_exit(timeout=20) == 0
    for t in threads:
        t.join(timeout=5)
    assert len(results) == 8 and all(r.status == 200 for r in results), \
        [r.status for r in results]
    assert time.monotonic() - sent_at >= 1.4  # it waited for the slowest request
    assert "drained: no connection left" in plane.proc.output()
    with pytest.raises(OSError):
        socket.create_connection((dp.LOOPBACK, plane.port), timeout=1).close()


def test_drain_timeout_bounds_the_wait(procs):
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap([dp.cluster("agents", [api])], [dp.route("api", "/api/v1/", "agents")],
                       drain={"delay": "0s", "timeout": "1s"})
    plane = dp.start_dataplane(procs, doc)
    outcome = {}

    def too_slow():
        try:
            outcome["status"] = dp.request(plane.port, "GET", "/api/v1/slow?ms=8000").status
        except (EOFError, OSError) as e:
            outcome["cut"] = type(e).__name__
    t = threading.Thread(target=too_slow, daemon=True)
    t.start()
    dp.wait_until(lambda: plane.counter("onedomain_upstream_connections_active") >= 1, 5,
                  "a request in flight")
    start = time.monotonic()
    plane.proc.signal(signal.SIGTERM)
    assert plane.proc.wait_exit(timeout=10) == 0
    assert time.monotonic() - start < 4
    assert "drain timeout" in plane.proc.output()
    t.join(timeout=5)
    assert "cut" in outcome, outcome  # what outlived drain.timeout was closed
