"""The control plane on its own: config checking, admin authentication and roles, the audit
trail, crash safety of the store, and an independent gRPC client (python3-grpcio)."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile

import pytest

import cp_support
import support

TESTDATA = os.path.join(os.path.dirname(__file__), "testdata")
EXAMPLES = os.path.join(support.SOURCE_DIR, "deploy", "examples")


def run(args, env=None):
    merged = dict(os.environ)
    merged.update(env or {})
    return subprocess.run(args, capture_output=True, text=True, timeout=30, env=merged,
                          stdin=subprocess.DEVNULL)


def test_check_config_accepts_example_and_rejects_broken(tmp_path):
    cp = support.binary("controlplane")
    ok = run([cp, "serve", "--check-config", "--config", os.path.join(EXAMPLES, "controlplane.yaml")],
             env={"ONEDOMAIN_STATE_DIR": str(tmp_path)})
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout

    bad = run([cp, "serve", "--check-config", "--config",
               os.path.join(TESTDATA, "bad_controlplane_unknown_key.yaml")])
    assert bad.returncode == 1
    assert re.search(r"bad_controlplane_unknown_key\.yaml:5:\d+: store\.keep_version: unknown key "
                     r"'keep_version'", bad.stderr), bad.stderr

    bad = run([cp, "serve", "--check-config", "--config",
               os.path.join(TESTDATA, "bad_controlplane_seed.yaml")])
    assert bad.returncode == 1
    assert re.search(r"bad_controlplane_seed\.yaml:13:\d+: seed\.routes\[0\]\.cluster: unknown "
                     r"cluster 'agent'", bad.stderr), bad.stderr


def test_help_documents_flags_and_unknown_flag_fails():
    cp = support.binary("controlplane")
    h = run([cp, "--help"])
    assert h.returncode == 0
    for flag in ("--config", "--check-config", "--port-file", "--log-level", "admin"):
        assert flag in h.stdout
    a = run([cp, "admin", "--help"])
    for verb in ("get", "apply", "set-upstream", "set-cookie-policy", "nodes", "history",
                 "rollback", "--token-file", "--dry-run", "--expected-version"):
        assert verb in a.stdout
    assert run([cp, "serve", "--bogus"]).returncode == 2
    assert run([cp, "frobnicate"]).returncode == 2


def test_sigterm_exits_zero(procs, tmp_path):
    cp = cp_support.ControlPlane(procs, str(tmp_path)).start()
    status, _, body = support.http_get(f"http://127.0.0.1:{cp.http_port}/healthz")
    assert status == 200 and body == b"ok\n"
    status, _, _ = support.http_get(f"http://127.0.0.1:{cp.http_port}/readyz")
    assert status == 200
    cp.proc.signal(signal.SIGTERM)
    assert cp.proc.wait_exit(10) == 0


def latest_version(cp):
    result = cp.admin("history", "-o", "json", "--limit", "1", check=True)
    entries = json.loads(result.stdout).get("entries", [])
    return int(entries[0]["version"]) if entries else 0


MUTATIONS = [
    ("set-upstream", "agents", "127.0.0.1:9999"),
    ("rollback", "1"),
    ("apply", "-f", "{snapshot}"),
    ("set-cookie-policy", "-f", "{cookies}"),
]


def test_unauthenticated_and_underprivileged_calls_change_nothing(procs, tmp_path):
    cp = cp_support.ControlPlane(procs, str(tmp_path)).start()
    snapshot = support.write_file(str(tmp_path), "snap.yaml", cp_support.dedent(
        cp_support.seed_yaml(agents_endpoints=("127.0.0.1:7777",))))
    cookies = support.write_file(str(tmp_path), "cookies.yaml",
                                 "domain_rewrites:\n  - {from: localhost, to: .hirecj.ai}\n")
    before = latest_version(cp)
    assert before == 1
    for mutation in MUTATIONS:
        args = [a.format(snapshot=snapshot, cookies=cookies) for a in mutation]
        for token in (None, "wrong"):
            r = cp.admin(*args, token=token)
            assert r.returncode == 4, (args, token, r.stdout, r.stderr)
            assert "UNAUTHENTICATED" in r.stderr
        r = cp.admin(*args, token="read")
        assert r.returncode == 4 and "PERMISSION_DENIED" in r.stderr, (args, r.stderr)
        if args[0] in ("apply", "set-cookie-policy"):
            r = cp.admin(*args, token="operate")  # operate may not replace the whole config
            assert r.returncode == 4 and "PERMISSION_DENIED" in r.stderr, (args, r.stderr)
    assert latest_version(cp) == before
    get = json.loads(cp.admin("get", token="read", check=True).stdout)
    assert get["clusters"][0]["endpoints"][0]["port"] == 8000

    metrics = cp.metrics()
    assert re.search(r'onedomain_admin_requests_total\{code="UNAUTHENTICATED",method="SetUpstream"\} 2',
                     metrics), metrics
    assert re.search(r'onedomain_admin_requests_total\{code="PERMISSION_DENIED",method="Apply"\} 2',
                     metrics)
    # Tokens never reach logs or metrics.
    for tok in (cp_support.ADMIN_TOKEN, cp_support.READ_TOKEN, "not-a-valid-token"):
        assert tok not in metrics
        assert tok not in cp.proc.output()


def test_changes_are_audited_and_rollback_works(procs, tmp_path):
    cp = cp_support.ControlPlane(procs, str(tmp_path)).start()
    r = cp.admin("set-upstream", "agents", "127.0.0.1:8002", "--reason", "move to B",
                 token="operate", check=True)
    assert "committed version 2" in r.stdout
    assert "clusters[agents].endpoints: 127.0.0.1:8000 -> 127.0.0.1:8002" in r.stdout
    dry = cp.admin("set-upstream", "agents", "127.0.0.1:8003", "--dry-run", check=True)
    assert "dry run: would commit version 3" in dry.stdout
    conflict = cp.admin("set-upstream", "agents", "127.0.0.1:8003", "--expected-version", "1")
    assert conflict.returncode == 5 and "FAILED_PRECONDITION" in conflict.stderr
    rb = cp.admin("rollback", "1", token="operate", check=True)
    assert "committed version 3" in rb.stdout
    history = json.loads(cp.admin("history", "-o", "json", check=True).stdout)["entries"]
    assert [int(e["version"]) for e in history] == [3, 2, 1]
    assert history[1]["who"] == "deployer" and history[1]["reason"] == "move to B"
    assert history[0]["method"] == "Rollback" and history[2]["who"] == "seed"
    get = json.loads(cp.admin("get", check=True).stdout)
    assert get["clusters"][0]["endpoints"][0]["port"] == 8000


def test_invalid_apply_names_field_and_commits_nothing(procs, tmp_path):
    cp = cp_support.ControlPlane(procs, str(tmp_path)).start()
    # Client-side: file, line and key.
    bad = support.write_file(str(tmp_path), "bad.yaml",
                             cp_support.dedent(cp_support.seed_yaml()).replace(
                                 "cluster: frontend", "cluster: frontnd"))
    r = cp.admin("apply", "-f", bad)
    assert r.returncode == 3
    assert re.search(r"bad\.yaml:\d+:\d+: routes\[2\]\.cluster: unknown cluster 'frontnd'",
                     r.stderr), r.stderr
    # Server-side: the field path in the gRPC status.
    r = cp.admin("set-upstream", "agents", "127.0.0.1:0")
    assert r.returncode == 3
    assert "INVALID_ARGUMENT: endpoints[0].port" in r.stderr
    r = cp.admin("set-upstream", "nosuch", "127.0.0.1:1")
    assert r.returncode == 3 and "cluster: no cluster named 'nosuch'" in r.stderr
    assert latest_version(cp) == 1


def test_kill_9_loses_no_acknowledged_change(procs, tmp_path):
    state = str(tmp_path)
    cp = cp_support.ControlPlane(procs, state).start()
    acknowledged = 1
    for i in range(20):
        r = cp.admin("set-upstream", "agents", f"127.0.0.1:{9000 + i}")
        if r.returncode == 0:
            acknowledged = int(re.search(r"committed version (\d+)", r.stdout).group(1))
        if i == 12:
            os.kill(cp.proc.pid, signal.SIGKILL)
            cp.proc.wait_exit(5)
            break
    assert acknowledged >= 13
    again = cp_support.ControlPlane(procs, state).start()
    assert latest_version(again) == acknowledged
    get = json.loads(again.admin("get", check=True).stdout)
    assert get["clusters"][0]["endpoints"][0]["port"] == 9000 + acknowledged - 2


def generate_python_stubs(out_dir):
    proto_root = os.path.join(support.SOURCE_DIR, "proto")
    protos = [os.path.join("onedomain", "v1", f) for f in os.listdir(
        os.path.join(proto_root, "onedomain", "v1")) if f.endswith(".proto")]
    # Debian's python3-grpc-tools bundles protoc 3.5, which predates proto3 `optional`; the
    # system protoc (3.21, matching python3-protobuf 4.21) with gRPC's Python plugin from
    # protobuf-compiler-grpc generates the same stubs.
    r = subprocess.run(["protoc", f"-I{proto_root}", f"--python_out={out_dir}",
                        f"--grpc_python_out={out_dir}",
                        "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_independent_python_grpc_client(procs, tmp_path):
    import grpc
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp")).start()
    stubs = tempfile.mkdtemp(prefix="od-pystubs-")
    generate_python_stubs(stubs)
    sys.path.insert(0, stubs)
    try:
        from onedomain.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2
        channel = grpc.insecure_channel(cp.address)
        stub = admin_pb2_grpc.AdminStub(channel)
        auth = [("authorization", f"Bearer {cp_support.ADMIN_TOKEN}")]
        config = stub.GetConfig(admin_pb2.GetConfigRequest(), metadata=auth, timeout=10)
        assert config.snapshot.version == 1
        assert [c.name for c in config.snapshot.clusters] == ["agents", "frontend"]
        change = stub.SetUpstream(admin_pb2.SetUpstreamRequest(
            cluster="agents", endpoints=[cluster_pb2.Endpoint(host="127.0.0.1", port=8010)],
            options=admin_pb2.ChangeOptions(reason="from python")), metadata=auth, timeout=10)
        assert change.version == 2
        config = stub.GetConfig(admin_pb2.GetConfigRequest(), metadata=auth, timeout=10)
        assert config.snapshot.clusters[0].endpoints[0].port == 8010
        with pytest.raises(grpc.RpcError) as err:
            stub.SetUpstream(admin_pb2.SetUpstreamRequest(cluster="agents"), metadata=auth,
                             timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "endpoints" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.GetConfig(admin_pb2.GetConfigRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        channel.close()
    finally:
        sys.path.remove(stubs)
