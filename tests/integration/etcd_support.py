"""A real etcd (Debian's etcd-server) for control-plane tests: members on 127.0.0.1 with
ephemeral ports and a temporary data dir, started and stopped by PID through the `procs`
fixture. Every wait has a deadline."""

import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

import support

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def have_etcd():
    return os.access(ETCD, os.X_OK)


def free_port():
    """A port the kernel just handed out as ephemeral (etcd cannot report a bound port 0).
    The short window before etcd binds it is covered by start() retrying on a bind error."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdCluster:
    """One member (default) or several (chaos tests). `endpoints` are client URLs."""

    def __init__(self, procs, members=1, tls=None):
        """`tls`: (ca_file, cert_file, key_file) to serve https and require client
        certificates signed by ca_file (the same files serve as the test's client cert)."""
        self.procs = procs
        self.tls = tls
        self.names = [f"m{i}" for i in range(members)]
        self.data_root = tempfile.mkdtemp(prefix="onedomain-etcd-")
        self.client_ports = {}
        self.peer_ports = {}
        self.proc = {}

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def endpoints(self):
        return [f"{self.scheme}://127.0.0.1:{self.client_ports[n]}" for n in self.names]

    def _args(self, name, state):
        cluster = ",".join(f"{n}=http://127.0.0.1:{self.peer_ports[n]}" for n in self.names)
        client = f"{self.scheme}://127.0.0.1:{self.client_ports[name]}"
        peer = f"http://127.0.0.1:{self.peer_ports[name]}"
        tls = []
        if self.tls:
            ca, cert, key = self.tls
            tls = ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca,
                   "--client-cert-auth"]
        return [ETCD, "--name", name, "--data-dir", os.path.join(self.data_root, name),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", cluster, "--initial-cluster-state", state,
                "--initial-cluster-token", os.path.basename(self.data_root),
                "--logger", "zap", "--log-level", "warn",
                # Faster elections for the chaos test; defaults are 100ms/1000ms.
                "--heartbeat-interval", "50", "--election-timeout", "500"] + tls

    def start(self, timeout=30.0):
        for attempt in range(3):
            for n in self.names:
                self.client_ports[n] = free_port()
                self.peer_ports[n] = free_port()
            for n in self.names:
                self.proc[n] = self.procs(self._args(n, "new"), port_file=False,
                                          name=f"etcd-{n}")
            try:
                for n in self.names:
                    self.wait_healthy(n, timeout)
                return self
            except (RuntimeError, TimeoutError):
                out = "\n".join(p.output() for p in self.proc.values())
                for p in self.proc.values():
                    p.stop()
                if "address already in use" not in out or attempt == 2:
                    raise
                shutil.rmtree(self.data_root, ignore_errors=True)
                self.data_root = tempfile.mkdtemp(prefix="onedomain-etcd-")
        return self

    def wait_healthy(self, name, timeout=30.0):
        proc = self.proc[name]

        def healthy():
            if proc.proc.poll() is not None:
                raise RuntimeError(f"etcd {name} exited with {proc.proc.returncode}:\n"
                                   f"{proc.output()}")
            context = None
            if self.tls:
                context = ssl.create_default_context(cafile=self.tls[0])
                context.load_cert_chain(self.tls[1], self.tls[2])
            try:
                with urllib.request.urlopen(
                        f"{self.scheme}://127.0.0.1:{self.client_ports[name]}/health",
                        timeout=2, context=context) as r:
                    return json.loads(r.read()).get("health") == "true"
            except OSError:
                return False
        support.wait_for(healthy, timeout, interval=0.05, what=f"etcd {name} healthy")

    def stop(self, name=None):
        """SIGTERM one member (default: the first), keeping its data dir."""
        self.proc[name or self.names[0]].stop()

    def kill(self, name):
        self.proc[name].proc.kill()
        self.proc[name].proc.wait(timeout=10)

    def restart(self, name=None, timeout=30.0):
        name = name or self.names[0]
        self.proc[name] = self.procs(self._args(name, "existing"), port_file=False,
                                     name=f"etcd-{name}")
        self.wait_healthy(name, timeout)

    def ctl(self, *args, timeout=15):
        env = dict(os.environ, ETCDCTL_API="3")
        tls = []
        if self.tls:
            tls = ["--cacert", self.tls[0], "--cert", self.tls[1], "--key", self.tls[2]]
        out = subprocess.run([ETCDCTL, "--endpoints", ",".join(self.endpoints)] + tls + list(args),
                             capture_output=True, text=True, timeout=timeout, env=env,
                             stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise AssertionError(f"etcdctl {args}: {out.stdout}{out.stderr}")
        return out.stdout

    def revision(self):
        out = json.loads(self.ctl("endpoint", "status", "-w", "json"))
        return max(int(m["Status"]["header"]["revision"]) for m in out)

    def compact(self):
        rev = self.revision()
        self.ctl("compact", str(rev), "--physical")
        return rev


def etcd_store_yaml(endpoints, prefix="/onedomain/", extra=""):
    """The `store:` block of a control-plane config using etcd."""
    eps = ", ".join(f'"{e}"' for e in endpoints)
    return (f"\n  keep_versions: 10\n  etcd:\n    endpoints: [{eps}]\n    prefix: {prefix}"
            f"\n    dial_timeout: 5s\n    request_timeout: 2s{extra}")
