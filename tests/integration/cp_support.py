"""Helpers for tests that run a control plane: config files, tokens, the admin CLI."""

import os
import subprocess

import segment_relay
import support

ADMIN_TOKEN = "admin-token-0123456789abcdef"
OPERATE_TOKEN = "operate-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"
# Role node, for any node id (`*`): the config stream is authenticated by default.
NODE_TOKEN = "node-token-0123456789abcdef"


def seed_yaml(agents_endpoints=("127.0.0.1:8000",), frontend="127.0.0.1:8001",
              extra_listeners=""):
    """A snapshot as YAML indented to sit under `seed:`; dedent() it for a file of its own."""
    eps = ", ".join(f'"{_relayed(e)}"' for e in agents_endpoints)
    frontend = _relayed(frontend)
    return f"""
  site:
    origins: ["http://127.0.0.1", "https://amir.hirecj.ai"]
    cookie_domain: .hirecj.ai
  listeners:
    - name: main
      address: 127.0.0.1
      port: 0{extra_listeners}
  clusters:
    - name: agents
      endpoints: [{eps}]
    - name: frontend
      endpoints: ["{frontend}"]
  routes:
    - name: api
      match: {{prefix: /api/v1/}}
      cluster: agents
    - name: ws
      match: {{prefix: /ws/}}
      cluster: agents
      websocket: true
    - name: frontend
      match: {{prefix: /}}
      cluster: frontend
"""


def _relayed(endpoint):
    """host:port, through a segmenting relay under ONEDOMAIN_SEGMENT when it is listening."""
    host, port = endpoint.rsplit(":", 1)
    if host != "127.0.0.1":
        return endpoint
    return f"{host}:{segment_relay.relay_port(int(port))}"


def dedent(seed):
    """seed_yaml() text as a top-level snapshot file."""
    return seed.replace("\n  ", "\n")


def _file_store(state_dir):
    return f"\n  directory: {state_dir}/store\n  keep_versions: 10"


class ControlPlane:
    """Writes a config + tokens into a state dir and starts `controlplane serve`."""

    def __init__(self, procs, state_dir, seed=None, grpc_port=0, grpc_extra="", extra="",
                 store=None):
        """`store`: the body of the config's `store:` block (etcd_support.etcd_store_yaml);
        default a file store in state_dir/store."""
        self.procs = procs
        self.state_dir = state_dir
        os.makedirs(state_dir, exist_ok=True)
        tokens = support.write_file(state_dir, "tokens",
                                    f"ops admin {ADMIN_TOKEN}\n"
                                    f"deployer operate {OPERATE_TOKEN}\n"
                                    f"viewer read {READ_TOKEN}\n"
                                    f"* node {NODE_TOKEN}\n")
        os.chmod(tokens, 0o600)
        self.token_files = {}
        for name, tok in (("admin", ADMIN_TOKEN), ("operate", OPERATE_TOKEN),
                          ("read", READ_TOKEN), ("node", NODE_TOKEN),
                          ("wrong", "not-a-valid-token-000000")):
            self.token_files[name] = support.write_file(state_dir, f"{name}.token", tok + "\n")
        self.config = support.write_file(state_dir, "controlplane.yaml", f"""
grpc:
  address: 127.0.0.1
  port: {grpc_port}{grpc_extra}
http:
  address: 127.0.0.1
  port: 0
store:{store if store is not None else _file_store(state_dir)}
auth:
  tokens_file: {tokens}{extra}
seed:{seed if seed is not None else seed_yaml()}
""")
        self.proc = None

    def start(self):
        self.proc = self.procs([support.binary("controlplane"), "serve", "--config", self.config])
        ports = self.proc.wait_ports()
        self.grpc_port = ports["grpc"]
        self.http_port = ports["http"]
        return self

    @property
    def address(self):
        return f"127.0.0.1:{self.grpc_port}"

    def admin(self, *args, token="admin", check=False):
        """Runs `controlplane admin`; returns CompletedProcess (text)."""
        cmd = [support.binary("controlplane"), "admin", "--server", self.address]
        if token is not None:
            cmd += ["--token-file", self.token_files[token]]
        result = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"admin {args} failed ({result.returncode}): "
                                 f"{result.stdout}{result.stderr}")
        return result

    def metrics(self):
        status, _, body = support.http_get(f"http://127.0.0.1:{self.http_port}/metrics")
        assert status == 200
        return body.decode()
