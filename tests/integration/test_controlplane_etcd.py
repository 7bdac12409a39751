"""Control-plane replicas sharing a real etcd (Debian's etcd-server on 127.0.0.1, temp data
dir): a change through any replica reaches every replica's nodes; commits are etcd
transactions, so --expected-version conflicts hold across replicas and no version number is
issued twice; etcd going away keeps nodes serving and refuses writes with exit 6 until it is
back; replicas that missed versions (stopped, or frozen across a compaction) converge; `store copy`
moves a file store into etcd idempotently."""

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

import cp_support
import etcd_support
import fleet_support
import support

pytestmark = pytest.mark.skipif(not etcd_support.have_etcd(),
                                reason="etcd-server not installed (scripts/install-deps.sh)")


def start_replicas(procs, tmp_path, etcd, count, seed=None, prefix="/onedomain/"):
    store = etcd_support.etcd_store_yaml(etcd.endpoints, prefix=prefix)
    cps = []
    for i in range(count):
        cp = cp_support.ControlPlane(procs, str(tmp_path / f"cp{i}"), seed=seed, store=store,
                                     extra="\nnodes:\n  allow_unauthenticated: false")
        cps.append(cp.start())
    return cps


def latest_version(cp):
    r = cp.admin("get", "-o", "json", token="read", check=True)
    return int(json.loads(r.stdout).get("version", 0))


def history_versions(cp):
    r = cp.admin("history", "-o", "json", token="read", check=True)
    return [int(e["version"]) for e in json.loads(r.stdout).get("entries", [])]


def node_version(dp):
    status, _, body = support.http_get(f"http://127.0.0.1:{dp.ports['admin']}/metrics")
    if status != 200:
        return 0
    for line in body.decode().splitlines():
        if line.startswith("onedomain_config_version "):
            return int(float(line.split()[1]))
    return 0


def metric(cp, name):
    for line in cp.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_set_upstream_through_any_replica_reaches_every_node(procs, tmp_path):
    etcd = etcd_support.EtcdCluster(procs).start()
    a = fleet_support.start_backend(procs, "A")
    b = fleet_support.start_backend(procs, "B")
    seed = cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{a.ports['api']}",))
    cps = start_replicas(procs, tmp_path, etcd, 3, seed=seed)
    # One seed, one version 1, whichever replica won the race to seed the empty store.
    assert [latest_version(cp) for cp in cps] == [1, 1, 1]
    dps = [fleet_support.start_managed_dataplane(procs, str(tmp_path / f"dp{i}"),
                                                 cps[i % 3].address, f"node-{i}")
           for i in range(5)]
    ports = [fleet_support.wait_listener(dp) for dp in dps]
    for port in ports:
        support.wait_for(lambda port=port: fleet_support.instance_of(port) == "A", 15,
                         what="node serving A")

    r = cps[1].admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", "--reason",
                     "switch to B", token="operate", check=True)
    assert "committed version 2" in r.stdout
    for port in ports:
        support.wait_for(lambda port=port: fleet_support.instance_of(port) == "B", 15,
                         what="every node (on every replica) sending to B")
    for dp in dps:
        support.wait_for(lambda dp=dp: node_version(dp) == 2, 10, what="node on version 2")
    # Every replica answers the same latest version and the same history, and its metrics
    # say so; the store is up.
    for cp in cps:
        assert latest_version(cp) == 2
        assert history_versions(cp) == [2, 1]
        support.wait_for(lambda cp=cp: metric(cp, "onedomain_config_latest_version") == 2, 10,
                         what="latest version metric on every replica")
        assert metric(cp, "onedomain_store_up") == 1
        assert 'onedomain_store_request_seconds_count{op="commit"}' in cp.metrics()

    # The fleet view across replicas: every replica lists the same 5 nodes (each on the
    # replica holding its stream), the same last known good version and the same cluster
    # gauges; per-node series stay on the replica holding the stream.
    def view(cp):
        listed = json.loads(cp.admin("nodes", "-o", "json", token="read", check=True).stdout)
        return (sorted((n["node_id"], n.get("replica"), bool(n.get("connected")),
                        int(n.get("version_acked", 0))) for n in listed.get("nodes", [])),
                int(listed.get("last_known_good_version", 0)), len(listed.get("replicas", [])))
    host = socket.gethostname()
    expected = sorted((f"node-{i}", f"{host}:{cps[i % 3].grpc_port}", True, 2) for i in range(5))
    for cp in cps:
        support.wait_for(lambda cp=cp: view(cp) == (expected, 2, 3), 15, interval=0.2,
                         what="the same 5 nodes, LKG 2 and 3 replicas on every replica")
        support.wait_for(
            lambda cp=cp: (metric(cp, "onedomain_fleet_cluster_nodes_connected"),
                           metric(cp, "onedomain_fleet_cluster_nodes_on_latest_version"),
                           metric(cp, "onedomain_controlplane_replicas")) == (5, 5, 3),
            10, interval=0.2, what="cluster gauges on every replica")
    own = [metric(cp, "onedomain_fleet_nodes_connected") for cp in cps]
    assert own == [2, 2, 1], own
    assert sum(metric(cp, "onedomain_controlplane_leader") for cp in cps) == 1
    support.wait_for(lambda: etcd.ctl("get", "/onedomain/lkg", "--print-value-only").strip()
                     == "2", 10, interval=0.2, what="the leader's LKG marker in etcd")


