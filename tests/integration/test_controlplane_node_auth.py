"""The node stream against hostile peers (issue #15, item 5): it is authenticated by default
(a `node` token, or a client certificate from the configured CA), node ids are validated,
the number of tracked nodes is bounded, peer text cannot forge log lines, and a NACK sent by
an impostor does not outlive the real node's reconnect. Raw streams come from Python stubs
generated from the protos, so nothing here trusts the data plane's own client."""

import os
import queue
import re
import subprocess
import sys
import tempfile

import grpc
import pytest

import cp_support
import fleet_support
import support
from test_controlplane_admin import generate_python_stubs
from test_controlplane_tls import make_ca_and_server_cert

STREAM = "/onedomain.v1.ConfigDiscovery/Stream"


@pytest.fixture(scope="module")
def pb():
    stubs = tempfile.mkdtemp(prefix="od-pystubs-")
    generate_python_stubs(stubs)
    sys.path.insert(0, stubs)
    from onedomain.v1 import admin_pb2, config_discovery_pb2
    yield config_discovery_pb2, admin_pb2
    sys.path.remove(stubs)


class RawNode:
    """One node stream opened by hand: sends Hello first, then whatever send() is given."""

    def __init__(self, pb, channel, node_id, token=None, **hello):
        self.pb = pb
        self.out = queue.Queue()
        self.out.put(pb.NodeMessage(hello=pb.Hello(node_id=node_id, **hello)))
        metadata = [("authorization", f"Bearer {token}")] if token else None
        call = channel.stream_stream(STREAM, request_serializer=pb.NodeMessage.SerializeToString,
                                     response_deserializer=pb.ControlMessage.FromString)
        self.call = call(iter(self.out.get, None), metadata=metadata, timeout=30)

    def send(self, message):
        self.out.put(message)

    def next(self):
        """The next ControlMessage; raises grpc.RpcError when the stream ended."""
        return next(self.call)

    def close(self):
        self.out.put(None)
        self.call.cancel()


def refused_code(node):
    """Reads until the stream ends; returns its (code, details) and closes the sender."""
    with pytest.raises(grpc.RpcError) as err:
        for _ in range(10):
            node.next()
    node.close()
    return err.value.code(), err.value.details()


