#!/usr/bin/python3
"""The images of deploy/docker/Dockerfile, run for real with podman (scripts/container-test.sh
builds them first and calls this with CONTAINERS_CONF set). Four parts, in order:

  images   what is in each image: user, labels, no HEALTHCHECK, size budget, no compiler, every
           shared library resolved (ldd) and no package beyond the ones owning those libraries;
  binaries --version and --check-config of the example configs as uid 65532, read-only root,
           no capabilities, no network, /usr/bin hidden (no shell or tool needed);
  stack    control plane, managed data plane and two demo backends in containers on the host
           network (ephemeral ports from port files): HTTP, login cookie, WebSocket, an
           upstream move with `controlplane admin` from the control-plane image, /metrics of
           both, then `podman stop` with open WebSockets: Close 1001 and exit 0 within the
           chart's terminationGracePeriodSeconds;
  chart    `helm template` (default values), then `podman kube play` of the control-plane and
           data-plane Deployments with their ConfigMaps, Secret and PVC: the chart's args, env,
           mounts and securityContext hold in the running containers, the chart's probes answer,
           the data plane reaches the control plane by its Service name and serves a request.

Only containers, pods, volumes, secrets and the network this run created (label or `odct`
names) are removed. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
from http.client import HTTPConnection
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
LABEL = "onedomain.container-test"
PREFIX = "odct"                       # names of everything this test creates
RELEASE = PREFIX                      # helm release name of the chart part
KUBE_NET = f"{PREFIX}-net"
KUBE_SUBNET = "10.231.77"             # /24 of the kube-play network (private, unused here)
TARGETS = ("dataplane", "controlplane", "demo")
UID = 65532
# Image size budgets (MB, podman's figure): measured 113.6 / 113.5 / 113.4 MB on 2026-12-02
# (77.9 MB of it bookworm-slim), about 10% headroom.
SIZE_BUDGET_MB = {"dataplane": 125, "controlplane": 125, "demo": 125}
# Packages in a runtime image that own no library the binaries load, and why they are there.
ALLOWED_EXTRA_PACKAGES = {
    "ca-certificates": "system trust store for upstream TLS",
    "openssl": "dependency of ca-certificates (update-ca-certificates)",
    "libprotoc32": "dependency of libgrpc29 in Debian (gRPC's plugin support)",
}
# Paths that would mean a compiler or build tool reached a runtime image.
BUILD_TOOLS = ("usr/bin/gcc", "usr/bin/g++", "usr/bin/cc", "usr/bin/c++", "usr/bin/clang",
               "usr/bin/ld", "usr/bin/as", "usr/bin/cmake", "usr/bin/ninja", "usr/bin/make",
               "usr/lib/gcc", "usr/include/c++")

args = None
cleanups: list = []                   # callables, run in reverse order at exit


def log(msg):
    print(f"container-checks: {msg}", flush=True)


def podman(*argv, check=True, timeout=120, env=None):
    proc = subprocess.run(["podman", *argv], capture_output=True, text=True, timeout=timeout,
                          env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(argv)} -> {proc.returncode}\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(predicate, timeout, what, interval=0.1):
    """Polls predicate() until truthy; bounded in time (and so in count)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def image(target):
    return f"localhost/onedomain/{target}:{args.version}"


@contextlib.contextmanager
def step(name):
    t0 = time.monotonic()
    log(f"--- {name}")
    yield
    log(f"--- {name}: ok ({time.monotonic() - t0:.1f}s)")


# Every container this test runs: labelled, no capabilities, read-only root, no privilege
# escalation, and /usr/bin and /usr/sbin hidden under empty tmpfs mounts, so nothing in them
# (shells, coreutils) can be what makes a check pass.
CONFINED = ["--label", f"{LABEL}=1", "--read-only", "--cap-drop=ALL",
            "--security-opt=no-new-privileges"]
HARDENED = CONFINED + ["--tmpfs", "/usr/bin:mode=0755", "--tmpfs", "/usr/sbin:mode=0755"]


def run_once(target, *argv, mounts=(), network="none", entrypoint=None, timeout=60,
             hide_bin=True):
    extra = []
    for m in mounts:
        extra += ["-v", m]
    if entrypoint:
        extra += ["--entrypoint", entrypoint]
    return podman("run", "--rm", *(HARDENED if hide_bin else CONFINED), f"--network={network}",
                  *extra, image(target), *argv, check=False, timeout=timeout)


