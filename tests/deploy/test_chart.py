"""The Helm chart: lint, render, and the properties issue 8 asks for, for every value set.

Value sets (deploy_support.CASES): the chart's defaults, values-hirecj.yaml (the seed's site),
and two test-only sets that switch every optional branch on ("everything") or off ("minimal").
"""

from __future__ import annotations

import pytest
import yaml

from deploy_support import (CASES, CHART_DIR, NAMESPACE, RELEASE, config, container, find,
                            duration_seconds, one, pod_spec, render, render_case, render_raw,
                            run, tool, helm_args)

ALL = sorted(CASES)
DP = "-dataplane"
CP = "-controlplane"


# ---- lint and render ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL)
def test_helm_lint_strict(case):
    proc = run([tool("helm"), "lint", "--strict", str(CHART_DIR), "--namespace", NAMESPACE]
               + helm_args(CASES[case], {}))
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("case", ALL)
def test_helm_template_renders(case):
    docs = render_case(case)
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("ConfigMap", "Deployment", "Service"):
        assert kind in kinds, f"{case}: no {kind} in {kinds}"
    for d in docs:
        assert d["metadata"]["name"].startswith(f"{RELEASE}-"), d["metadata"]["name"]
        labels = d["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == RELEASE, d["metadata"]["name"]


def test_default_renders_issue8_objects():
    kinds = sorted(d["kind"] for d in render_case("default"))
    assert kinds.count("Deployment") == 2
    assert kinds.count("Service") == 2
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
                 "PersistentVolumeClaim", "Secret", "ServiceAccount"):
        assert kind in kinds, kind
    # Two config files plus the Grafana dashboard.
    assert kinds.count("ConfigMap") == 3
    # prometheus-operator objects only when enabled (their CRDs may not be installed).
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert kind not in kinds


def test_hirecj_renders_monitoring_objects():
    docs = render_case("hirecj")
    sm = one(docs, "ServiceMonitor")
    pm = one(docs, "PodMonitor")
    one(docs, "PrometheusRule")
    cp_svc = one(docs, "Service", CP)
    assert sm["spec"]["selector"]["matchLabels"].items() <= cp_svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in cp_svc["spec"]["ports"]}
    dp = one(docs, "Deployment", DP)
    assert pm["spec"]["selector"]["matchLabels"].items() <= \
        dp["spec"]["template"]["metadata"]["labels"].items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] in \
        {p["name"] for p in container(dp)["ports"]}


# ---- drain: one knob, consistent timers ----------------------------------------------------------

def drain_facts(docs):
    dp = one(docs, "Deployment", DP)
    spec = pod_spec(dp)
    c = container(dp)
    boot = config(docs, "dataplane")
    seed = config(docs, "controlplane")["seed"]
    pre = c.get("lifecycle", {}).get("preStop")
    if pre is None:
        pre_stop = 0
    elif "sleep" in pre:
        pre_stop = pre["sleep"]["seconds"]
    else:
        assert pre["exec"]["command"][0] == "/bin/sleep", pre
        pre_stop = int(pre["exec"]["command"][1])
    ws_dp = boot["snapshot"]["websocket_policy"]
    ws_cp = seed["websocket_policy"]
    assert ws_dp == ws_cp, "the data plane's fallback snapshot and the seed disagree"
    return {
        "grace": spec["terminationGracePeriodSeconds"],
        "pre_stop": pre_stop,
        "delay": duration_seconds(boot["drain"]["delay"]),
        "timeout": duration_seconds(boot["drain"]["timeout"]),
        "spread": duration_seconds(ws_dp["drain_spread"]),
        "drain_grace": duration_seconds(ws_dp["drain_grace"]),
        "readiness": c["readinessProbe"],
    }


