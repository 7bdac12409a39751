"""Safe config rollouts end to end: a control plane, 10 managed data planes, two good backends
and one that answers 503, with continuous load through every node. A bad upstream rolls back
on its own in an early wave and no node outside the canaries serves a 503; a good change
passes every wave; promote/pause/abort; one rollout at a time; a NACK aborts at once; kill -9
of the control plane in wave 2 resumes and the fleet ends on one version; nodes report the
abnormal WebSocket closes and connect failures the gates read."""

import os
import signal
import subprocess
import time

import cp_support
import fleet_support
import rollout_support as rs
import support


def _history(cp):
    import json
    return json.loads(cp.admin("history", "-o", "json", token="read", check=True).stdout)


def test_bad_upstream_rolls_back_in_an_early_wave(procs, tmp_path):
    bake = 5.0
    fleet = rs.start_fleet(procs, tmp_path, extra=rs.rollout_config(bake="5s", min_requests=20))
    cp, ports = fleet["cp"], fleet["ports"]
    bad = rs.Backend503()
    load = rs.Load(ports).start()
    try:
        support.wait_for(lambda: all(load.count(p, 200) >= 3 for p in ports), 20,
                         what="traffic through every node")
        started = time.monotonic()
        r = cp.admin("set-upstream", "agents", f"127.0.0.1:{bad.port}", "--rollout",
                     "--reason", "typo in the upstream", token="operate", check=True)
        assert "committed version 2" in r.stdout
        st = rs.wait_rollout(cp, rs.ended, 30,
                             "the rollout to end")
        took = time.monotonic() - started
        print(f"rolled back {took:.2f}s after the commit, in wave {int(st.get('wave', 0)) + 1}")
        assert st["state"] == "ROLLOUT_STATE_ROLLED_BACK", st
        assert int(st.get("wave", 0)) <= 1, st  # wave 1 or 2
        assert took < bake + 2.0, f"rolled back after {took:.1f}s, bake {bake}s"
        assert "http_5xx" in st["detail"], st["detail"]
        canaries = set(st["canary_nodes"])
        assert 1 <= len(canaries) < len(ports)
        revert = int(st["revert_version"])
        assert revert == 3
        rs.wait_all_acked(cp, revert, len(ports))
        # Every node serves backend A again.
        support.wait_for(lambda: all(fleet_support.instance_of(p) == "A" for p in ports), 10,
                         what="every node back on backend A")
    finally:
        load.stop()
        bad.stop()
    counts, total = load.snapshot()
    assert total > 100
    for node_id, port in zip(fleet["ids"], ports):
        if node_id not in canaries:
            assert counts[port].get(503, 0) == 0, (node_id, counts[port])
            assert counts[port].get("error", 0) == 0, (node_id, counts[port])
    assert sum(counts[p].get(503, 0) for p in ports) > 0  # the canary did meet the bad backend

    entries = {int(e["version"]): e for e in _history(cp)["entries"]}
    assert entries[2]["outcome"] == "rolled_back", entries[2]
    assert "http_5xx" in entries[2]["outcome_detail"]
    assert entries[2]["delivery"] == "rollout"
    assert entries[3]["method"] == "RolloutRollback"
    assert int(entries[3]["reverts_version"]) == 2
    table = cp.admin("history", token="read", check=True).stdout
    assert "rolled_back 2: revert of version 2: gate http_5xx" in table, table
    metrics = cp.metrics()
    assert 'onedomain_rollouts_total{result="rolled_back"} 1' in metrics
    assert "onedomain_rollout_state 4" in metrics


