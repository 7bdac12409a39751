"""The chart and the binaries cannot drift apart: the config files the chart renders are
accepted by the real binaries' `--check-config`, and the container image installs every shared
library the binaries link.

The binaries come from ONEDOMAIN_BUILD_DIR (ctest sets it to the build tree). A binary that is
not built makes these tests FAIL, with the command that builds it: they never skip.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

import pytest
import yaml

from deploy_support import (CASES, SOURCE_DIR, config_file, render_case, run, tempdir)

BUILD_DIR = pathlib.Path(os.environ.get("ONEDOMAIN_BUILD_DIR", SOURCE_DIR / "build"))
BINARIES = {
    "dataplane": BUILD_DIR / "dataplane" / "dataplane",
    "controlplane": BUILD_DIR / "controlplane" / "controlplane",
}
DOCKERFILE = SOURCE_DIR / "deploy" / "docker" / "Dockerfile"

# Absolute paths the rendered configs point into (volumes in the pods). The test recreates
# them under a temporary root, with real files where the config names one.
POD_PATHS = ("/etc/onedomain/", "/var/lib/onedomain", "/var/cache/onedomain")


def binary(name: str) -> pathlib.Path:
    path = BINARIES[name]
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} binary not built: {path} does not exist. Build it with "
            f"`ninja -C {BUILD_DIR} dataplane controlplane` (ONEDOMAIN_BUILD_DIR={BUILD_DIR}); "
            f"this test needs the real binary to check the chart's {name}.yaml.")
    return path


def check_command(name: str, config_path: pathlib.Path) -> list[str]:
    if name == "controlplane":
        return [str(binary(name)), "serve", "--config", str(config_path), "--check-config"]
    return [str(binary(name)), "--config", str(config_path), "--check-config"]


def self_signed(directory: pathlib.Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=onedomain-test", "-keyout", str(directory / "tls.key"),
         "-out", str(directory / "tls.crt")])
    (directory / "ca.crt").write_bytes((directory / "tls.crt").read_bytes())


def materialise(text: str, root: pathlib.Path) -> str:
    """Points the config's pod paths at `root` and creates the files it names there (TLS pairs,
    tokens file), as the chart's volumes would in a pod."""
    for p in POD_PATHS:
        text = text.replace(p, f"{root}{p}")
    for match in set(re.findall(rf"{re.escape(str(root))}/[^\s\"']+", text)):
        path = pathlib.Path(match)
        if path.suffix in (".crt", ".key"):
            if not path.exists():
                self_signed(path.parent)
        elif path.name == "tokens":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("# NAME ROLE TOKEN\nci admin test-token-not-secret-000000\n")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
    return text


def check_env() -> dict[str, str]:
    env = dict(os.environ)
    # What the pod's Downward API and Secrets provide.
    env.update(POD_NAME="od-onedomain-dataplane-7d9f8b6c5-x2x4q", POD_NAMESPACE="onedomain",
               ONEDOMAIN_ADMIN_TOKEN="test-token-not-secret-000000")
    return env


@pytest.mark.parametrize("component", ["dataplane", "controlplane"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_config_passes_check_config(case, component):
    text = config_file(render_case(case), component)
    root = tempdir()
    path = root / f"{component}.yaml"
    path.write_text(materialise(text, root))
    proc = subprocess.run(check_command(component, path), capture_output=True, text=True,
                          env=check_env(), timeout=60)
    assert proc.returncode == 0, (
        f"{component} --check-config rejected the chart's {case} config "
        f"(exit {proc.returncode}):\n{proc.stdout}{proc.stderr}\n--- {path}:\n{path.read_text()}")


@pytest.mark.parametrize("component", ["dataplane", "controlplane"])
def test_check_config_rejects_a_broken_render(component):
    """--check-config really checks: the same file with one misspelt key is refused."""
    doc = yaml.safe_load(config_file(render_case("default"), component))
    key = "snapshot" if component == "dataplane" else "seed"
    doc[key]["routes"][0]["clustr"] = doc[key]["routes"][0].pop("cluster")
    root = tempdir()
    path = root / f"{component}.yaml"
    path.write_text(materialise(yaml.safe_dump(doc), root))
    proc = subprocess.run(check_command(component, path), capture_output=True, text=True,
                          env=check_env(), timeout=60)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "clustr" in proc.stderr + proc.stdout


# ---- the image's runtime packages cover what the binaries link ------------------------------------

def dockerfile_runtime_packages() -> set[str]:
    text = DOCKERFILE.read_text()
    stage = text.split("AS runtime", 1)[1].split("\nFROM ", 1)[0]
    install = stage.split("apt-get install", 1)[1].split("&&", 1)[0]
    return {w for w in install.replace("\\", " ").split() if not w.startswith("-")}


def dpkg_depends_closure(packages: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(packages)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", pkg],
                              capture_output=True, text=True)
        for alt in proc.stdout.split(","):
            for dep in alt.split("|"):
                name = dep.strip().split(" ")[0].split(":")[0]
                if name:
                    todo.append(name)
    return seen


# Present in every debian:bookworm-slim image (Priority: required).
BASE_IMAGE = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libzstd1", "liblzma5",
              "libcrypt1", "libselinux1", "libpcre2-8-0"}


@pytest.mark.parametrize("name", ["dataplane", "controlplane"])
def test_image_installs_every_linked_library(name):
    path = binary(name)
    ldd = run(["ldd", str(path)]).stdout
    libs = re.findall(r"=>\s+(/\S+)", ldd)
    assert libs, ldd
    available = dpkg_depends_closure(dockerfile_runtime_packages() | BASE_IMAGE)
    # One dpkg -S for all paths (as linked and as resolved: /lib is /usr/lib on merged-/usr).
    queries = sorted(set(libs) | {os.path.realpath(lib) for lib in libs})
    owners = subprocess.run(["dpkg", "-S", *queries], capture_output=True, text=True).stdout
    owner_of = {}
    for line in owners.splitlines():
        pkgs, _, file = line.partition(": ")
        for q in queries:
            if file == q:
                owner_of[q] = pkgs.split(",")[0].split(":")[0].strip()
    missing = {}
    for lib in libs:
        pkg = owner_of.get(lib) or owner_of.get(os.path.realpath(lib))
        assert pkg, f"{lib} belongs to no Debian package"
        if pkg not in available:
            missing[lib] = pkg
    assert not missing, (
        f"deploy/docker/Dockerfile's runtime stage lacks packages for {name}: {missing}")