def assert_drain_consistent(f):
    # The kubelet's clock starts at deletion: preStop, then SIGTERM, then the data plane's own
    # drain, which it ends by drain.timeout. SIGKILL must come only after that.
    assert f["grace"] > f["timeout"] + f["delay"], f
    assert f["grace"] > f["pre_stop"] + f["timeout"], f
    # The binary's own rule (bootstrap.proto): timeout > delay + drain_spread + drain_grace, so
    # every WebSocket gets its Close 1001 and its close handshake before the hard limit.
    assert f["timeout"] > f["delay"] + f["spread"] + f["drain_grace"], f
    assert min(f["delay"], f["spread"], f["drain_grace"]) >= 1, f
    # Readiness notices the drain (it turns false at SIGTERM) before the listeners close.
    r = f["readiness"]
    assert r["periodSeconds"] * r["failureThreshold"] <= f["delay"], (r, f)


@pytest.mark.parametrize("case", ALL)
def test_grace_period_exceeds_drain(case):
    assert_drain_consistent(drain_facts(render_case(case)))


@pytest.mark.parametrize("seconds", [12, 13, 30, 47, 61, 120, 600, 3600])
def test_one_drain_knob_keeps_timers_consistent(seconds):
    docs = render(sets={"drain.seconds": str(seconds)})
    f = drain_facts(docs)
    assert f["timeout"] == seconds
    assert_drain_consistent(f)


def test_default_drain_matches_binary_defaults():
    # common/config/defaults.h: drain delay 5s, timeout 30s, WebSocket spread 5s, grace 10s.
    f = drain_facts(render_case("default"))
    assert (f["delay"], f["timeout"], f["spread"], f["drain_grace"]) == (5, 30, 5, 10)
    assert f["pre_stop"] == 5 and f["grace"] == 45


def test_drain_timers_cannot_be_set_separately():
    bad = render_raw(sets={"snapshot.websocket_policy.drain_grace": "99s"}, check=False)
    assert bad.returncode != 0 and "drain.seconds" in bad.stderr, bad.stderr
    too_small = render_raw(sets={"drain.seconds": "5"}, check=False)
    assert too_small.returncode != 0 and "drain.seconds" in too_small.stderr, too_small.stderr


# ---- probes hit what the binaries serve -------------------------------------------------------

def _port_number(c, port):
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in c["ports"] if p["name"] == port)


@pytest.mark.parametrize("case", ALL)
def test_probes_hit_admin_endpoints(case):
    docs = render_case(case)
    boot = config(docs, "dataplane")
    cp_conf = config(docs, "controlplane")
    # The admin ports the binaries open, as the rendered config files say.
    admin_port = {DP: boot["admin"]["port"], CP: cp_conf["http"]["port"]}
    assert admin_port == {DP: 9901, CP: 9902}
    for suffix in (DP, CP):
        c = container(one(docs, "Deployment", suffix))
        for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                                 ("startupProbe", "/healthz")):
            probe = c[probe_name]["httpGet"]
            assert probe["path"] == path, (suffix, probe_name, probe)
            assert _port_number(c, probe["port"]) == admin_port[suffix], (suffix, probe_name)
            assert probe.get("scheme", "HTTP") == "HTTP"
    # The addresses are not loopback, or the kubelet could not reach them.
    assert boot["admin"]["address"] == "0.0.0.0"
    assert cp_conf["http"]["address"] == "0.0.0.0"


@pytest.mark.parametrize("case", ALL)
def test_container_ports_match_config(case):
    docs = render_case(case)
    boot = config(docs, "dataplane")
    cp_conf = config(docs, "controlplane")
    dp_ports = {p["name"]: p["containerPort"] for p in container(one(docs, "Deployment", DP))["ports"]}
    cp_ports = {p["name"]: p["containerPort"] for p in container(one(docs, "Deployment", CP))["ports"]}
    listeners = boot["snapshot"]["listeners"]
    assert len(listeners) == 1 and listeners[0]["port"] == dp_ports["http"] == 3456
    assert cp_conf["seed"]["listeners"] == listeners
    assert dp_ports["admin"] == boot["admin"]["port"]
    assert cp_ports == {"grpc": cp_conf["grpc"]["port"], "http": cp_conf["http"]["port"]}
    assert cp_ports == {"grpc": 18000, "http": 9902}
    # Data planes dial the control plane's Service on its gRPC port.
    cp_svc = one(docs, "Service", CP)
    grpc_port = next(p["port"] for p in cp_svc["spec"]["ports"] if p["name"] == "grpc")
    assert boot["controlplane"]["address"] == f"{cp_svc['metadata']['name']}:{grpc_port}"