def test_good_change_passes_every_wave_and_the_verbs_work(procs, tmp_path):
    fleet = rs.start_fleet(procs, tmp_path, extra=rs.rollout_config(bake="2s", min_requests=20))
    cp, ports, b = fleet["cp"], fleet["ports"], fleet["b"]
    load = rs.Load(ports).start()
    try:
        support.wait_for(lambda: all(load.count(p, 200) >= 3 for p in ports), 20,
                         what="traffic through every node")
        r = cp.admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", "--rollout",
                     "--reason", "move to B", token="operate", check=True)
        assert "committed version 2" in r.stdout
        # `rollout status -w` prints each wave and exits 0 when it succeeds.
        cmd = [support.binary("controlplane"), "admin", "--server", cp.address,
               "--token-file", cp.token_files["read"], "rollout", "status", "-w",
               "--watch-for", "60"]
        watched = subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                                 stdin=subprocess.DEVNULL)
        assert watched.returncode == 0, watched.stdout + watched.stderr
        out = watched.stdout
        # 10 nodes: "1" (1 node), "10%" (1 node: skipped), "50%" (5), "100%" (10).
        assert "wave 3/4 (50%, 5 nodes)" in out, out
        assert "wave 4/4 (100%, 10 nodes)" in out, out
        assert "succeeded" in out, out
        rs.wait_all_acked(cp, 2, len(ports))
        support.wait_for(lambda: all(fleet_support.instance_of(p) == "B" for p in ports), 10,
                         what="every node on backend B")
        st = rs.rollout_status(cp)
        assert [w["state"] for w in st["waves"]] == ["passed", "skipped", "passed", "passed"], st

        # A long bake: pause, resume, promote, then one rollout at a time, then abort.
        a = fleet["a"]
        r = cp.admin("set-upstream", "agents", f"127.0.0.1:{a.ports['api']}", "--rollout",
                     "--bake", "10m", token="operate", check=True)
        assert "committed version 3" in r.stdout
        st = rs.wait_rollout(cp, lambda s: s.get("state") == "ROLLOUT_STATE_RUNNING", 10,
                             "rollout of 3 running")
        assert int(st.get("wave", 0)) == 0
        second = cp.admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", "--rollout",
                          token="operate")
        assert second.returncode == 5, second.stdout + second.stderr
        assert "FAILED_PRECONDITION" in second.stderr and "rollout of version 3" in second.stderr
        assert "--supersede" in second.stderr
        # Scale-up during the rollout: the new node starts on the last known good (2), not
        # on the canary version, and is not picked into the running wave.
        late = fleet_support.start_managed_dataplane(procs, str(tmp_path / "dp-late"),
                                                     cp.address, "node-late")
        late_port = fleet_support.wait_listener(late)

        def late_node():
            return next((n for n in fleet_support.nodes(cp)["nodes"]
                         if n["node_id"] == "node-late" and n.get("connected")), None)
        support.wait_for(lambda: (late_node() or {}).get("version_acked") == "2", 20,
                         what="the new node acking version 2")
        assert fleet_support.instance_of(late_port) == "B"
        assert "node-late" not in rs.rollout_status(cp)["canary_nodes"]
        r = cp.admin("rollout", "pause", token="operate", check=True)
        assert "paused" in r.stdout
        r = cp.admin("rollout", "promote", token="read")
        assert r.returncode == 4  # read may not
        r = cp.admin("rollout", "resume", token="operate", check=True)
        r = cp.admin("rollout", "promote", token="operate", check=True)
        st = rs.wait_rollout(cp, lambda s: int(s.get("wave", 0)) >= 1, 10,
                             "promote moves to the next wave")
        assert int(st["wave"]) == 1, st  # not skipped this time: 10% of 11 nodes is 2
        canaries = set(st["canary_nodes"])
        assert len(canaries) == 2
        ids, all_ports = fleet["ids"] + ["node-late"], ports + [late_port]
        support.wait_for(lambda: all(
            fleet_support.instance_of(p) == ("A" if n in canaries else "B")
            for n, p in zip(ids, all_ports)), 10, what="canaries on A, the rest on B")
        r = cp.admin("rollout", "abort", "--reason", "changed my mind", token="operate",
                     check=True)
        assert "aborted" in r.stdout
        st = rs.rollout_status(cp)
        assert st["state"] == "ROLLOUT_STATE_ABORTED"
        revert = int(st["revert_version"])
        rs.wait_all_acked(cp, revert, len(all_ports))
        support.wait_for(lambda: all(fleet_support.instance_of(p) == "B" for p in all_ports),
                         10, what="every node back on B")
        r = cp.admin("rollout", "abort", token="operate")
        assert r.returncode == 5 and "no rollout is running" in r.stderr
    finally:
        load.stop()
    counts, _ = load.snapshot()
    for port in ports:
        assert counts[port].get("error", 0) == 0 and counts[port].get(503, 0) == 0, counts[port]
    entries = {int(e["version"]): e for e in _history(cp)["entries"]}
    assert entries[3]["outcome"] == "aborted"
    assert "changed my mind" in entries[3]["outcome_detail"]


def test_supersede_and_now_need_their_flags(procs, tmp_path):
    fleet = rs.start_fleet(procs, tmp_path, count=2, extra=rs.rollout_config(
        bake="10m", min_requests=20, default_mode="ROLLOUT_MODE_ROLLOUT"))
    cp, a, b = fleet["cp"], fleet["a"], fleet["b"]
    # The default is a rollout.
    cp.admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", token="operate",
             check=True)
    rs.wait_rollout(cp, lambda s: s.get("state") == "ROLLOUT_STATE_RUNNING" and
                    int(s["version"]) == 2, 10, "rollout of 2 running")
    # --now needs the admin role when the default is a rollout.
    r = cp.admin("set-upstream", "agents", f"127.0.0.1:{a.ports['api']}", "--now",
                 "--supersede", token="operate")
    assert r.returncode == 4 and "options.mode" in r.stderr, r.stderr
    # Bad policy overrides name the field.
    r = cp.admin("set-upstream", "agents", f"127.0.0.1:{a.ports['api']}", "--supersede",
                 "--waves", "50%,10%,100%", token="operate")
    assert r.returncode == 3 and "options.rollout_policy.waves[1]" in r.stderr, r.stderr
    r = cp.admin("set-upstream", "agents", f"127.0.0.1:{a.ports['api']}", "--supersede",
                 token="operate", check=True)
    assert "committed version 3" in r.stdout
    st = rs.rollout_status(cp)
    assert int(st["version"]) == 3 and int(st["base_version"]) == 1, st
    r = cp.admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", "--now",
                 "--supersede", check=True)
    assert "committed version 4" in r.stdout
    rs.wait_all_acked(cp, 4, 2)
    assert 'onedomain_rollouts_total{result="superseded"} 2' in cp.metrics()