def start_container(name, target, *argv, mounts=(), extra=()):
    podman("rm", "-f", "-t", "0", name, check=False)
    cmd = ["run", "-d", "--name", name, *HARDENED, "--network=host", *extra]
    for m in mounts:
        cmd += ["-v", m]
    podman(*cmd, image(target), *argv)
    cleanups.append(lambda: podman("rm", "-f", "-t", "0", name, check=False))
    return name


def logs(name):
    p = podman("logs", name, check=False)
    return (p.stdout + p.stderr)[-4000:]


def container_pid(name):
    return int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def check_process_confinement(name, expect_hidden_bin=True):
    """The container's main process: uid/gid 65532, no capabilities, no-new-privs, seccomp
    filtering, a read-only root; optionally no shell reachable."""
    pid = container_pid(name)
    st = proc_status(pid)
    assert st["Uid"].split() == [str(UID)] * 4, (name, st["Uid"])
    assert st["Gid"].split() == [str(UID)] * 4, (name, st["Gid"])
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, (name, cap, st[cap])
    assert st["NoNewPrivs"] == "1", (name, st["NoNewPrivs"])
    assert st["Seccomp"] == "2", (name, "seccomp filter", st["Seccomp"])
    with open(f"/proc/{pid}/mountinfo") as f:
        # mount point (field 5), options (6), then after " - ": fs type
        mounts = {l.split()[4]: (l.split()[5], l.split(" - ")[1].split()[0]) for l in f}
    assert "ro" in mounts["/"][0].split(","), (name, "root not read-only", mounts["/"])
    if expect_hidden_bin:
        for d in ("/usr/bin", "/usr/sbin"):  # /bin and /sbin are symlinks to them
            assert mounts.get(d, ("", ""))[1] == "tmpfs", (name, d, "not hidden", mounts.get(d))
    return pid


def wait_port_file(path, keys, name, timeout=30):
    def ready():
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            doc = {}
        state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        if state != "true":
            raise AssertionError(f"{name} exited:\n{logs(name)}")
        return doc if all(k in doc for k in keys) else None
    return wait_for(ready, timeout, f"ports {keys} in {path}")


def request(port, method, target, headers=None, host="127.0.0.1", timeout=10):
    conn = HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, target, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def status_of(port, path):
    try:
        return request(port, "GET", path, timeout=2)[0]
    except OSError:
        return 0