def test_expected_version_conflicts_across_replicas(procs, tmp_path):
    etcd = etcd_support.EtcdCluster(procs).start()
    cps = start_replicas(procs, tmp_path, etcd, 2)
    snap = support.write_file(str(tmp_path), "snap.yaml", cp_support.dedent(
        cp_support.seed_yaml(agents_endpoints=("127.0.0.1:8100",))))
    ok = cps[0].admin("apply", "-f", snap, "--expected-version", "1", check=True)
    assert "committed version 2" in ok.stdout
    # The other replica computed nothing stale: its answer comes from etcd's compare.
    late = cps[1].admin("apply", "-f", snap, "--expected-version", "1")
    assert late.returncode == 5, late.stdout + late.stderr
    assert "expected_version" in late.stderr
    assert history_versions(cps[1]) == [2, 1]


def test_concurrent_applies_never_share_a_version(procs, tmp_path):
    etcd = etcd_support.EtcdCluster(procs).start()
    cps = start_replicas(procs, tmp_path, etcd, 2)
    snaps = [support.write_file(str(tmp_path), f"snap{i}.yaml", cp_support.dedent(
        cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{8100 + i}",)))) for i in range(2)]
    results = []
    lock = threading.Lock()

    def client(i):
        cp = cps[i]
        for _ in range(8):
            base = latest_version(cp)
            r = cp.admin("apply", "-f", snaps[i], "--expected-version", str(base),
                         "--reason", f"client {i}")
            with lock:
                results.append((i, r.returncode, r.stdout, r.stderr))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    committed = []
    for i, code, out, err in results:
        assert code in (0, 5), (code, out, err)
        if code == 0:
            committed.append(int(out.split("committed version ")[1].split()[0]))
    assert len(committed) == len(set(committed)), committed
    history = history_versions(cps[0])
    assert len(history) == len(set(history))
    for v in committed:
        assert history.count(v) == 1
    assert history == sorted(history, reverse=True)


def test_etcd_away_nodes_keep_serving_writes_fail_with_6_then_recover(procs, tmp_path):
    etcd = etcd_support.EtcdCluster(procs).start()
    a = fleet_support.start_backend(procs, "A")
    b = fleet_support.start_backend(procs, "B")
    seed = cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{a.ports['api']}",))
    cps = start_replicas(procs, tmp_path, etcd, 2, seed=seed)
    dp = fleet_support.start_managed_dataplane(procs, str(tmp_path / "dp"), cps[0].address,
                                               "node-0")
    port = fleet_support.wait_listener(dp)
    support.wait_for(lambda: fleet_support.instance_of(port) == "A", 15, what="serving A")

    etcd.stop()
    for cp in cps:
        support.wait_for(lambda cp=cp: metric(cp, "onedomain_store_up") == 0, 15,
                         what="onedomain_store_up 0")
    assert fleet_support.instance_of(port) == "A"  # nodes keep serving
    r = cps[1].admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", token="operate")
    assert r.returncode == 6, r.stdout + r.stderr
    assert "UNAVAILABLE" in r.stderr and "etcd" in r.stderr, r.stderr
    got = cps[0].admin("get", token="read")
    assert got.returncode == 0, got.stderr
    assert "stale" in got.stderr and "etcd" in got.stderr and "unreachable for" in got.stderr
    assert fleet_support.instance_of(port) == "A"

    etcd.restart()
    for cp in cps:
        support.wait_for(lambda cp=cp: metric(cp, "onedomain_store_up") == 1, 20,
                         what="onedomain_store_up back to 1 without a restart")
    r = cps[1].admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", token="operate",
                     check=True)
    assert "committed version 2" in r.stdout
    support.wait_for(lambda: fleet_support.instance_of(port) == "B", 15,
                     what="node (on the other replica) serving B")
    assert cps[0].admin("get", token="read").stderr == ""


def test_replicas_that_missed_20_versions_or_were_frozen_across_a_compaction_converge(procs, tmp_path):
    etcd = etcd_support.EtcdCluster(procs).start()
    cps = start_replicas(procs, tmp_path, etcd, 3)
    # Each node lists every replica, its own first: when its replica dies it moves on.
    dps = [fleet_support.start_managed_dataplane(
               procs, str(tmp_path / f"dp{i}"),
               ",".join(cps[(i + k) % 3].address for k in range(3)), f"node-{i}")
           for i in range(3)]
    for dp in dps:
        fleet_support.wait_listener(dp)
        support.wait_for(lambda dp=dp: node_version(dp) == 1, 15, what="node on version 1")
    # Replica 1 stops (kill -9); replica 2 is frozen, so when it thaws its watch brings 20
    # versions whose revisions etcd has compacted away: each is fetched at the newest
    # revision instead (the version keys are immutable).
    cps[1].proc.proc.kill()
    cps[1].proc.proc.wait(timeout=10)
    cps[2].proc.signal(signal.SIGSTOP)
    try:
        for i in range(20):
            cps[0].admin("set-upstream", "agents", f"127.0.0.1:{9000 + i}", token="operate",
                         check=True)
        etcd.compact()
    finally:
        cps[2].proc.signal(signal.SIGCONT)
    cps[1].start()
    for cp in cps:
        support.wait_for(lambda cp=cp: metric(cp, "onedomain_config_latest_version") == 21, 20,
                         what="every replica at version 21")
    for dp in dps:
        support.wait_for(lambda dp=dp: node_version(dp) == 21, 20,
                         what="every node at version 21")
    # The restarted replica (it missed 20 versions) answers the current history.
    assert history_versions(cps[1])[0] == 21
    # node-1 lost its replica (kill -9) and went on to the next one in its list; every
    # replica's `nodes` shows it connected there (the fleet view across replicas).
    def node1_elsewhere(cp):
        listed = json.loads(cp.admin("nodes", "-o", "json", token="read", check=True).stdout)
        for n in listed.get("nodes", []):
            if n["node_id"] == "node-1" and n.get("connected"):
                return n.get("replica") == f"{socket.gethostname()}:{cps[2].grpc_port}"
        return False
    for cp in cps:
        support.wait_for(lambda cp=cp: node1_elsewhere(cp), 15, interval=0.2,
                         what="node-1 listed on replica 2 by every replica")


def test_store_copy_moves_a_file_store_into_etcd_idempotently(procs, tmp_path):
    cp = cp_support.ControlPlane(procs, str(tmp_path / "file")).start()
    for i in range(3):
        cp.admin("set-upstream", "agents", f"127.0.0.1:{8200 + i}", token="operate",
                 check=True)
    file_history = history_versions(cp)
    assert file_history == [4, 3, 2, 1]
    cp.proc.stop()
    etcd = etcd_support.EtcdCluster(procs).start()
    to = "etcd://" + etcd.endpoints[0][len("http://"):] + "/moved/"
    cmd = [support.binary("controlplane"), "store", "copy", "--from", str(tmp_path / "file/store"),
           "--to", to]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "4 written, 0 already there" in first.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "0 written, 4 already there" in again.stdout
    # Another store's history into the same prefix: refused, nothing of the head moved.
    other = cp_support.ControlPlane(procs, str(tmp_path / "other"),
                                    seed=cp_support.seed_yaml(agents_endpoints=("127.0.0.1:7",)))
    other.start()
    other.proc.stop()
    clash = subprocess.run([support.binary("controlplane"), "store", "copy", "--from",
                            str(tmp_path / "other/store"), "--to", to],
                           capture_output=True, text=True, timeout=60)
    assert clash.returncode == 1, clash.stdout + clash.stderr
    assert "already holds different content" in clash.stderr, clash.stderr
    (replica,) = start_replicas(procs, tmp_path, etcd, 1, prefix="/moved/")
    assert history_versions(replica) == file_history
    r = replica.admin("get", "-o", "json", token="read", check=True)
    assert json.loads(r.stdout)["clusters"][0]["endpoints"][0]["port"] == 8202
    r = replica.admin("set-upstream", "agents", "127.0.0.1:8300", token="operate", check=True)
    assert "committed version 5" in r.stdout


def test_store_etcd_config_errors_name_file_line_and_key(tmp_path):
    config = support.write_file(str(tmp_path), "cp.yaml", """
store:
  etcd:
    endpoints: ["127.0.0.1:2379"]
    prefix: onedomain
    timeout: 5s
""")
    r = subprocess.run([support.binary("controlplane"), "serve", "--config", config,
                        "--check-config"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cp.yaml:6" in r.stdout + r.stderr and "timeout" in r.stdout + r.stderr, r.stderr
    config = support.write_file(str(tmp_path), "cp2.yaml", """
store:
  etcd:
    endpoints: ["127.0.0.1:2379"]
    prefix: onedomain
""")
    r = subprocess.run([support.binary("controlplane"), "serve", "--config", config,
                        "--check-config"], capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 1
    assert "cp2.yaml:4" in out and "store.etcd.endpoints[0]" in out, out
    assert "cp2.yaml:5" in out and "store.etcd.prefix" in out, out


def test_etcd_over_tls_with_a_client_certificate(procs, tmp_path):
    from test_controlplane_tls import make_ca_and_server_cert
    d = str(tmp_path / "pki")
    os.makedirs(d)
    ca, cert, key = make_ca_and_server_cert(d)
    # The server certificate (clientAuth not restricted) doubles as the client's.
    etcd = etcd_support.EtcdCluster(procs, tls=(ca, cert, key)).start()
    assert etcd.endpoints[0].startswith("https://")
    store = etcd_support.etcd_store_yaml(
        etcd.endpoints, extra=f"\n    ca_file: {ca}\n    cert_file: {cert}\n    key_file: {key}")
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp"), store=store).start()
    r = cp.admin("set-upstream", "agents", "127.0.0.1:8300", token="operate", check=True)
    assert "committed version 2" in r.stdout
    assert "/onedomain/version" in etcd.ctl("get", "--prefix", "/onedomain/", "--keys-only")
    # Without the client certificate etcd refuses the handshake: start fails, naming etcd.
    store = etcd_support.etcd_store_yaml(etcd.endpoints, extra=f"\n    ca_file: {ca}").replace(
        "dial_timeout: 5s", "dial_timeout: 1s")
    bad = cp_support.ControlPlane(procs, str(tmp_path / "bad"), store=store)
    bad.proc = procs([support.binary("controlplane"), "serve", "--config", bad.config])
    assert bad.proc.wait_exit(30) == 1
    assert "store.etcd: no answer from etcd (https://127.0.0.1:" in bad.proc.output()
