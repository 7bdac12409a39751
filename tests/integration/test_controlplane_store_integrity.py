"""Version numbers are never reused and nodes never silently serve other content under the
same number (issue #15, item 4): a store restored from an older backup continues above what a
node serves, a 0-byte newest snapshot file stops the control plane with a message naming the
file, a node serving other content under the latest number gets it pushed again, and state
the store or a node finds lost (emptied audit log, 0-byte node cache) is logged and counted."""

import json
import os
import re
import shutil

import cp_support
import fleet_support
import support


def metric(text, name, labels=""):
    m = re.search(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else None


def set_upstream(cp, port):
    r = cp.admin("set-upstream", "agents", f"127.0.0.1:{port}", check=True)
    return int(re.search(r"committed version (\d+)", r.stdout).group(1))


def node_status(cp, node_id):
    for n in fleet_support.nodes(cp).get("nodes", []):
        if n["node_id"] == node_id:
            return n
    return None


def acked(cp, node_id, version):
    n = node_status(cp, node_id)
    return n is not None and n.get("connected") and int(n.get("version_acked", 0)) == version


def dump_agents_port(dp):
    status, _, body = support.http_get(f"http://127.0.0.1:{dp.ports['admin']}/config_dump")
    assert status == 200
    snap = json.loads(body)
    agents = next(c for c in snap["clusters"] if c["name"] == "agents")
    return int(snap.get("version", 0)), agents["endpoints"][0]["port"]


def start_node(procs, tmp_path, cp, node_id="n1"):
    dp = fleet_support.start_managed_dataplane(procs, str(tmp_path / node_id), cp.address,
                                               node_id)
    dp.wait_ports()
    return dp


def test_restore_from_older_backup_continues_above_what_a_node_serves(procs, tmp_path):
    state = str(tmp_path / "cp")
    cp = cp_support.ControlPlane(procs, state).start()
    assert set_upstream(cp, 9002) == 2
    cp.proc.stop()
    shutil.copytree(f"{state}/store", str(tmp_path / "backup"))  # the backup: version 2

    cp = cp_support.ControlPlane(procs, state).start()
    dp = start_node(procs, tmp_path, cp)
    assert set_upstream(cp, 9003) == 3
    assert set_upstream(cp, 9004) == 4
    support.wait_for(lambda: acked(cp, "n1", 4), 20, what="n1 on version 4")
    cp.proc.stop()

    # The whole store directory comes back from the backup: high_water_mark and audit log too.
    shutil.rmtree(f"{state}/store")
    shutil.copytree(str(tmp_path / "backup"), f"{state}/store")
    cp = cp_support.ControlPlane(procs, state, grpc_port=cp.grpc_port).start()
    # n1 reconnects saying it serves 4: the floor goes above it, and n1 gets the store's
    # content (version 2) pushed, since that is what the control plane now holds.
    support.wait_for(lambda: acked(cp, "n1", 2), 20, what="n1 back on the store's version 2")
    assert dump_agents_port(dp) == (2, 9002)
    support.wait_for(lambda: metric(cp.metrics(), "onedomain_store_state_loss_total",
                                    '{kind="node_ahead_of_store"}') == 1, 10,
                     what="node_ahead_of_store counted")
    assert "node n1 serves version 4, above every version this store remembers" in \
        cp.proc.output()
    assert set_upstream(cp, 9005) == 5, "version 3 and 4 were issued before: never again"
    support.wait_for(lambda: acked(cp, "n1", 5), 20, what="n1 on version 5")
    assert dump_agents_port(dp) == (5, 9005)
    with open(f"{state}/store/high_water_mark") as f:
        assert f.read().strip() == "5"


def test_node_serving_other_content_under_the_same_number_gets_it_again(procs, tmp_path):
    """The node was away while the store was restored and a number was issued again (no one
    could know it was taken): its Hello's content hash gives it away and it is resynced."""
    state = str(tmp_path / "cp")
    cp = cp_support.ControlPlane(procs, state).start()
    assert set_upstream(cp, 9002) == 2
    cp.proc.stop()
    shutil.copytree(f"{state}/store", str(tmp_path / "backup"))
    cp = cp_support.ControlPlane(procs, state).start()
    dp = start_node(procs, tmp_path, cp)
    assert set_upstream(cp, 9003) == 3
    support.wait_for(lambda: acked(cp, "n1", 3), 20, what="n1 on version 3")
    dp.stop()
    cp.proc.stop()

    shutil.rmtree(f"{state}/store")
    shutil.copytree(str(tmp_path / "backup"), f"{state}/store")
    cp = cp_support.ControlPlane(procs, state).start()
    assert set_upstream(cp, 9333) == 3  # the number comes back: nothing remembered 3

    dp = start_node(procs, tmp_path, cp)  # boots from its cache: version 3, port 9003
    support.wait_for(lambda: acked(cp, "n1", 3) and dump_agents_port(dp) == (3, 9333), 20,
                     what="n1 resynced to the control plane's version 3")
    n = node_status(cp, "n1")
    assert not n.get("divergence"), n
    assert re.fullmatch(r"[0-9a-f]{64}", n["content_hash"]), n
    assert "serves version 3 with content hash" in cp.proc.output()
    assert "pushing it again" in cp.proc.output()


def test_zero_byte_newest_snapshot_refuses_to_start_naming_the_file(procs, tmp_path):
    state = str(tmp_path / "cp")
    cp = cp_support.ControlPlane(procs, state).start()
    assert set_upstream(cp, 9002) == 2
    cp.proc.stop()
    newest = f"{state}/store/snapshots/v00000000000000000002.pb"
    open(newest, "wb").close()

    again = procs([support.binary("controlplane"), "serve", "--config", cp.config])
    assert again.wait_exit(15) == 1
    out = again.output()
    assert f"{newest}: empty file (0 bytes)" in out, out
    assert os.path.getsize(newest) == 0, "nothing was overwritten"

    # Content that disagrees with the file name is refused too.
    shutil.copy(f"{state}/store/snapshots/v00000000000000000001.pb", newest)
    again = procs([support.binary("controlplane"), "serve", "--config", cp.config])
    assert again.wait_exit(15) == 1
    assert f"{newest}: holds version 1 but its name says 2" in again.output()


def test_emptied_audit_log_is_logged_and_counted(procs, tmp_path):
    state = str(tmp_path / "cp")
    cp = cp_support.ControlPlane(procs, state).start()
    assert metric(cp.metrics(), "onedomain_store_state_loss_total",
                  '{kind="audit_log_empty"}') == 0
    cp.proc.stop()
    open(f"{state}/store/audit.log", "w").close()
    cp = cp_support.ControlPlane(procs, state).start()
    assert metric(cp.metrics(), "onedomain_store_state_loss_total",
                  '{kind="audit_log_empty"}') == 1
    assert "audit.log: empty (0 bytes) although the store holds versions up to 1" in \
        cp.proc.output()


def test_zero_byte_node_cache_is_logged_and_counted(procs, tmp_path):
    node_dir = tmp_path / "n1"
    os.makedirs(node_dir)
    open(node_dir / "snapshot.pb", "wb").close()
    # No control plane listens there: the node starts from its bootstrap snapshot.
    dp = fleet_support.start_managed_dataplane(
        procs, str(node_dir), "127.0.0.1:1", "n1",
        snapshot_yaml=cp_support.seed_yaml())
    dp.wait_ports()

    def counted():
        # The admin port opens before managed mode reads the cache: wait for the count.
        status, _, body = support.http_get(f"http://127.0.0.1:{dp.ports['admin']}/metrics")
        assert status == 200
        return metric(body.decode(), "onedomain_config_cache_errors_total",
                      '{reason="empty"}') == 1
    support.wait_for(counted, 10, what="the empty cache counted")
    assert f"cached snapshot {node_dir}/snapshot.pb is empty (0 bytes)" in dp.output()
