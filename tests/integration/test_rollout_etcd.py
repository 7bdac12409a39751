"""Rollouts with the etcd store: two control-plane replicas, four nodes split between them,
continuous load. A rollout started through the follower is run by the leader only (it picks
canaries among both replicas' nodes and judges their counters), every replica applies the
same canary split to its own nodes, and after kill -9 of the leader in wave 2 the other
replica takes the leadership, adopts the rollout and finishes it: every node ends on the new
version with no failed request. A bad upstream rolls back across both replicas and no node
outside the canary ever serves a 503."""

import pytest

import cp_support
import etcd_support
import fleet_support
import rollout_support as rs
import support
from test_controlplane_etcd import metric, node_version

pytestmark = pytest.mark.skipif(not etcd_support.have_etcd(),
                                reason="etcd-server not installed (scripts/install-deps.sh)")


def start_two_replicas(procs, tmp_path, bake="4s"):
    """etcd, backends A and B, two replicas, four nodes (two per replica, each listing both).
    Returns (cps, leader, follower, dps, ports, ids, b)."""
    etcd = etcd_support.EtcdCluster(procs).start()
    a = fleet_support.start_backend(procs, "A")
    b = fleet_support.start_backend(procs, "B")
    seed = cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{a.ports['api']}",))
    store = etcd_support.etcd_store_yaml(etcd.endpoints)
    extra = rs.rollout_config(bake=bake, min_requests=10, waves=("1", "50%", "100%"))
    cps = [cp_support.ControlPlane(procs, str(tmp_path / f"cp{i}"), seed=seed, store=store,
                                   extra=extra).start() for i in range(2)]
    dps = [fleet_support.start_managed_dataplane(
               procs, str(tmp_path / f"dp{i}"),
               ",".join(cps[(i + k) % 2].address for k in range(2)), f"node-{i}")
           for i in range(4)]
    ports = [fleet_support.wait_listener(dp) for dp in dps]
    ids = [f"node-{i}" for i in range(4)]
    for dp in dps:
        support.wait_for(lambda dp=dp: node_version(dp) == 1, 20, what="node on version 1")

    def leaders():
        return [cp for cp in cps if cp.proc.proc.poll() is None
                and metric(cp, "onedomain_controlplane_leader") == 1]
    leader = support.wait_for(lambda: leaders()[0] if len(leaders()) == 1 else None, 20,
                              what="one leader")
    follower = cps[1] if leader is cps[0] else cps[0]
    return cps, leader, follower, dps, ports, ids, b


def test_rollout_runs_on_the_leader_and_survives_a_leader_change(procs, tmp_path):
    cps, leader, follower, dps, ports, ids, b = start_two_replicas(procs, tmp_path)
    load = rs.Load(ports, rate=80).start()
    try:
        support.wait_for(lambda: all(load.count(p, 200) >= 3 for p in ports), 20,
                         what="traffic through every node")
        # Any replica may start a rollout; the leader runs its waves.
        r = follower.admin("set-upstream", "agents", f"127.0.0.1:{b.ports['api']}",
                           "--rollout", "--reason", "via the follower", token="operate",
                           check=True)
        assert "committed version 2" in r.stdout
        st = rs.wait_rollout(follower, lambda s: s.get("state") == "ROLLOUT_STATE_RUNNING"
                             and len(s.get("canary_nodes", [])) == 1, 20,
                             "wave 1 picked by the leader, seen on the follower")
        canary = st["canary_nodes"][0]
        # The split holds on both replicas' nodes: the canary on B, the rest on A.
        support.wait_for(lambda: all(
            fleet_support.instance_of(p) == ("B" if n == canary else "A")
            for n, p in zip(ids, ports)), 15, what="the canary on B, every other node on A")
        assert "version 2: wave 1/3" in leader.proc.output()
        # Control verbs go to the leader.
        r = follower.admin("rollout", "pause", token="operate")
        assert r.returncode == 5 and "does not lead rollouts" in r.stderr, r.stderr

        rs.wait_rollout(leader, lambda s: int(s.get("wave", 0)) == 1
                        and s.get("state") == "ROLLOUT_STATE_RUNNING", 30, "wave 2")
        assert "version 2: wave" not in follower.proc.output()  # only the leader judged
        leader.proc.proc.kill()  # kill -9: the lease is not revoked, it expires
        leader.proc.wait_exit(5)
        support.wait_for(lambda: metric(follower, "onedomain_controlplane_leader") == 1, 30,
                         interval=0.2, what="the follower taking the leadership")
        st = rs.wait_rollout(follower, rs.ended, 60,
                             "the adopted rollout to end")
        assert st["state"] == "ROLLOUT_STATE_SUCCEEDED", st
        assert "adopting the rollout of version 2 at wave 2/3" in follower.proc.output()
        for dp in dps:
            support.wait_for(lambda dp=dp: node_version(dp) == 2, 30, what="node on version 2")
        support.wait_for(lambda: all(fleet_support.instance_of(p) == "B" for p in ports), 15,
                         what="every node on backend B")
    finally:
        load.stop()
    counts, total = load.snapshot()
    assert total > 100
    for port in ports:
        assert counts[port].get("error", 0) == 0 and counts[port].get(503, 0) == 0, counts[port]


def test_bad_upstream_rolls_back_across_replicas_and_no_other_node_serves_a_503(procs,
                                                                                 tmp_path):
    cps, leader, follower, dps, ports, ids, _ = start_two_replicas(procs, tmp_path, bake="10s")
    bad = rs.Backend503()
    load = rs.Load(ports, rate=80).start()
    try:
        support.wait_for(lambda: all(load.count(p, 200) >= 3 for p in ports), 20,
                         what="traffic through every node")
        leader.admin("set-upstream", "agents", f"127.0.0.1:{bad.port}", "--rollout",
                     token="operate", check=True)
        st = rs.wait_rollout(follower, rs.ended, 30,
                             "the rollout to end, seen on the follower")
        assert st["state"] == "ROLLOUT_STATE_ROLLED_BACK", st
        assert "http_5xx" in st["detail"], st["detail"]
        canaries = set(st["canary_nodes"])
        assert len(canaries) == 1
        revert = int(st["revert_version"])
        for dp in dps:
            support.wait_for(lambda dp=dp: node_version(dp) == revert, 20,
                             what="node on the revert version")
        support.wait_for(lambda: all(fleet_support.instance_of(p) == "A" for p in ports), 15,
                         what="every node back on backend A")
    finally:
        load.stop()
        bad.stop()
    counts, _ = load.snapshot()
    for node_id, port in zip(ids, ports):
        if node_id not in canaries:
            assert counts[port].get(503, 0) == 0, (node_id, counts[port])
        assert counts[port].get("error", 0) == 0, (node_id, counts[port])
    assert sum(counts[p].get(503, 0) for p in ports) > 0
