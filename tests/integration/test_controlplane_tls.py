"""The control plane's gRPC services over TLS: the admin CLI and a data plane both verify the
control plane's certificate against a test CA; a plaintext client cannot talk to it."""

import subprocess

import cp_support
import fleet_support
import support


def make_ca_and_server_cert(d):
    def run(*args):
        subprocess.run(args, check=True, capture_output=True, timeout=60, cwd=d)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=onedomain test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "cp.key", "-out", "cp.csr",
        "-subj", "/CN=localhost")
    support.write_file(d, "ext.cnf", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", "cp.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "cp.pem", "-extfile", "ext.cnf")
    return f"{d}/ca.pem", f"{d}/cp.pem", f"{d}/cp.key"


def test_grpc_over_tls(procs, tmp_path):
    ca, cert, key = make_ca_and_server_cert(str(tmp_path))
    backend = fleet_support.start_backend(procs, "A")
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp"), seed=cp_support.seed_yaml(
        agents_endpoints=(f"127.0.0.1:{backend.ports['api']}",)))
    with open(cp.config) as f:
        text = f.read()
    with open(cp.config, "w") as f:
        f.write(text.replace("grpc:\n  address: 127.0.0.1\n",
                             f"grpc:\n  address: 127.0.0.1\n  cert_file: {cert}\n"
                             f"  key_file: {key}\n"))
    cp.start()
    assert "(TLS)" in cp.proc.output()

    ok = cp.admin("--ca-file", ca, "get")
    assert ok.returncode == 0, ok.stderr
    plain = cp.admin("get", "--timeout", "3")
    assert plain.returncode == 6, (plain.returncode, plain.stderr)  # unreachable in plaintext

    node = fleet_support.start_managed_dataplane(procs, str(tmp_path / "dp"), cp.address,
                                                 "tls-node", ca_file=ca)
    port = fleet_support.wait_listener(node)
    assert fleet_support.instance_of(port) == "A"
    listed = fleet_support.nodes_with(cp, "--ca-file", ca)
    assert [n["node_id"] for n in listed["nodes"] if n.get("connected")] == ["tls-node"]