def header(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def metrics(port):
    status, _, body = request(port, "GET", "/metrics")
    assert status == 200, status
    samples = []
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
            samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def metric(samples, name, **labels):
    return sum(v for n, l, v in samples
               if n == name and all(l.get(k) == str(x) for k, x in labels.items()))


# ---- images -------------------------------------------------------------------------------------

@contextlib.contextmanager
def mounted(ref):
    path = podman("image", "mount", ref).stdout.strip()
    try:
        yield Path(path)
    finally:
        podman("image", "unmount", ref, check=False)


def dpkg_installed(root):
    text = (root / "var/lib/dpkg/status").read_text()
    pkgs = set()
    for block in text.split("\n\n"):
        fields = dict(re.findall(r"^(\w[\w-]*): (.*)$", block, re.M))
        if fields.get("Status") == "install ok installed":
            pkgs.add(fields["Package"])
    return pkgs


def library_owners(root):
    """basename of every shared library a package ships -> package."""
    owners = {}
    for lst in (root / "var/lib/dpkg/info").glob("*.list"):
        pkg = lst.name[:-len(".list")].split(":")[0]
        for line in lst.read_text().splitlines():
            if "/lib/" in line and ".so" in line:
                owners[os.path.basename(line)] = pkg
    return owners


def check_images():
    with mounted("docker.io/library/debian:bookworm-slim") as base_root:
        base_pkgs = dpkg_installed(base_root)
    sizes, needed, extra = {}, {}, {}
    for target in TARGETS:
        ref = image(target)
        info = json.loads(podman("image", "inspect", ref).stdout)[0]
        cfg = info["Config"]
        assert cfg.get("User") == f"{UID}:{UID}", (target, cfg.get("User"))
        assert not cfg.get("Healthcheck"), (target, "has a HEALTHCHECK", cfg.get("Healthcheck"))
        binary = "demo_backend" if target == "demo" else target
        assert cfg.get("Entrypoint") == [f"/usr/local/bin/{binary}"], cfg.get("Entrypoint")
        labels = cfg.get("Labels") or {}
        assert labels.get("org.opencontainers.image.version") == args.version, labels
        assert labels.get("org.opencontainers.image.revision") == args.revision, labels
        assert labels.get("org.opencontainers.image.source"), labels
        size_mb = info["Size"] / 1e6
        sizes[target] = size_mb
        assert size_mb <= SIZE_BUDGET_MB[target], \
            f"{target}: {size_mb:.1f} MB exceeds its budget of {SIZE_BUDGET_MB[target]} MB"

        # Every library resolved, inside the image, by its own loader (ldd is a bash script
        # in /usr/bin: the one run that leaves /usr/bin visible).
        ldd = run_once(target, f"/usr/local/bin/{binary}", entrypoint="/usr/bin/ldd",
                       hide_bin=False)
        assert ldd.returncode == 0, (target, ldd.stdout, ldd.stderr)
        assert "not found" not in ldd.stdout, (target, ldd.stdout)
        libs = set(re.findall(r"=> (\S+) \(", ldd.stdout))
        assert libs, (target, ldd.stdout)

        with mounted(ref) as root:
            for tool in BUILD_TOOLS:
                assert not (root / tool).exists(), f"{target}: {tool} in the runtime image"
            owners = library_owners(root)
            needed[target] = {owners.get(os.path.basename(l)) for l in libs}
            assert None not in needed[target], \
                (target, [l for l in libs if os.path.basename(l) not in owners])
            extra[target] = dpkg_installed(root) - base_pkgs
            for d in ("var/lib/onedomain", "var/cache/onedomain"):
                st = (root / d).stat()
                assert (st.st_uid, st.st_gid) == (UID, UID), (target, d, st.st_uid)
        log(f"{ref}: {size_mb:.1f} MB, {len(libs)} libraries from {len(needed[target])} "
            f"packages, +{len(extra[target])} packages over bookworm-slim")
    # The two product images share the runtime stage: every package it adds owns a library
    # one of them loads, or is explained. (The demo image is a test helper on the same stage.)
    used = needed["dataplane"] | needed["controlplane"]
    for target in ("dataplane", "controlplane"):
        unexplained = extra[target] - used - set(ALLOWED_EXTRA_PACKAGES)
        assert not unexplained, \
            f"{target}: packages owning no library the binaries load: {sorted(unexplained)}"
    return sizes


# ---- binaries -----------------------------------------------------------------------------------

def check_binaries():
    for target in ("dataplane", "controlplane"):
        p = run_once(target, "--version")
        assert p.returncode == 0 and p.stdout.strip() == f"{target} {args.version}", \
            (target, p.returncode, p.stdout, p.stderr)
    p = run_once("demo", "--help")
    assert p.returncode == 0 and "demo_backend" in p.stdout, (p.returncode, p.stderr)

    examples = f"{REPO}/deploy/examples:/etc/onedomain/examples:ro"
    for f in ("dataplane.yaml", "dataplane-managed.yaml"):
        p = run_once("dataplane", "--config", f"/etc/onedomain/examples/{f}", "--check-config",
                     mounts=[examples])
        assert p.returncode == 0 and p.stdout.strip() == "OK", (f, p.stdout, p.stderr)
    p = run_once("controlplane", "serve", "--config", "/etc/onedomain/examples/controlplane.yaml",
                 "--check-config", mounts=[examples])
    assert p.returncode == 0, (p.stdout, p.stderr)
    # A bad file is refused with its line and key, from inside the image too.
    bad = Path(args.work) / "bad"
    bad.mkdir(exist_ok=True)
    text = (REPO / "deploy/examples/dataplane.yaml").read_text()
    (bad / "dataplane.yaml").write_text(text.replace("admin:", "admni:", 1))
    p = run_once("dataplane", "--config", "/etc/onedomain/bad/dataplane.yaml", "--check-config",
                 mounts=[f"{bad}:/etc/onedomain/bad:ro"])
    assert p.returncode == 1 and "admni" in p.stderr, (p.returncode, p.stderr)


# ---- stack on the host network ------------------------------------------------------------------

def chart_render():
    out = subprocess.run([args.helm, "template", RELEASE, str(REPO / "deploy/helm/onedomain"),
                          "--namespace", PREFIX], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs, kind, name_suffix):
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(hits) == 1, (kind, name_suffix, [d["metadata"]["name"] for d in hits])
    return hits[0]


def owned_dir(path, mode=0o700):
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, UID, UID)
    os.chmod(path, mode)
    return path


def owned_file(path, text, mode=0o400):
    path.write_text(text)
    os.chown(path, UID, UID)
    os.chmod(path, mode)
    return path