def test_nack_aborts_at_once(procs, tmp_path):
    fleet = rs.start_fleet(procs, tmp_path, count=4,
                           extra=rs.rollout_config(bake="10m", min_requests=20))
    cp, b, ports = fleet["cp"], fleet["b"], fleet["ports"]
    # A TLS listener whose files exist on no node: the canary refuses the snapshot.
    snap = cp_support.dedent(cp_support.seed_yaml(
        agents_endpoints=(f"127.0.0.1:{b.ports['api']}",), extra_listeners="""
    - name: tls
      address: 127.0.0.1
      port: 0
      tls:
        cert_file: /nonexistent/onedomain/cert.pem
        key_file: /nonexistent/onedomain/key.pem"""))
    path = support.write_file(str(tmp_path), "tls.yaml", snap)
    started = time.monotonic()
    r = cp.admin("apply", "-f", path, "--rollout", check=True)
    assert "committed version 2" in r.stdout
    st = rs.wait_rollout(cp, rs.ended, 15, "the rollout to end")
    assert time.monotonic() - started < 5  # at once, not after the 10-minute bake
    assert st["state"] == "ROLLOUT_STATE_ROLLED_BACK", st
    assert st["detail"].startswith("nack: node "), st["detail"]
    assert "cert.pem" in st["detail"]
    assert len(st["canary_nodes"]) == 1
    rs.wait_all_acked(cp, int(st["revert_version"]), len(ports))
    for port in ports:
        assert fleet_support.instance_of(port) == "A"


def test_kill_9_in_wave_2_resumes_and_the_fleet_ends_on_one_version(procs, tmp_path):
    extra = rs.rollout_config(bake="4s", min_requests=20, waves=("1", "50%", "100%"))
    fleet = rs.start_fleet(procs, tmp_path, extra=extra)
    cp, ports, b = fleet["cp"], fleet["ports"], fleet["b"]
    load = rs.Load(ports).start()
    try:
        support.wait_for(lambda: all(load.count(p, 200) >= 3 for p in ports), 20,
                         what="traffic through every node")
        cp.admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}", "--rollout",
                 token="operate", check=True)
        st = rs.wait_rollout(cp, lambda s: int(s.get("wave", 0)) == 1 and
                             s.get("state") == "ROLLOUT_STATE_RUNNING", 30, "wave 2")
        assert len(st["canary_nodes"]) == 5
        os.kill(cp.proc.pid, signal.SIGKILL)
        cp.proc.wait_exit(5)
        again = cp_support.ControlPlane(procs, str(tmp_path / "cp"), grpc_port=cp.grpc_port,
                                        seed=cp_support.seed_yaml(), extra=extra).start()
        assert "resuming the rollout of version 2 at wave 2/3" in again.proc.output()
        st = rs.wait_rollout(again, rs.ended, 60,
                             "the resumed rollout to end")
        assert st["state"] == "ROLLOUT_STATE_SUCCEEDED", st
        rs.wait_all_acked(again, 2, len(ports))
        support.wait_for(lambda: all(fleet_support.instance_of(p) == "B" for p in ports), 10,
                         what="every node on backend B")
    finally:
        load.stop()
    listed = fleet_support.nodes(again)
    versions = {int(n["version_acked"]) for n in listed["nodes"] if n.get("connected")}
    assert versions == {2}, listed


def test_nodes_report_the_counters_the_gates_read(procs, tmp_path):
    """The node's side of the gates: abnormal WebSocket closes (not 1000/1001, or none) and
    upstream connect failures reach the control plane in the MetricsReport."""
    import asyncio
    import socket

    import ws_support

    fleet = rs.start_fleet(procs, tmp_path, count=1)
    cp, port = fleet["cp"], fleet["ports"][0]

    def counters():
        node = fleet_support.nodes(cp)["nodes"][0]
        return {k: int(v) for k, v in node.get("counters", {}).items()
                if k != "start_seconds"}

    async def one_clean_one_abrupt():
        ws = await ws_support.connect(port)
        await ws_support.hello(ws)
        await ws.close()  # 1000: normal
        ws = await ws_support.connect(port)
        await ws_support.hello(ws)
        ws.transport.abort()  # no Close frame: abnormal
    asyncio.run(one_clean_one_abrupt())
    support.wait_for(lambda: counters().get("websocket_closes_abnormal") == 1, 15,
                     what="one abnormal close reported")

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cp.admin("set-upstream", "agents", f"127.0.0.1:{dead}", "--now", check=True)
    rs.wait_all_acked(cp, 2, 1)
    for _ in range(5):
        assert fleet_support.get(port, "/api/v1/echo")[0] in (502, 503)
    support.wait_for(lambda: counters().get("upstream_connect_failures", 0) >= 1
                     and counters().get("http_5xx", 0) >= 5, 15,
                     what="connect failures and 5xx reported")
    assert counters()["websocket_closes_abnormal"] == 1  # the clean close did not count
