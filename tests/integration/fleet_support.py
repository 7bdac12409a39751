"""Helpers for fleet tests: managed data planes, demo backends, request loops."""

import http.client
import json
import os

import cp_support
import segment_relay
import support


def start_backend(procs, instance, frontend=False):
    args = [support.binary("demo_backend"), "--port", "0", "--instance", instance]
    if frontend:
        args += ["--frontend-port", "0"]
    p = procs(args, name=f"backend-{instance}")
    p.wait_ports()
    return p


def start_managed_dataplane(procs, state_dir, cp_address, node_id, snapshot_yaml=None,
                            extra_env=None, workers=1, ca_file=None,
                            token=cp_support.NODE_TOKEN, cert_file=None, key_file=None):
    """A data plane managed by the control plane at cp_address; its snapshot cache lives in
    state_dir. It authenticates with `token` (a node token, written to state_dir/node.token;
    None: no token) and/or a client certificate. Returns the Process (ports not awaited)."""
    os.makedirs(state_dir, exist_ok=True)
    fallback = f"\nsnapshot:{snapshot_yaml}" if snapshot_yaml else ""
    ca_line = f"\n  ca_file: {ca_file}" if ca_file else ""
    if token is not None:
        token_file = support.write_file(state_dir, "node.token", token + "\n")
        os.chmod(token_file, 0o600)
        ca_line += f"\n  token_file: {token_file}"
    if cert_file:
        ca_line += f"\n  cert_file: {cert_file}\n  key_file: {key_file}"
    config = support.write_file(state_dir, "dataplane.yaml", f"""
node:
  id: {node_id}
  zone: test
admin:
  address: 127.0.0.1
  port: 0
controlplane:
  address: {cp_address}{ca_line}
  cache_path: {state_dir}/snapshot.pb
  backoff_initial: 50ms
  backoff_max: 500ms
  report_interval: 200ms
drain:
  delay: 0s
  timeout: 10s
{fallback}
""")
    return procs([support.binary("dataplane"), "--config", config, "--workers", str(workers)],
                 env=extra_env, name=f"dataplane-{node_id}")


def wait_listener(proc, name="main", timeout=20.0):
    """Waits until the data plane reports the listener's bound port; returns it (under
    ONEDOMAIN_SEGMENT, a segmenting relay's port in front of it)."""
    return segment_relay.relay_port(wait_listener_direct(proc, name, timeout), probe=False)


def wait_listener_direct(proc, name="main", timeout=20.0):
    """Waits until the data plane reports the listener's bound port; returns that port."""
    def ready():
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.output()}")
        try:
            with open(proc.port_file) as f:
                ports = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        proc.ports = ports
        return ports.get(f"listener.{name}")
    return support.wait_for(ready, timeout, what=f"{proc.name} listener {name}")


def get(port, path, headers=None, timeout=5.0):
    """One request on a fresh connection: (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def instance_of(port, path="/api/v1/echo"):
    status, headers, body = get(port, path)
    if status != 200:
        return None
    return json.loads(body)["instance"]


def nodes(cp):
    return nodes_with(cp)


def nodes_with(cp, *flags):
    result = cp.admin(*flags, "nodes", "-o", "json", token="read", check=True)
    return json.loads(result.stdout)
