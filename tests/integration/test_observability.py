"""Fleet observability end to end: known traffic through two managed data planes, exact
counts on a data plane's /metrics and on the control plane's fleet view, then a real
Prometheus server (Debian's, on loopback) scrapes all three and every PromQL expression of
the Grafana dashboard and the alert rules is run against it."""

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse

import pytest
import websockets

import cp_support
import fleet_support
import support

N_REQUESTS = 24   # GET /api/v1/echo, split over the two nodes
N_ERRORS = 4      # GET /api/v1/status/503 on node 0
M_UPGRADES = 5    # WebSocket upgrades on node 0 ...
K_REFUSED = 2     # ... of which this many from a foreign Origin
SITE_ORIGIN = "http://127.0.0.1"


def metric_value(text, name, labels=None):
    """The value of the sample `name{labels}` in exposition text (labels: subset match)."""
    total = None
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in (labels or {}).items()):
            total = (total or 0) + float(m.group(4))
    return total


async def upgrade(port, origin):
    """Opens /ws/chat/1 with `origin`; returns 'accepted' or the HTTP status refused with."""
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/1", origin=origin,
                                      open_timeout=5, close_timeout=5) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert hello["type"] == "hello"
            return "accepted"
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def promql(port, expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, _, body = support.http_get(url, timeout=10)
    return status, json.loads(body)


def dashboard_exprs():
    with open(os.path.join(support.SOURCE_DIR, "deploy", "grafana", "onedomain-fleet.json")) as f:
        dashboard = json.load(f)
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                yield panel["title"], (expr.replace("$__rate_interval", "1m")
                                       .replace("$node", ".*"))


def alert_exprs():
    import yaml  # python3-yaml, installed by scripts/install-helm.sh
    with open(os.path.join(support.SOURCE_DIR, "deploy", "prometheus", "alerts.yaml")) as f:
        rules = yaml.safe_load(f)
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="never: scripts install it")
def test_counts_fleet_view_and_dashboards_against_prometheus(procs, tmp_path):
    backend = fleet_support.start_backend(procs, "A")
    # A second listener takes PROXY headers: a plain client on it is refused and counted in
    # onedomain_limit_rejections_total, so the client-limits panel has data.
    seed = cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{backend.ports['api']}",),
                                extra_listeners="\n    - name: pp\n      address: 127.0.0.1"
                                                "\n      port: 0\n      proxy_protocol: v2")
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp"), seed=seed).start()
    dps = [fleet_support.start_managed_dataplane(procs, str(tmp_path / f"dp{i}"), cp.address,
                                                 f"node-{i}") for i in range(2)]
    ports = [fleet_support.wait_listener(dp) for dp in dps]
    support.wait_for(lambda: fleet_support.nodes(cp).get("last_known_good_version") == "1", 15,
                     what="both nodes on version 1")

    for i in range(N_REQUESTS):
        status, _, _ = fleet_support.get(ports[i % 2], "/api/v1/echo")
        assert status == 200
    for _ in range(N_ERRORS):
        status, _, _ = fleet_support.get(ports[0], "/api/v1/status/503")
        assert status == 503

    async def upgrades():
        results = []
        for i in range(M_UPGRADES):
            origin = "http://evil.example" if i < K_REFUSED else SITE_ORIGIN
            results.append(await upgrade(ports[0], origin))
        return results
    results = asyncio.run(upgrades())
    assert results == [403] * K_REFUSED + ["accepted"] * (M_UPGRADES - K_REFUSED)
    for dp in dps:  # no PROXY header: closed without an answer, counted
        with socket.create_connection(("127.0.0.1", fleet_support.wait_listener_direct(dp, "pp")),
                                      timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass

    # Exact counts on the data plane itself.
    dp0 = support.http_get(f"http://127.0.0.1:{dps[0].ports['admin']}/metrics")[2].decode()
    assert metric_value(dp0, "onedomain_http_requests_total", {"route": "api", "code": "200"}) \
        == N_REQUESTS / 2
    assert metric_value(dp0, "onedomain_http_requests_total", {"route": "api", "code": "503"}) \
        == N_ERRORS
    assert metric_value(dp0, "onedomain_websocket_upgrades_total",
                        {"route": "ws", "result": "origin_refused"}) == K_REFUSED
    assert metric_value(dp0, "onedomain_websocket_upgrades_total",
                        {"route": "ws", "result": "accepted"}) == M_UPGRADES - K_REFUSED
    assert metric_value(dp0, "onedomain_config_version") == 1
    assert metric_value(dp0, "onedomain_controlplane_connected") == 1

    # The same counts in the control plane's fleet view, once the reports arrived.
    def fleet_counts():
        text = cp.metrics()
        ok = metric_value(text, "onedomain_fleet_total_http_requests_total",
                          {"route": "api", "code_class": "2xx"})
        errors = metric_value(text, "onedomain_fleet_total_http_requests_total",
                              {"route": "api", "code_class": "5xx"})
        refused = metric_value(text, "onedomain_fleet_total_websocket_upgrades_total",
                               {"result": "origin_refused"})
        accepted = metric_value(text, "onedomain_fleet_total_websocket_upgrades_total",
                                {"result": "accepted"})
        return (ok == N_REQUESTS and errors == N_ERRORS and refused == K_REFUSED and
                accepted == M_UPGRADES - K_REFUSED) and text
    text = support.wait_for(fleet_counts, 15, interval=0.1, what="fleet totals")
    assert metric_value(text, "onedomain_fleet_http_requests_total",
                        {"node": "node-1", "route": "api", "code_class": "2xx"}) == N_REQUESTS / 2
    assert metric_value(text, "onedomain_fleet_websocket_upgrades_total",
                        {"node": "node-0", "result": "accepted"}) == M_UPGRADES - K_REFUSED
    assert metric_value(text, "onedomain_fleet_nodes_connected") == 2

    # promtool has no complaint about either exposition.
    for body in (dp0, text):
        r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", \
            r.stdout + r.stderr

    # A real Prometheus scrapes everything.
    prom_port = free_port()
    targets = [f"127.0.0.1:{dp.ports['admin']}" for dp in dps] + [f"127.0.0.1:{cp.http_port}"]
    config = support.write_file(str(tmp_path), "prometheus.yml", f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: onedomain
    static_configs:
      - targets: {json.dumps(targets)}
""")
    prom = procs(["prometheus", f"--config.file={config}",
                  f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{prom_port}"], port_file=False,
                 name="prometheus")

    def all_up():
        try:
            status, data = promql(prom_port, "sum(up)")
        except Exception:  # not listening yet
            return False
        return status == 200 and data["data"]["result"] and \
            float(data["data"]["result"][0]["value"][1]) == 3
    support.wait_for(all_up, 30, interval=0.2, what="prometheus scraping 3 targets")

    # More traffic while Prometheus watches, so rate() over the window has points.
    deadline = time.monotonic() + 6
    i = 0
    while time.monotonic() < deadline and i < 3000:
        fleet_support.get(ports[i % 2], "/api/v1/echo" if i % 10 else "/api/v1/status/503")
        if i % 50 == 0:
            asyncio.run(upgrade(ports[0], SITE_ORIGIN))
            cp.admin("set-upstream", "agents", f"127.0.0.1:{backend.ports['api']}",
                     "--reason", f"observability test {i}")
        i += 1

    def panels_without_data():
        empty = []
        for title, expr in dashboard_exprs():
            status, data = promql(prom_port, expr)
            assert status == 200 and data["status"] == "success", (title, expr, data)
            if not data["data"]["result"]:
                empty.append(f"dashboard panel '{title}' returns no data: {expr}")
        return empty

    # Prometheus scrapes every second and rate() needs two samples after the last change:
    # poll until every panel has data, for far longer than a few scrapes take.
    deadline = time.monotonic() + 30
    empty = panels_without_data()
    for _ in range(120):
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(0.25)
        empty = panels_without_data()
    assert not empty, "\n".join(empty)

    _, names = promql(prom_port, 'count by (__name__) ({__name__=~"onedomain_.+"})')
    metric_names = {r["metric"]["__name__"] for r in names["data"]["result"]}
    for alert, expr in alert_exprs():
        status, data = promql(prom_port, expr)
        assert status == 200 and data["status"] == "success", (alert, expr, data)
        for name in set(re.findall(r"\b(onedomain_[a-z_]+)", expr)):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in metric_names or base in metric_names or \
                any(m.startswith(base) for m in metric_names), \
                f"alert {alert} uses {name}, which no target exposes"