# ---- scaling objects target the right things --------------------------------------------------

@pytest.mark.parametrize("case", ALL)
def test_hpa_targets_dataplane_deployment(case):
    docs = render_case(case)
    hpas = find(docs, "HorizontalPodAutoscaler")
    dp = one(docs, "Deployment", DP)
    if case == "minimal":
        assert not hpas
        assert dp["spec"]["replicas"] == 3
        return
    hpa = one(docs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert ref == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dp["metadata"]["name"]}
    # The HPA owns the replica count.
    assert "replicas" not in dp["spec"]
    metrics = hpa["spec"]["metrics"]
    assert metrics[0]["type"] == "Resource" and metrics[0]["resource"]["name"] == "cpu"
    # Utilisation needs a CPU request.
    assert container(dp)["resources"]["requests"]["cpu"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    if case == "everything":
        pods = [m for m in metrics if m["type"] == "Pods"]
        assert pods and pods[0]["pods"]["metric"]["name"] == "onedomain_downstream_connections_active"


@pytest.mark.parametrize("case", ALL)
def test_services_select_the_right_pods(case):
    docs = render_case(case)
    deployments = {s: one(docs, "Deployment", s) for s in (DP, CP)}
    for suffix, deployment in deployments.items():
        svc = one(docs, "Service", suffix)
        selector = svc["spec"]["selector"]
        assert selector["app.kubernetes.io/component"] == suffix.lstrip("-")
        matching = [d["metadata"]["name"] for d in find(docs, "Deployment")
                    if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert matching == [deployment["metadata"]["name"]], (suffix, matching)
        # Deployment selector matches its own pods.
        assert deployment["spec"]["selector"]["matchLabels"].items() <= \
            deployment["spec"]["template"]["metadata"]["labels"].items()
        c = container(deployment)
        names = {p["name"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, (suffix, port)
    dp_svc = one(docs, "Service", DP)
    assert [p["targetPort"] for p in dp_svc["spec"]["ports"]] == ["http"]
    cp_svc = one(docs, "Service", CP)
    assert {p["port"] for p in cp_svc["spec"]["ports"]} == {18000, 9902}


@pytest.mark.parametrize("case", ALL)
def test_pdb_and_topology_spread_select_dataplane_pods(case):
    docs = render_case(case)
    dp = one(docs, "Deployment", DP)
    pod_labels = dp["spec"]["template"]["metadata"]["labels"]
    pdbs = find(docs, "PodDisruptionBudget")
    spread = pod_spec(dp).get("topologySpreadConstraints", [])
    if case == "minimal":
        assert not pdbs and not spread
        return
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert {s["topologyKey"] for s in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for s in spread:
        assert s["labelSelector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("case", ALL)
def test_controlplane_is_one_replica_recreate_with_store(case):
    docs = render_case(case)
    cp = one(docs, "Deployment", CP)
    assert cp["spec"]["replicas"] == 1
    assert cp["spec"]["strategy"] == {"type": "Recreate"}
    store_dir = config(docs, "controlplane")["store"]["directory"]
    mounts = {m["name"]: m["mountPath"] for m in container(cp)["volumeMounts"]}
    assert store_dir.startswith(mounts["state"] + "/")
    state = next(v for v in pod_spec(cp)["volumes"] if v["name"] == "state")
    if case == "minimal":
        assert state == {"name": "state", "emptyDir": {}}
        assert not find(docs, "PersistentVolumeClaim")
    elif case == "everything":
        assert state["persistentVolumeClaim"]["claimName"] == "od-store"
        assert not find(docs, "PersistentVolumeClaim")
    else:
        pvc = one(docs, "PersistentVolumeClaim")
        assert state["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


@pytest.mark.parametrize("case", ALL)
def test_dataplane_cache_on_a_volume(case):
    docs = render_case(case)
    dp = one(docs, "Deployment", DP)
    cache_path = config(docs, "dataplane")["controlplane"]["cache_path"]
    mounts = {m["name"]: m["mountPath"] for m in container(dp)["volumeMounts"]}
    assert cache_path.startswith(mounts["cache"] + "/")


# ---- security ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL)
def test_no_container_runs_as_root(case):
    docs = render_case(case)
    for d in find(docs, "Deployment"):
        spec = pod_spec(d)
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["runAsUser"] > 0 and psc["runAsGroup"] > 0
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, c["name"]
            assert sc.get("runAsUser", psc["runAsUser"]) > 0, c["name"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert not sc.get("privileged", False)
        assert spec["automountServiceAccountToken"] is False


def test_schema_rejects_root_and_typos():
    root = render_raw(sets={"securityContext.runAsUser": "0"}, check=False)
    assert root.returncode != 0 and "runAsUser" in root.stderr, root.stderr
    typo = render_raw(sets={"dataplane.replica": "3"}, check=False)
    assert typo.returncode != 0 and "replica" in typo.stderr, typo.stderr
    listeners = render_raw(sets={"snapshot.listeners[0].name": "x"}, check=False)
    assert listeners.returncode != 0 and "listeners" in listeners.stderr, listeners.stderr


@pytest.mark.parametrize("case", ALL)
def test_networkpolicy_guards_controlplane_grpc(case):
    docs = render_case(case)
    nps = find(docs, "NetworkPolicy")
    if case == "minimal":
        assert not nps
        return
    np = one(docs, "NetworkPolicy")
    cp = one(docs, "Deployment", CP)
    dp = one(docs, "Deployment", DP)
    cp_labels = cp["spec"]["template"]["metadata"]["labels"]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= cp_labels.items()
    assert np["spec"]["policyTypes"] == ["Ingress"]
    grpc_rules = [r for r in np["spec"]["ingress"] if any(p["port"] == "grpc" for p in r["ports"])]
    assert len(grpc_rules) == 1
    peers = grpc_rules[0]["from"]
    assert peers, "the gRPC port must not be open to everyone"
    dp_labels = dp["spec"]["template"]["metadata"]["labels"]
    selectors = [p["podSelector"]["matchLabels"] for p in peers if "namespaceSelector" not in p]
    assert any(s.items() <= dp_labels.items() for s in selectors), "data planes must reach gRPC"
    assert {"onedomain.io/admin": "true"} in selectors, "admin-labelled pods must reach gRPC"
    # No peer admits everything.
    for p in peers:
        assert p.get("podSelector", {}).get("matchLabels") or p.get("namespaceSelector")
    grpc_container_port = next(p for p in container(cp)["ports"] if p["name"] == "grpc")
    assert grpc_container_port["containerPort"] == 18000


# ---- config files, secrets, site ------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL)
def test_config_changes_roll_pods(case):
    docs = render_case(case)
    for suffix in (DP, CP):
        d = one(docs, "Deployment", suffix)
        ann = d["spec"]["template"]["metadata"]["annotations"]
        assert len(ann["checksum/config"]) == 64
        cm_name = one(docs, "ConfigMap", suffix)["metadata"]["name"]
        vols = {v["name"]: v for v in pod_spec(d)["volumes"]}
        assert vols["config"]["configMap"]["name"] == cm_name
        args = container(d)["args"]
        file_name = args[args.index("--config") + 1]
        mount = next(m for m in container(d)["volumeMounts"] if m["name"] == "config")
        assert file_name == f"{mount['mountPath']}/{suffix.lstrip('-')}.yaml"
    changed = render(sets={"drain.seconds": "31"})
    assert one(changed, "Deployment", DP)["spec"]["template"]["metadata"]["annotations"] != \
        one(docs if case == "default" else render_case("default"), "Deployment", DP)["spec"][
            "template"]["metadata"]["annotations"]


def _env(c):
    return {e["name"]: e for e in c.get("env", [])}


def test_admin_token_from_secret_never_a_flag():
    for case in ALL:
        docs = render_case(case)
        cp = one(docs, "Deployment", CP)
        c = container(cp)
        assert not any("token" in a.lower() for a in c["args"]), c["args"]
        env = _env(c)
        if case == "minimal":
            assert "ONEDOMAIN_ADMIN_TOKEN" not in env
            assert not find(docs, "Secret", "-admin-token")
            continue
        ref = env["ONEDOMAIN_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert config(docs, "controlplane")["auth"]["token_env"] == "ONEDOMAIN_ADMIN_TOKEN"
        if case == "hirecj":
            assert ref == {"name": "onedomain-admin-token", "key": "token"}
            assert not find(docs, "Secret", "-admin-token"), \
                "an existing secret is referenced, not created"
        else:
            secret = one(docs, "Secret", "-admin-token")
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["data"]
    # A generated token is long and random.
    import base64
    default_secret = one(render_case("default"), "Secret", "-admin-token")
    token = base64.b64decode(default_secret["data"]["token"]).decode()
    assert len(token) >= 32


def test_node_token_generated_and_mounted_never_a_flag():
    """Data planes authenticate on the config stream by default: the chart generates a node
    token Secret, hands it to the control plane through the environment (auth.node_token_env)
    and to every data-plane pod as the file its bootstrap names (controlplane.token_file)."""
    import base64
    for case in ALL:
        docs = render_case(case)
        secret = one(docs, "Secret", "-node-token")
        assert len(base64.b64decode(secret["data"]["token"]).decode()) >= 32
        cp = container(one(docs, "Deployment", CP))
        ref = _env(cp)["ONEDOMAIN_NODE_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": "token"}
        assert config(docs, "controlplane")["auth"]["node_token_env"] == "ONEDOMAIN_NODE_TOKEN"
        dp_deploy = one(docs, "Deployment", DP)
        dp = container(dp_deploy)
        assert not any("token" in a.lower() for a in dp.get("args", [])), dp.get("args")
        mount = next(m for m in dp["volumeMounts"] if m["name"] == "node-token")
        assert mount["readOnly"] is True
        vol = next(v for v in pod_spec(dp_deploy)["volumes"] if v["name"] == "node-token")
        assert vol["secret"]["secretName"] == secret["metadata"]["name"]
        token_file = config(docs, "dataplane")["controlplane"]["token_file"]
        assert token_file == f"{mount['mountPath']}/token"
        assert vol["secret"]["items"] == [{"key": "token", "path": "token"}]
    existing = render(sets={"nodeToken.existingSecret": "my-node-token"})
    assert not find(existing, "Secret", "-node-token")
    vol = next(v for v in pod_spec(one(existing, "Deployment", DP))["volumes"]
               if v["name"] == "node-token")
    assert vol["secret"]["secretName"] == "my-node-token"


def test_tls_secrets_referenced():
    docs = render_case("hirecj")
    dp = one(docs, "Deployment", DP)
    tls_vol = next(v for v in pod_spec(dp)["volumes"] if v["name"] == "tls")
    assert tls_vol["secret"]["secretName"] == "amir-hirecj-ai-tls"
    mount = next(m for m in container(dp)["volumeMounts"] if m["name"] == "tls")
    listener = config(docs, "dataplane")["snapshot"]["listeners"][0]
    assert listener["tls"]["cert_file"] == f"{mount['mountPath']}/tls.crt"
    assert listener["tls"]["key_file"] == f"{mount['mountPath']}/tls.key"
    everything = render_case("everything")
    created = one(everything, "Secret", "-tls")
    assert created["type"] == "kubernetes.io/tls"
    dp = one(everything, "Deployment", DP)
    names = {v["name"]: v for v in pod_spec(dp)["volumes"]}
    assert names["tls"]["secret"]["secretName"] == created["metadata"]["name"]
    assert names["controlplane-tls"]["secret"]["secretName"] == "cp-tls"
    boot = config(everything, "dataplane")
    assert boot["controlplane"]["ca_file"].endswith("/ca.crt")
    cp_conf = config(everything, "controlplane")
    assert cp_conf["grpc"]["cert_file"].endswith("/tls.crt")
    assert cp_conf["auth"]["tokens_file"].endswith("/tokens")


def test_hirecj_site():
    docs = render_case("hirecj")
    for snap in (config(docs, "dataplane")["snapshot"], config(docs, "controlplane")["seed"]):
        assert snap["site"] == {"origins": ["https://amir.hirecj.ai"], "cookie_domain": ".hirecj.ai"}
        clusters = {c["name"]: c["endpoints"] for c in snap["clusters"]}
        routes = [(r["match"]["prefix"], r["cluster"], r.get("websocket", False)) for r in snap["routes"]]
        assert routes == [("/api/v1/", "agents", False), ("/ws/", "agents", True),
                          ("/", "frontend", False)]
        assert clusters["agents"] == ["agents-service:8000"]
        assert "frontend" in clusters
        cookies = snap["cookie_policy"]
        rewrites = {(r["from"], r["to"]) for r in cookies["domain_rewrites"]}
        assert rewrites == {("agents-service", ".hirecj.ai"), ("localhost", ".hirecj.ai")}
        attrs = {}
        for rule in cookies["attribute_rules"]:
            if rule["name"] in ("*", "sess_*"):
                for k in ("secure", "http_only", "same_site"):
                    if k in rule:
                        attrs[k] = rule[k]
        assert attrs == {"secure": True, "http_only": True, "same_site": "lax"}
        assert snap["websocket_policy"]["allowed_origins"] == ["https://amir.hirecj.ai"]


def test_dashboard_configmap_has_sidecar_label():
    for case in ("default", "hirecj", "everything"):
        cm = one(render_case(case), "ConfigMap", "-dashboard")
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert "onedomain-fleet.json" in cm["data"]
    assert not find(render_case("minimal"), "ConfigMap", "-dashboard")


def test_images_and_args():
    docs = render_case("everything")
    dp = container(one(docs, "Deployment", DP))
    cp = container(one(docs, "Deployment", CP))
    assert dp["image"] == "registry.example.internal/onedomain/dataplane:1.2.3"
    assert cp["image"] == "registry.example.internal/onedomain/controlplane:1.2.3"
    assert cp["args"][0] == "serve"
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    default = render_case("default")
    assert container(one(default, "Deployment", DP))["image"] == \
        f"onedomain/dataplane:{chart['appVersion']}"


# ---- worker event loop -------------------------------------------------------------------------

def test_worker_io_defaults_to_auto_and_the_seccomp_profile_follows_values():
    docs = render_case("default")
    assert config(docs, "dataplane")["worker_io"] == "auto"
    assert pod_spec(one(docs, "Deployment", DP))["securityContext"]["seccompProfile"] == \
        {"type": "RuntimeDefault"}
    docs = render(sets={"dataplane.workerIo": "io_uring",
                        "dataplane.seccompProfile.type": "Localhost",
                        "dataplane.seccompProfile.localhostProfile": "profiles/io-uring.json"})
    assert config(docs, "dataplane")["worker_io"] == "io_uring"
    assert pod_spec(one(docs, "Deployment", DP))["securityContext"]["seccompProfile"] == \
        {"type": "Localhost", "localhostProfile": "profiles/io-uring.json"}
    # The control plane keeps the runtime's default profile.
    assert pod_spec(one(docs, "Deployment", CP))["securityContext"]["seccompProfile"] == \
        {"type": "RuntimeDefault"}
    bad = render_raw(sets={"dataplane.workerIo": "uring"}, check=False)
    assert bad.returncode != 0 and "workerIo" in bad.stderr, bad.stderr


def test_worker_slice_is_the_nodes_auto_unless_values_set_it():
    # Unset: the node picks (500us for yielding io_uring workers, the kernel's otherwise).
    assert "worker_slice" not in config(render_case("default"), "dataplane")
    docs = render(sets={"dataplane.workerSlice": "300us"})
    assert config(docs, "dataplane")["worker_slice"] == "300us"
    docs = render(sets={"dataplane.workerSlice": "0s"})
    assert config(docs, "dataplane")["worker_slice"] == "0s"
    bad = render_raw(sets={"dataplane.workerSlice": "short"}, check=False)
    assert bad.returncode != 0 and "workerSlice" in bad.stderr, bad.stderr
