"""Client limits configured from the control plane with `apply` (issue 20; no new admin
verb): a snapshot with client_limits and site.trusted_proxies is validated (a bad one is
refused with file, line and key and commits nothing), committed, pushed and acked; the node
shows it in /config_dump and enforces it (429 + Retry-After on the upgrade rate)."""

import json

import cp_support
import dp_support as dp
import fleet_support
import limits_support as ls
import support


def wait_acked(cp, version):
    def done():
        nodes = fleet_support.nodes(cp)["nodes"]
        return any(n.get("connected") and int(n.get("version_acked", 0)) >= version
                   for n in nodes)
    support.wait_for(done, 20, interval=0.05, what=f"a node acking version {version}")


LIMITS = """
  client_limits:
    upgrade_rate: {per_second: 0.2, burst: 2}
    max_websockets_per_cookie: 5
"""


def test_apply_limits_reach_the_node(procs, tmp_path):
    up = ls.WsUpstream(mode="hold")
    try:
        cp = cp_support.ControlPlane(procs, str(tmp_path / "cp"), seed=cp_support.seed_yaml(
            agents_endpoints=(f"127.0.0.1:{up.port}",))).start()
        node = fleet_support.start_managed_dataplane(procs, str(tmp_path / "dp"), cp.address,
                                                     "node-0")
        port = fleet_support.wait_listener_direct(node)
        wait_acked(cp, 1)

        # Invalid: refused client-side with file, line and key; nothing committed.
        seed = cp_support.dedent(cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{up.port}",)))
        bad = support.write_file(str(tmp_path), "bad.yaml",
                                 seed + LIMITS.replace("\n  ", "\n").replace("0.2", "-3"))
        r = cp.admin("apply", "-f", bad)
        assert r.returncode == 3, r.stderr
        assert "bad.yaml:" in r.stderr and "client_limits.upgrade_rate.per_second" in r.stderr

        good = support.write_file(
            str(tmp_path), "good.yaml",
            seed.replace("cookie_domain: .hirecj.ai",
                         "cookie_domain: .hirecj.ai\n  trusted_proxies: [10.0.0.0/8]")
            + LIMITS.replace("\n  ", "\n")
            + "websocket_policy: {required_cookie: sess_*}\n")
        cp.admin("apply", "-f", good, check=True)
        wait_acked(cp, 2)
        admin = node.wait_ports()["admin"]
        status, _, body = support.http_get(f"http://127.0.0.1:{admin}/config_dump")
        assert status == 200
        dump = json.loads(body)
        assert dump["client_limits"]["upgrade_rate"]["burst"] == 2
        assert dump["site"]["trusted_proxies"] == ["10.0.0.0/8"]

        statuses = []
        for i in range(4):
            c = ls.SrcConn(port, src=ls.source(7))
            r = ls.upgrade(c, path="/ws/x", cookie=f"sess_a={i}")
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.header("Retry-After")) >= 1
            c.close()
        assert statuses[:2] == [101, 101] and 429 in statuses[2:], statuses
    finally:
        up.stop()