async def ws_open(port, cookie, chat):
    import websockets
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/{chat}",
                                  origin="http://127.0.0.1", extra_headers={"Cookie": cookie},
                                  open_timeout=10, ping_interval=None, close_timeout=5)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return ws, hello


async def ws_echo(ws, text):
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), 10)


def login(port):
    """The demo's login flow through the data plane; returns the session cookie pair."""
    status, headers, _ = request(port, "GET", "/api/v1/auth/login")
    assert status == 302, status
    callback = header(headers, "Location")[0]
    status, headers, _ = request(port, "GET", callback)
    assert status == 302, status
    cookies = [c.split(";")[0] for c in header(headers, "Set-Cookie") if c.startswith("sess_")]
    assert len(cookies) == 1, header(headers, "Set-Cookie")
    status, _, body = request(port, "GET", "/api/v1/me", headers={"Cookie": cookies[0]})
    assert status == 200, (status, body)
    me = json.loads(body)
    assert me["session"] and me["session"] in cookies[0], (me, cookies)
    return cookies[0], me["session"]


def check_stack(docs):
    dp_cm = yaml.safe_load(find(docs, "ConfigMap", "-dataplane")["data"]["dataplane.yaml"])
    dp_deploy = find(docs, "Deployment", "-dataplane")
    grace = int(dp_deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
    drain = dp_cm["drain"]  # the chart's drain timers, as the pods get them

    base = Path(args.work) / "stack"
    run_dir = base / "run"
    run_dir.mkdir(parents=True)
    os.chmod(run_dir, 0o777)  # port files, written by uid 65532
    conf = base / "config"
    conf.mkdir()
    state = owned_dir(base / "cp-state")
    run_mount = f"{run_dir}:/run/onedomain"

    backends = {}
    for inst in ("A", "B"):
        name = start_container(f"{PREFIX}-demo-{inst}", "demo", "--address", "127.0.0.1",
                               "--port", "0", "--frontend-port", "0", "--instance", inst,
                               "--port-file", f"/run/onedomain/demo-{inst}.json",
                               mounts=[run_mount])
        backends[inst] = wait_port_file(run_dir / f"demo-{inst}.json", ["api", "frontend"],
                                        name=name)

    token = base64.b16encode(os.urandom(20)).decode().lower()
    node_token = base64.b16encode(os.urandom(20)).decode().lower()
    # Nodes authenticate too: a node-role token, bound to this node's id.
    owned_file(conf / "tokens", f"operator admin {token}\ncontainer-node node {node_token}\n")
    owned_file(conf / "node.token", node_token + "\n")
    admin_dir = base / "admin"
    admin_dir.mkdir()
    owned_file(admin_dir / "token", token + "\n")
    seed = {
        "site": {"origins": ["http://127.0.0.1"]},
        "listeners": [{"name": "main", "address": "127.0.0.1", "port": 0}],
        "clusters": [
            {"name": "agents", "endpoints": [f"127.0.0.1:{backends['A']['api']}"]},
            {"name": "frontend", "endpoints": [f"127.0.0.1:{backends['A']['frontend']}"]}],
        "routes": [
            {"name": "api", "match": {"prefix": "/api/v1/"}, "cluster": "agents"},
            {"name": "ws", "match": {"prefix": "/ws/"}, "cluster": "agents", "websocket": True},
            {"name": "frontend", "match": {"prefix": "/"}, "cluster": "frontend"}],
    }
    (conf / "controlplane.yaml").write_text(yaml.safe_dump({
        "grpc": {"address": "127.0.0.1", "port": 0},
        "http": {"address": "127.0.0.1", "port": 0},
        "store": {"directory": "/var/lib/onedomain/store", "keep_versions": 50},
        "auth": {"tokens_file": "/etc/onedomain/config/tokens"},
        "seed": seed}))
    cp = start_container(f"{PREFIX}-controlplane", "controlplane", "serve", "--config",
                         "/etc/onedomain/config/controlplane.yaml",
                         "--port-file", "/run/onedomain/cp.json",
                         mounts=[f"{conf}:/etc/onedomain/config:ro", run_mount,
                                 f"{state}:/var/lib/onedomain"])
    cp_ports = wait_port_file(run_dir / "cp.json", ["grpc", "http"], name=cp)

    (conf / "dataplane.yaml").write_text(yaml.safe_dump({
        "node": {"id": "container-node"},
        "admin": {"address": "127.0.0.1", "port": 0},
        "workers": 2,
        "controlplane": {"address": f"127.0.0.1:{cp_ports['grpc']}",
                         "token_file": "/etc/onedomain/config/node.token",
                         "cache_path": "/var/cache/onedomain/snapshot.pb"},
        "drain": drain}))
    dp = start_container(f"{PREFIX}-dataplane", "dataplane", "--config",
                         "/etc/onedomain/config/dataplane.yaml",
                         "--port-file", "/run/onedomain/dp.json",
                         mounts=[f"{conf}:/etc/onedomain/config:ro", run_mount],
                         extra=["--tmpfs", "/var/cache/onedomain:mode=1777"])
    dp_ports = wait_port_file(run_dir / "dp.json", ["admin", "listener.main"], name=dp)
    port, admin = dp_ports["listener.main"], dp_ports["admin"]
    wait_for(lambda: status_of(admin, "/readyz") == 200, 30, "data plane ready")
    for name in (cp, dp, f"{PREFIX}-demo-A"):
        check_process_confinement(name)

    # HTTP: the frontend page and the API through the data plane.
    status, headers, body = request(port, "GET", "/")
    assert status == 200 and header(headers, "X-Demo-Instance") == ["A"], (status, headers)
    cookie, session = login(port)

    def admin_cli(*argv):
        p = podman("run", "--rm", *HARDENED, "--network=host", "-v",
                   f"{admin_dir}:/etc/onedomain/admin:ro", image("controlplane"), "admin",
                   "--server", f"127.0.0.1:{cp_ports['grpc']}",
                   "--token-file", "/etc/onedomain/admin/token", *argv, check=False)
        assert p.returncode == 0, (argv, p.returncode, p.stdout, p.stderr)
        return p.stdout

    async def scenario():
        # A WebSocket carrying the login cookie.
        ws_a, hello = await ws_open(port, cookie, "one")
        assert hello["instance"] == "A" and hello["session"] == session, hello
        assert await ws_echo(ws_a, "through the container") == "through the container"

        # Move the agents upstream to B from the control-plane image.
        out = await asyncio.to_thread(admin_cli, "set-upstream", "agents",
                                      f"127.0.0.1:{backends['B']['api']}",
                                      "--reason", "container test")
        assert "committed version 2" in out, out
        await asyncio.to_thread(wait_for, lambda: metric(metrics(admin),
                                                         "onedomain_config_version") == 2,
                                30, "data plane on version 2")
        status, headers, body = request(port, "GET", "/api/v1/echo", headers={"Cookie": cookie})
        assert status == 200 and json.loads(body)["instance"] == "B", (status, body)
        assert await ws_echo(ws_a, "still A") == "still A"   # the open socket stays on A
        ws_b, hello = await ws_open(port, cookie, "two")
        assert hello["instance"] == "B" and hello["session"] == session, hello

        nodes = json.loads(await asyncio.to_thread(admin_cli, "nodes", "-o", "json"))["nodes"]
        assert [(n.get("node_id"), int(n.get("version_acked", 0))) for n in nodes] == \
            [("container-node", 2)], nodes

        dm = metrics(admin)
        # /api/v1/me and /api/v1/echo; the login's two redirects; the page.
        requests = {(l.get("route"), l.get("code")): v for n, l, v in dm
                    if n == "onedomain_http_requests_total"}
        assert requests.get(("api", "200")) == 2 and requests.get(("api", "302")) == 2 and \
            requests.get(("frontend", "200")) == 1, requests
        assert metric(dm, "onedomain_websocket_connections_active", route="ws") == 2
        assert metric(dm, "onedomain_controlplane_connected") == 1
        cm = metrics(cp_ports["http"])
        assert metric(cm, "onedomain_fleet_nodes_connected") == 1
        await asyncio.to_thread(wait_for, lambda: metric(
            metrics(cp_ports["http"]), "onedomain_fleet_config_version",
            node="container-node") == 2, 30, "fleet view of version 2")
        assert metric(cm, "onedomain_admin_requests_total") >= 1

        # SIGTERM with both sockets open: Close 1001 on each, exit 0 within the grace period.
        t0 = time.monotonic()
        stop = asyncio.create_task(asyncio.to_thread(
            podman, "stop", "-t", str(grace), dp, timeout=grace + 30))
        codes = []
        for ws in (ws_a, ws_b):
            with contextlib.suppress(Exception):
                while True:
                    await asyncio.wait_for(ws.recv(), grace)
            codes.append(ws.close_code)
        await stop
        return codes, time.monotonic() - t0

    codes, took = asyncio.run(scenario())
    exit_code = int(podman("inspect", "--format", "{{.State.ExitCode}}", dp).stdout.strip())
    assert codes == [1001, 1001], (codes, logs(dp))
    assert exit_code == 0, (exit_code, logs(dp))
    assert took < grace, (took, grace)
    log(f"data plane drained in {took:.1f}s (grace {grace}s), WebSocket closes {codes}")


# ---- the chart under podman kube play ----------------------------------------------------------

def kube_cleanup_stale():
    for p in podman("pod", "ps", "--format", "{{.Name}}", check=False).stdout.split():
        if p.startswith(f"{RELEASE}-onedomain-"):
            podman("pod", "rm", "-f", "-t", "0", p, check=False)
    for v in podman("volume", "ls", "--format", "{{.Name}}", check=False).stdout.split():
        if v.startswith(f"{RELEASE}-onedomain-"):
            podman("volume", "rm", "-f", v, check=False)
    for s in podman("secret", "ls", "--format", "{{.Name}}", check=False).stdout.split():
        if s.startswith(f"{RELEASE}-onedomain-"):
            podman("secret", "rm", s, check=False)
    podman("network", "rm", "-f", KUBE_NET, check=False)


def in_netns(pid, url, timeout=5):
    """GET url from inside the pod's network namespace (so 127.0.0.1 is the pod's loopback)."""
    p = subprocess.run(["nsenter", "-t", str(pid), "-n", "curl", "-sS", "-o", "/dev/stdout",
                        "-w", "\n%{http_code}", "--max-time", str(timeout), url],
                       capture_output=True, text=True, timeout=timeout + 10)
    body, _, code = p.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


def pod_container(deploy, cname):
    pod = f"{deploy['metadata']['name']}-pod-0"  # podman 4.3 plays one replica
    return pod, f"{pod}-{cname}"


PVC_SUFFIX = "-pvc"


SECRET_VOLUMES = {}  # Secret name -> its `data` (base64 values), from the rendered chart


def project_secret(volume_source):
    """A directory with the items of a `secret` volume, decoded, readable by the pod's user."""
    name = volume_source["secretName"]
    data = SECRET_VOLUMES[name]
    items = volume_source.get("items") or [{"key": k, "path": k} for k in data]
    d = Path(args.work) / "kube" / "secret-volumes" / name
    d.mkdir(parents=True, exist_ok=True)
    for item in items:
        f = d / item["path"]
        f.write_bytes(base64.b64decode(data[item["key"]]))
        os.chown(f, UID, UID)
        os.chmod(f, 0o400)
    return d


def as_podman_plays_it(obj):
    """The changes made to rendered objects, each where podman 4.3 differs from a kubelet:
    - a `metadata.namespace` fieldRef (refused) is written out as the value the kubelet gives;
    - `ports` are dropped: podman publishes every containerPort on the host's 0.0.0.0 at the
      same number (Kubernetes publishes nothing without hostPort). Ports only name things
      here; the test resolves the probes' named ports from the rendered spec and reaches the
      pods on their own loopback;
    - a PVC gets PVC_SUFFIX: podman names a ConfigMap's volume and a claim's volume after the
      object, and the chart's control-plane ConfigMap and claim share a name;
    - a `secret` volume (podman 4.3's kube play panics on one with `items`) becomes a
      read-only hostPath directory holding exactly the Secret's items, decoded, as the kubelet
      would project them (SECRET_VOLUMES, filled by check_chart)."""
    obj = json.loads(json.dumps(obj))
    if obj["kind"] == "PersistentVolumeClaim":
        obj["metadata"]["name"] += PVC_SUFFIX
        return obj
    if obj["kind"] != "Deployment":
        return obj
    for v in obj["spec"]["template"]["spec"]["volumes"]:
        if "persistentVolumeClaim" in v:
            v["persistentVolumeClaim"]["claimName"] += PVC_SUFFIX
        if "secret" in v:
            sec = v.pop("secret")
            v["hostPath"] = {"path": str(project_secret(sec)), "type": "Directory"}
    for c in obj["spec"]["template"]["spec"]["containers"]:
        c.pop("ports", None)
        for e in c.get("env", []):
            if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                e.pop("valueFrom")
                e["value"] = PREFIX
    return obj


def check_pod(deploy, docs):
    spec = deploy["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    pod, name = pod_container(deploy, c["name"])
    info = json.loads(podman("inspect", name).stdout)[0]
    assert info["State"]["Running"], (name, logs(name))
    binary = c["image"].split("/")[-1].split(":")[0]
    # args: the image's entrypoint with exactly the chart's args.
    assert info["Path"] == f"/usr/local/bin/{binary}", info["Path"]
    assert info["Args"] == c["args"], (info["Args"], c["args"])
    # env: every variable of the chart, with its value (Downward API, Secret).
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    for e in c.get("env", []):
        assert e["name"] in env, (name, e["name"])
        ref = e.get("valueFrom", {})
        if "fieldRef" in ref and ref["fieldRef"]["fieldPath"] == "metadata.name":
            assert env[e["name"]] == pod, (e["name"], env[e["name"]])
        elif "fieldRef" in ref and ref["fieldRef"]["fieldPath"] == "metadata.namespace":
            assert env[e["name"]] == PREFIX, (e["name"], env[e["name"]])
        elif "secretKeyRef" in ref:
            sec = find(docs, "Secret", ref["secretKeyRef"]["name"])
            want = base64.b64decode(sec["data"][ref["secretKeyRef"]["key"]]).decode()
            assert env[e["name"]] == want, (e["name"], "not the Secret's value")
        elif "value" in e:
            assert env[e["name"]] == e["value"], e
    # mounts: every volumeMount at its path, read-only where the chart says so.
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    sources = {}
    for vm in c["volumeMounts"]:
        m = mounts.get(vm["mountPath"])
        assert m, (name, vm["mountPath"], sorted(mounts))
        assert m["RW"] == (not vm.get("readOnly", False)), (name, vm, m)
        sources.setdefault(m["Source"], set()).add(vm["name"])
    # One volume, one source (a ConfigMap and a PVC of the same name stay apart).
    assert all(len(v) == 1 for v in sources.values()), (name, sources)
    # securityContext: as the kernel sees the process.
    sc = c["securityContext"]
    assert sc["runAsUser"] == UID and sc["readOnlyRootFilesystem"] and \
        sc["capabilities"]["drop"] == ["ALL"] and sc["allowPrivilegeEscalation"] is False, sc
    pid = check_process_confinement(name, expect_hidden_bin=False)
    # probes: each httpGet probe of the chart answers 200 from inside the pod's network.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = c[kind]["httpGet"]
        port = ports.get(probe["port"], probe["port"])
        url = f"http://127.0.0.1:{port}{probe['path']}"
        limit = c[kind].get("periodSeconds", 10) * c[kind].get("failureThreshold", 3)
        wait_for(lambda: in_netns(pid, url)[0] == 200, limit, f"{name} {kind} {url}",
                 interval=0.5)
    return pod, name, pid


def check_chart(docs):
    kube_cleanup_stale()
    cleanups.append(kube_cleanup_stale)
    kube = Path(args.work) / "kube"
    kube.mkdir()
    cp_deploy = find(docs, "Deployment", "-controlplane")
    dp_deploy = find(docs, "Deployment", "-dataplane")
    cp_name = cp_deploy["metadata"]["name"]

    podman("network", "create", "--subnet", f"{KUBE_SUBNET}.0/24", KUBE_NET)
    cp_ip, dp_ip, demo_ip = f"{KUBE_SUBNET}.10", f"{KUBE_SUBNET}.11", f"{KUBE_SUBNET}.20"
    # The Services' DNS names, as /etc/hosts entries of every container (podman has no
    # Services): the control plane's, and the default values' upstreams on one demo backend.
    values = yaml.safe_load((REPO / "deploy/helm/onedomain/values.yaml").read_text())
    upstream_hosts = sorted({ep.split(":")[0] for cl in values["snapshot"]["clusters"]
                             for ep in cl["endpoints"]})
    hosts = kube / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{cp_ip} {cp_name}\n"
                     f"{demo_ip} {' '.join(upstream_hosts)}\n")
    conf = kube / "containers.conf"
    conf.write_text(Path(os.environ["CONTAINERS_CONF"]).read_text().replace(
        "[containers]\n", f'[containers]\nbase_hosts_file = "{hosts}"\n', 1))
    kube_env = dict(os.environ, CONTAINERS_CONF=str(conf))

    # The default values' two upstreams: the demo's API for `agents`, its page for `frontend`.
    upstream = {cl["name"]: int(cl["endpoints"][0].rsplit(":", 1)[1])
                for cl in values["snapshot"]["clusters"]}
    demo = f"{PREFIX}-kube-demo"
    podman("rm", "-f", "-t", "0", demo, check=False)
    podman("run", "-d", "--name", demo, *HARDENED, f"--network={KUBE_NET}", "--ip", demo_ip,
           "--sysctl", "net.ipv4.ip_unprivileged_port_start=0", image("demo"),
           "--address", "0.0.0.0", "--port", str(upstream["agents"]),
           "--frontend-port", str(upstream["frontend"]), "--instance", "kube")
    cleanups.append(lambda: podman("rm", "-f", "-t", "0", demo, check=False))

    # Secrets: podman 4.3 resolves a secretKeyRef from a podman secret of the same name whose
    # content is the Secret's `data` as JSON (key -> base64).
    for sec in (d for d in docs if d["kind"] == "Secret"):
        SECRET_VOLUMES[sec["metadata"]["name"]] = sec.get("data", {})
        f = kube / f"secret-{sec['metadata']['name']}.json"
        f.write_text(json.dumps(sec.get("data", {})))
        podman("secret", "create", sec["metadata"]["name"], str(f))

    def play(deploy, ip, extra_kinds):
        objs = [as_podman_plays_it(d) for d in docs
                if (d["kind"], d["metadata"]["name"]) in extra_kinds]
        objs.append(as_podman_plays_it(deploy))
        f = kube / f"{deploy['metadata']['name']}.yaml"
        f.write_text(yaml.safe_dump_all(objs))
        p = podman("kube", "play", "--network", KUBE_NET, "--ip", ip, str(f), check=False,
                   timeout=180, env=kube_env)
        assert p.returncode == 0, (f, p.stdout, p.stderr)
        return f

    def volumes(deploy):
        out = set()
        for v in deploy["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in v:
                out.add(("ConfigMap", v["configMap"]["name"]))
            if "persistentVolumeClaim" in v:
                out.add(("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]))
        return out

    play(cp_deploy, cp_ip, volumes(cp_deploy))
    _, cp_c, _ = check_pod(cp_deploy, docs)
    play(dp_deploy, dp_ip, volumes(dp_deploy))
    dp_pod, dp_c, dp_pid = check_pod(dp_deploy, docs)

    # The data plane found the control plane by its Service name and acked version 1; the
    # CLI inside the control-plane pod reads the token the Secret put in its environment.
    def node_acked():
        p = podman("exec", cp_c, "controlplane", "admin", "nodes", "-o", "json", check=False)
        if p.returncode != 0:
            return None
        nodes = json.loads(p.stdout).get("nodes", [])
        return [n for n in nodes if n.get("node_id") == dp_pod and n.get("connected")
                and int(n.get("version_acked", 0)) >= 1]
    wait_for(node_acked, 60, f"node {dp_pod} connected and acked", interval=0.5)

    # One request through the data plane pod to the upstream by its Service name.
    (dp_spec,) = dp_deploy["spec"]["template"]["spec"]["containers"]
    http_port = {p["name"]: p["containerPort"] for p in dp_spec["ports"]}["http"]
    code, body = in_netns(dp_pid, f"http://127.0.0.1:{http_port}/api/v1/echo")
    assert code == 200 and json.loads(body)["instance"] == "kube", (code, body)
    log(f"kube play: {cp_c} and {dp_c} ran as rendered; node {dp_pod} acked; "
        "/api/v1/echo answered by the upstream")


def cleanup_stale_containers():
    ids = podman("ps", "-a", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        podman("rm", "-f", "-t", "0", *ids, check=False)


def main():
    global args
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", required=True)
    ap.add_argument("--revision", required=True)
    ap.add_argument("--helm", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--only", default="images,binaries,stack,chart")
    args = ap.parse_args()
    assert os.environ.get("CONTAINERS_CONF"), "run me from scripts/container-test.sh"
    # The script's deadline sends TERM: leave through `finally`, removing what was started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    only = args.only.split(",")
    cleanup_stale_containers()
    cleanups.append(cleanup_stale_containers)
    try:
        docs = chart_render()
        if "images" in only:
            with step("images"):
                sizes = check_images()
        if "binaries" in only:
            with step("binaries"):
                check_binaries()
        if "stack" in only:
            with step("stack"):
                check_stack(docs)
        if "chart" in only:
            with step("chart (podman kube play)"):
                check_chart(docs)
        if "images" in only:
            log("image sizes: " + ", ".join(f"{t} {s:.1f} MB (budget {SIZE_BUDGET_MB[t]})"
                                            for t, s in sizes.items()))
    finally:
        for fn in reversed(cleanups):
            with contextlib.suppress(Exception):
                fn()
    log("all checks passed")


if __name__ == "__main__":
    sys.exit(main())
