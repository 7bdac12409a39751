"""The fleet end to end: a control plane, three managed data planes and two backends; one
admin command moves every node's traffic; NACKs; control-plane crashes; cold starts from the
snapshot cache."""

import json
import os
import signal
import threading
import time

import cp_support
import fleet_support
import support


def wait_all_acked(cp, version, count, timeout=20.0):
    def done():
        listed = fleet_support.nodes(cp)
        acked = [n for n in listed.get("nodes", [])
                 if n.get("connected") and int(n.get("version_acked", 0)) >= version]
        return len(acked) == count
    support.wait_for(done, timeout, interval=0.05, what=f"{count} nodes acking {version}")


def start_fleet(procs, tmp_path, count=3):
    a = fleet_support.start_backend(procs, "A")
    b = fleet_support.start_backend(procs, "B")
    seed = cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{a.ports['api']}",))
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp"), seed=seed).start()
    dps = []
    for i in range(count):
        dps.append(fleet_support.start_managed_dataplane(
            procs, str(tmp_path / f"dp{i}"), cp.address, f"node-{i}"))
    ports = [fleet_support.wait_listener(dp) for dp in dps]
    wait_all_acked(cp, 1, count)
    return a, b, cp, dps, ports


def test_set_upstream_moves_every_node_with_zero_failed_requests(procs, tmp_path):
    a, b, cp, dps, ports = start_fleet(procs, tmp_path)
    for port in ports:
        assert fleet_support.instance_of(port) == "A"

    stop = threading.Event()
    results = {"ok": 0, "failed": [], "seen_b": set()}

    def client():
        i = 0
        deadline = time.monotonic() + 30
        while not stop.is_set() and i < 20000 and time.monotonic() < deadline:
            port = ports[i % len(ports)]
            i += 1
            try:
                status, _, body = fleet_support.get(port, "/api/v1/echo")
                if status != 200:
                    results["failed"].append(status)
                    continue
                results["ok"] += 1
                if json.loads(body)["instance"] == "B":
                    results["seen_b"].add(port)
            except Exception as e:  # a failed request is what this test counts
                results["failed"].append(repr(e))

    t = threading.Thread(target=client)
    t.start()
    try:
        support.wait_for(lambda: results["ok"] > 50, 10, what="traffic flowing")
        r = cp.admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", "--reason",
                     "switch to B", token="operate", check=True)
        assert "committed version 2" in r.stdout
        wait_all_acked(cp, 2, len(dps))
        support.wait_for(lambda: len(results["seen_b"]) == len(ports), 10,
                         what="every node sending to B")
        before = results["ok"]
        support.wait_for(lambda: results["ok"] > before + 50, 10, what="traffic after switch")
    finally:
        stop.set()
        t.join(35)
    assert results["failed"] == [], results["failed"][:5]
    for port in ports:
        assert fleet_support.instance_of(port) == "B"
    listed = fleet_support.nodes(cp)
    assert int(listed["last_known_good_version"]) == 2
    # The fleet view on the control plane's /metrics agrees.
    metrics = cp.metrics()
    assert "onedomain_fleet_nodes_connected 3" in metrics
    assert "onedomain_fleet_nodes_on_latest_version 3" in metrics


def test_nack_is_shown_and_node_keeps_serving(procs, tmp_path):
    a, b, cp, dps, ports = start_fleet(procs, tmp_path, count=2)
    # A TLS listener whose files exist on no node: every node refuses the snapshot.
    snap = cp_support.dedent(cp_support.seed_yaml(
        agents_endpoints=(f"127.0.0.1:{b.ports['api']}",), extra_listeners="""
    - name: tls
      address: 127.0.0.1
      port: 0
      tls:
        cert_file: /nonexistent/onedomain/cert.pem
        key_file: /nonexistent/onedomain/key.pem"""))
    path = support.write_file(str(tmp_path), "tls.yaml", snap)
    r = cp.admin("apply", "-f", path, check=True)
    assert "committed version 2" in r.stdout

    def nacked():
        return all(int(n.get("version_nacked", 0)) == 2 for n in fleet_support.nodes(cp)["nodes"])
    support.wait_for(nacked, 15, what="both nodes NACK version 2")
    table = cp.admin("nodes", check=True).stdout
    assert "NACK node-0 version 2" in table and "cert.pem" in table
    for port in ports:
        assert fleet_support.instance_of(port) == "A"  # still on version 1
    assert int(fleet_support.nodes(cp)["last_known_good_version"]) == 1
    assert "onedomain_fleet_node_nacked{node=\"node-0\"} 1" in cp.metrics()


def test_controlplane_kill_9_nodes_keep_serving_and_resync(procs, tmp_path):
    a, b, cp, dps, ports = start_fleet(procs, tmp_path, count=2)
    cp.admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", check=True)
    wait_all_acked(cp, 2, 2)
    os.kill(cp.proc.pid, signal.SIGKILL)
    cp.proc.wait_exit(5)
    for _ in range(20):
        for port in ports:
            assert fleet_support.instance_of(port) == "B"
    for dp in dps:
        support.wait_for(lambda dp=dp: "onedomain_controlplane_connected 0" in support.http_get(
            f"http://127.0.0.1:{dp.ports['admin']}/metrics")[2].decode(), 15,
            what="node notices the control plane is gone")
    again = cp_support.ControlPlane(procs, str(tmp_path / "cp"), grpc_port=cp.grpc_port)
    again.start()
    wait_all_acked(again, 2, 2)
    assert int(fleet_support.nodes(again)["latest_version"]) == 2
    for port in ports:
        assert fleet_support.instance_of(port) == "B"


def test_dataplane_cold_start_from_cache_while_controlplane_down(procs, tmp_path):
    a, b, cp, dps, ports = start_fleet(procs, tmp_path, count=1)
    cp.admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", check=True)
    wait_all_acked(cp, 2, 1)
    dps[0].stop()
    cp.proc.stop()
    # No control plane: the node boots from its cache and serves version 2.
    dp = fleet_support.start_managed_dataplane(procs, str(tmp_path / "dp0"), cp.address,
                                               "node-0")
    port = fleet_support.wait_listener(dp)
    assert fleet_support.instance_of(port) == "B"
    metrics = support.http_get(f"http://127.0.0.1:{dp.ports['admin']}/metrics")[2].decode()
    assert "onedomain_config_version 2" in metrics
    assert "onedomain_controlplane_connected 0" in metrics
