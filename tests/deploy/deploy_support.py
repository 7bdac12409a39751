"""Shared helpers of the deployment tests: where the chart and tools are, rendering, lookups.

The tools (helm, kubectl, kubernetes-models, promtool) come from scripts/install-helm.sh; a
missing tool fails the test with the command that installs it, it never skips.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest
import yaml

SOURCE_DIR = pathlib.Path(
    os.environ.get("ONEDOMAIN_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
TOOLS_DIR = pathlib.Path(os.environ.get("ONEDOMAIN_TOOLS_DIR", SOURCE_DIR / ".tools"))
CHART_DIR = SOURCE_DIR / "deploy" / "helm" / "onedomain"
DEPLOY_DIR = SOURCE_DIR / "deploy"
TESTS_DIR = pathlib.Path(__file__).resolve().parent

INSTALL_HINT = "run scripts/install-helm.sh first (it installs helm, kubectl, kubernetes-models, promtool)"

# The value sets every structural test runs over. Paths are relative to the chart directory.
RELEASE = "od"
NAMESPACE = "onedomain"

CASES = {
    # The chart's defaults.
    "default": [],
    # The seed's site: TLS, LoadBalancer, ServiceMonitor/PodMonitor/PrometheusRule, dashboard.
    "hirecj": [CHART_DIR / "values-hirecj.yaml"],
    # Every optional branch switched on or to its alternative.
    "everything": [TESTS_DIR / "values-everything.yaml"],
    # The sparse branches: fixed replicas, no HPA/PDB/NetworkPolicy/PVC/secret/dashboard.
    "minimal": [TESTS_DIR / "values-minimal.yaml"],
}


def tool(name: str) -> str:
    """Absolute path of helm/kubectl in the tools dir, or of a command on PATH; fails if absent."""
    candidate = TOOLS_DIR / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} not found in {TOOLS_DIR / 'bin'} or on PATH: {INSTALL_HINT}")


def run(cmd: list[str], *, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    if check and proc.returncode != 0:
        pytest.fail(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def helm_args(values: list[pathlib.Path], sets: dict[str, str]) -> list[str]:
    args: list[str] = []
    for v in values:
        args += ["-f", str(v)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def render_raw(values: list[pathlib.Path] | None = None, sets: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    cmd = [tool("helm"), "template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE]
    cmd += helm_args(values or [], sets or {})
    return run(cmd, check=check)


@functools.lru_cache(maxsize=None)
def _render_cached(values: tuple[pathlib.Path, ...], sets: tuple[tuple[str, str], ...]) -> str:
    return render_raw(list(values), dict(sets)).stdout


def render(values: list[pathlib.Path] | None = None, sets: dict[str, str] | None = None) -> list[dict]:
    """`helm template` → the list of manifests (empty documents dropped)."""
    text = _render_cached(tuple(values or []), tuple(sorted((sets or {}).items())))
    return [d for d in yaml.safe_load_all(text) if d]


def render_case(case: str) -> list[dict]:
    return render(CASES[case])


def find(docs: list[dict], kind: str, name_suffix: str | None = None) -> list[dict]:
    out = [d for d in docs if d.get("kind") == kind]
    if name_suffix is not None:
        out = [d for d in out if d["metadata"]["name"].endswith(name_suffix)]
    return out


def one(docs: list[dict], kind: str, name_suffix: str | None = None) -> dict:
    found = find(docs, kind, name_suffix)
    assert len(found) == 1, (
        f"expected exactly one {kind}{' *' + name_suffix if name_suffix else ''}, "
        f"got {[d['metadata']['name'] for d in found]}")
    return found[0]


def config_file(docs: list[dict], component: str) -> str:
    """The YAML file a binary reads, taken out of its rendered ConfigMap."""
    cm = one(docs, "ConfigMap", f"-{component}")
    return cm["data"][f"{component}.yaml"]


def config(docs: list[dict], component: str) -> dict:
    return yaml.safe_load(config_file(docs, component))


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict, name: str | None = None) -> dict:
    containers = pod_spec(deployment)["containers"]
    if name is None:
        assert len(containers) == 1
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def duration_seconds(text: str) -> float:
    """"5s", "1m30s", "250ms" → seconds (the subset of the binaries' syntax the chart writes)."""
    import re
    total = 0.0
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


def write_json(path: pathlib.Path, data) -> pathlib.Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def tempdir() -> pathlib.Path:
    return pathlib.Path(tempfile.mkdtemp(prefix="onedomain-deploy-"))