def metric(text, name, labels=""):
    m = re.search(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_node_stream_needs_a_node_token(procs, tmp_path, pb):
    discovery, admin_pb2 = pb
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp")).start()
    channel = grpc.insecure_channel(cp.address)

    no_token = RawNode(discovery, channel, "n1")
    assert refused_code(no_token)[0] == grpc.StatusCode.UNAUTHENTICATED
    wrong = RawNode(discovery, channel, "n1", token="not-a-valid-token-000000")
    assert refused_code(wrong)[0] == grpc.StatusCode.UNAUTHENTICATED
    admin = RawNode(discovery, channel, "n1", token=cp_support.ADMIN_TOKEN)
    code, details = refused_code(admin)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "role node" in details
    good = RawNode(discovery, channel, "n1", token=cp_support.NODE_TOKEN)
    assert good.next().HasField("welcome")
    assert good.next().push.snapshot.version == 1
    good.close()

    # A node token is no Admin credential.
    stub = channel.unary_unary("/onedomain.v1.Admin/GetConfig",
                               request_serializer=admin_pb2.GetConfigRequest.SerializeToString,
                               response_deserializer=admin_pb2.GetConfigResponse.FromString)
    with pytest.raises(grpc.RpcError) as err:
        stub(admin_pb2.GetConfigRequest(), timeout=10,
             metadata=[("authorization", f"Bearer {cp_support.NODE_TOKEN}")])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    channel.close()

    text = cp.metrics()
    assert metric(text, "onedomain_node_streams_refused_total", '{code="UNAUTHENTICATED"}') == 2
    assert metric(text, "onedomain_node_streams_refused_total",
                  '{code="PERMISSION_DENIED"}') == 1

    # The real data plane without its token file never gets the config.
    dp = fleet_support.start_managed_dataplane(procs, str(tmp_path / "dp"), cp.address, "n2",
                                               token=None)
    support.wait_for(lambda: metric(cp.metrics(), "onedomain_node_streams_refused_total",
                                    '{code="UNAUTHENTICATED"}') >= 3, 20,
                     what="the token-less data plane refused")
    assert all(n["node_id"] != "n2" for n in fleet_support.nodes(cp).get("nodes", []))
    support.wait_for(lambda: "(code 16)" in dp.output(), 10, what="the data plane told why")
    assert cp_support.NODE_TOKEN not in cp.proc.output()


def make_client_cert(d, name):
    def run(*args):
        subprocess.run(args, check=True, capture_output=True, timeout=60, cwd=d)
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={name}")
    run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem")
    return f"{d}/{name}.pem", f"{d}/{name}.key"


def test_mtls_node_accepted_and_a_node_without_certificate_refused(procs, tmp_path):
    d = str(tmp_path)
    ca, cert, key = make_ca_and_server_cert(d)
    client_cert, client_key = make_client_cert(d, "node-a")
    cp = cp_support.ControlPlane(
        procs, str(tmp_path / "cp"),
        grpc_extra=f"\n  cert_file: {cert}\n  key_file: {key}\n  client_ca_file: {ca}").start()
    with_cert = fleet_support.start_managed_dataplane(
        procs, str(tmp_path / "a"), cp.address, "node-a", ca_file=ca, token=None,
        cert_file=client_cert, key_file=client_key)
    without = fleet_support.start_managed_dataplane(
        procs, str(tmp_path / "b"), cp.address, "node-b", ca_file=ca, token=None)

    def connected():
        listed = fleet_support.nodes_with(cp, "--ca-file", ca)
        return [n["node_id"] for n in listed.get("nodes", []) if n.get("connected")]
    support.wait_for(lambda: connected() == ["node-a"], 20, what="node-a connected over mTLS")
    support.wait_for(lambda: metric(cp.metrics(), "onedomain_node_streams_refused_total",
                                    '{code="UNAUTHENTICATED"}') >= 1, 20,
                     what="node-b refused")
    assert connected() == ["node-a"]
    support.wait_for(lambda: "(code 16)" in without.output(), 10, what="node-b told why")
    assert with_cert.proc.poll() is None
    # The admin CLI still works with TLS and a token, without a client certificate.
    assert cp.admin("--ca-file", ca, "get").returncode == 0


def test_node_ids_are_validated_and_peer_text_is_escaped(procs, tmp_path, pb):
    discovery, _ = pb
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp")).start()
    channel = grpc.insecure_channel(cp.address)
    for bad in ["bad id", "x" * 64, "n1\nINFO forged line", ""]:
        node = RawNode(discovery, channel, bad, token=cp_support.NODE_TOKEN)
        code, details = refused_code(node)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (bad, details)
        assert "hello.node_id" in details
    big = RawNode(discovery, channel, "n1", token=cp_support.NODE_TOKEN, pod="p" * 300)
    assert refused_code(big)[0] == grpc.StatusCode.INVALID_ARGUMENT

    # A NACK message is the node's own text: escaped in the log, never a line of its own.
    node = RawNode(discovery, channel, "n1", token=cp_support.NODE_TOKEN)
    assert node.next().HasField("welcome")
    push = node.next().push
    node.send(discovery.NodeMessage(nack=discovery.Nack(
        version=push.snapshot.version, nonce=push.nonce, code=3,
        error="bad\n2026-01-01T00:00:00Z error [admin] forged \x1b[31m")))
    support.wait_for(lambda: "refused version 1" in cp.proc.output(), 10, what="NACK logged")
    out = cp.proc.output()
    assert "bad\\x0a2026-01-01T00:00:00Z error [admin] forged \\x1b[31m" in out
    assert not any(line.startswith("2026-01-01") for line in out.splitlines())
    node.close()
    channel.close()


def test_tracked_nodes_are_bounded(procs, tmp_path, pb):
    discovery, _ = pb
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp"),
                                 extra="\nnodes:\n  max_nodes: 3\n  forget_after: 1s").start()
    channel = grpc.insecure_channel(cp.address)
    streams = []
    for i in range(3):
        streams.append(RawNode(discovery, channel, f"fake-{i}", token=cp_support.NODE_TOKEN))
        assert streams[-1].next().HasField("welcome")
    extra = RawNode(discovery, channel, "fake-3", token=cp_support.NODE_TOKEN)
    code, details = refused_code(extra)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_nodes" in details
    assert metric(cp.metrics(), "onedomain_node_streams_refused_total",
                  '{code="RESOURCE_EXHAUSTED"}') == 1
    # A disconnected node makes room for a new one; its series leave after forget_after.
    streams[0].close()
    support.wait_for(lambda: 'onedomain_fleet_node_connected{node="fake-0"} 0' in cp.metrics(),
                     10, what="fake-0 disconnected")
    replacement = RawNode(discovery, channel, "fake-3", token=cp_support.NODE_TOKEN)
    assert replacement.next().HasField("welcome")
    assert 'node="fake-0"' not in cp.metrics()
    for s in streams[1:] + [replacement]:
        s.close()
    support.wait_for(lambda: 'node="fake' not in cp.metrics(), 15,
                     what="every fake node forgotten after forget_after")
    channel.close()


def test_impostor_nack_is_cleared_when_the_real_node_reconnects(procs, tmp_path, pb):
    discovery, _ = pb
    cp = cp_support.ControlPlane(procs, str(tmp_path / "cp")).start()
    channel = grpc.insecure_channel(cp.address)
    impostor = RawNode(discovery, channel, "n1", token=cp_support.NODE_TOKEN)
    assert impostor.next().HasField("welcome")
    push = impostor.next().push
    impostor.send(discovery.NodeMessage(nack=discovery.Nack(
        version=push.snapshot.version, nonce=push.nonce, code=3, error="forged refusal")))
    support.wait_for(lambda: (fleet_support.nodes(cp)["nodes"][0].get("nack_error") ==
                              "forged refusal"), 10, what="forged NACK recorded")

    dp = fleet_support.start_managed_dataplane(procs, str(tmp_path / "dp"), cp.address, "n1")
    dp.wait_ports()

    def clean():
        n = fleet_support.nodes(cp)["nodes"][0]
        return (n.get("connected") and int(n.get("version_acked", 0)) == 1 and
                not n.get("nack_error") and not n.get("version_nacked"))
    support.wait_for(clean, 20, what="the real n1 acked version 1 with no NACK left")
    code, details = refused_code(impostor)
    assert code == grpc.StatusCode.ABORTED and "newer stream" in details
    text = cp.metrics()
    assert metric(text, "onedomain_fleet_node_nacked", '{node="n1"}') == 0
    assert metric(text, "onedomain_fleet_config_version", '{node="n1"}') == 1
    channel.close()
    assert os.path.exists(dp.port_file)
