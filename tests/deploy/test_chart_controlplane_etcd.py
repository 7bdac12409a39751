"""The chart's control-plane replicas on etcd (issue 18): `controlplane.replicas` >= 2 only with
`controlplane.store.etcd`, a PodDisruptionBudget and anti-affinity for the replicas, etcd
endpoints and TLS secret as values (values-external-etcd.yaml), and the rendered config
accepted by the real binary's --check-config."""

from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile

import pytest
import yaml

from deploy_support import (CHART_DIR, config, config_file, container, find, one, pod_spec,
                            render, render_raw)

CP = "-controlplane"
EXTERNAL = CHART_DIR / "values-external-etcd.yaml"
BUILD_DIR = pathlib.Path(os.environ.get("ONEDOMAIN_BUILD_DIR", "../../build"))


def test_two_replicas_without_etcd_refuse_to_render():
    proc = render_raw(sets={"controlplane.replicas": "2"}, check=False)
    assert proc.returncode != 0
    assert "controlplane.replicas >= 2 requires controlplane.store.etcd.endpoints" in proc.stderr


def test_default_stays_one_replica_on_the_file_store_without_pdb():
    docs = render()
    cp = one(docs, "Deployment", CP)
    assert cp["spec"]["replicas"] == 1
    assert cp["spec"]["strategy"] == {"type": "Recreate"}
    assert "etcd" not in config(docs, "controlplane")["store"]
    assert not find(docs, "PodDisruptionBudget", CP)
    assert "affinity" not in pod_spec(cp)


def test_external_etcd_example_renders_replicas_pdb_anti_affinity_and_tls():
    docs = render([EXTERNAL])
    cp = one(docs, "Deployment", CP)
    assert cp["spec"]["replicas"] == 3
    assert cp["spec"]["strategy"]["type"] == "RollingUpdate"
    labels = cp["spec"]["template"]["metadata"]["labels"]
    pdb = one(docs, "PodDisruptionBudget", CP)
    assert pdb["spec"]["minAvailable"] == 2
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    anti = pod_spec(cp)["affinity"]["podAntiAffinity"]
    term = anti["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    # The store is etcd: no volume claim, no state volume; the TLS secret is mounted where the
    # config's files point.
    assert not find(docs, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in pod_spec(cp)["volumes"]}
    assert "state" not in volumes
    assert volumes["etcd-tls"]["secret"]["secretName"] == "onedomain-etcd-client"
    mounts = {m["name"]: m["mountPath"] for m in container(cp)["volumeMounts"]}
    store = config(docs, "controlplane")["store"]
    assert "directory" not in store
    etcd = store["etcd"]
    assert etcd["endpoints"] == ["https://etcd-0.etcd.infra.svc:2379",
                                 "https://etcd-1.etcd.infra.svc:2379",
                                 "https://etcd-2.etcd.infra.svc:2379"]
    assert etcd["prefix"] == "/onedomain/prod/"
    for key, name in (("ca_file", "ca.crt"), ("cert_file", "tls.crt"), ("key_file", "tls.key")):
        assert etcd[key] == f"{mounts['etcd-tls']}/{name}"


def test_soft_anti_affinity_by_default_with_replicas():
    docs = render(sets={"controlplane.replicas": "2",
                        "controlplane.store.etcd.endpoints[0]": "http://etcd:2379"})
    cp = one(docs, "Deployment", CP)
    anti = pod_spec(cp)["affinity"]["podAntiAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in anti
    assert one(docs, "PodDisruptionBudget", CP)["spec"]["minAvailable"] == 1
    assert "etcd-tls" not in {v["name"] for v in pod_spec(cp)["volumes"]}


def test_rendered_etcd_config_passes_check_config():
    binary = BUILD_DIR / "controlplane" / "controlplane"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"controlplane binary not built: {binary}")
    text = config_file(render([EXTERNAL]), "controlplane")
    with tempfile.TemporaryDirectory() as d:
        path = pathlib.Path(d) / "controlplane.yaml"
        path.write_text(text)
        proc = subprocess.run([str(binary), "serve", "--config", str(path), "--check-config"],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # And it really checks: an http endpoint with a CA file is refused.
        path.write_text(text.replace("https://etcd-0", "http://etcd-0").replace(
            "https://etcd-1", "http://etcd-1").replace("https://etcd-2", "http://etcd-2"))
        proc = subprocess.run([str(binary), "serve", "--config", str(path), "--check-config"],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1
        assert "store.etcd.ca_file" in proc.stdout + proc.stderr
