"""deploy/docker/Dockerfile, checked statically: Debian bookworm stages, the build runs CI's
install script and build commands, the runtime stages are slim, install only runtime libraries
that exist in this Debian release, run as a numeric non-root user with exec-form entrypoints
(no shell needed), carry OCI labels and no HEALTHCHECK. scripts/container-test.sh (ctest label
`container`) builds and runs the images for real."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from deploy_support import SOURCE_DIR

DOCKERFILE = SOURCE_DIR / "deploy" / "docker" / "Dockerfile"


def instructions():
    """[(stage, INSTRUCTION, args)] with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out, stage = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, args = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            stage = m.group(2) or m.group(1)
        out.append((stage, word, args.strip()))
    return out


def stages():
    return {s: a for s, w, a in instructions() if w == "FROM"}


def test_every_stage_is_debian_bookworm():
    names = set(stages())
    for stage, base in stages().items():
        image = base.split()[0]
        assert image in names or image in ("debian:bookworm", "debian:bookworm-slim"), (stage, base)
    assert stages()["build"].startswith("debian:bookworm ")
    assert stages()["runtime"].startswith("debian:bookworm-slim ")
    assert {"dataplane", "controlplane"} <= names


def test_build_stage_runs_ci_install_and_build():
    runs = " ".join(a for s, w, a in instructions() if s == "build" and w == "RUN")
    assert "scripts/install-deps.sh" in runs
    assert "cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DONEDOMAIN_TESTS=OFF" in runs
    assert "ninja -C build dataplane controlplane" in runs
    copies = [a for s, w, a in instructions() if s == "build" and w == "COPY"]
    assert copies[0] == "scripts/install-deps.sh scripts/install-deps.sh", copies


TARGETS = {"dataplane": "dataplane", "controlplane": "controlplane", "demo": "demo_backend"}


@pytest.mark.parametrize("target", TARGETS)
def test_runtime_targets_run_as_numeric_non_root(target):
    users = [a for s, w, a in instructions() if s in ("runtime", target) and w == "USER"]
    assert users, f"{target}: no USER"
    # The last USER of the target stage is what runs.
    last = [a for s, w, a in instructions() if s == target and w == "USER"] or users
    uid, _, gid = last[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, last[-1]
    assert not gid or (gid.isdigit() and int(gid) > 0), last[-1]


@pytest.mark.parametrize("target", TARGETS)
def test_entrypoints_need_no_shell(target):
    for word in ("ENTRYPOINT", "CMD"):
        args = [a for s, w, a in instructions() if s == target and w == word]
        assert args, f"{target}: no {word}"
        parsed = json.loads(args[-1])  # exec form: a JSON array, no /bin/sh -c
        assert isinstance(parsed, list)
    binary = TARGETS[target]
    entry = json.loads([a for s, w, a in instructions() if s == target and w == "ENTRYPOINT"][-1])
    assert entry == [f"/usr/local/bin/{binary}"]
    copies = [a for s, w, a in instructions() if s == target and w == "COPY"]
    assert any(a.endswith(f"/usr/local/bin/{binary}") and "--from=" in a for a in copies)
    assert stages()[target].split()[0] == "runtime", stages()[target]


@pytest.mark.parametrize("target", TARGETS)
def test_oci_labels(target):
    labels = " ".join(a for s, w, a in instructions() if s == target and w == "LABEL")
    for key in ("source", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels, (target, key)


def test_no_healthcheck():
    # Kubernetes probes /healthz and /readyz; a HEALTHCHECK would need a tool in the image.
    assert not [a for s, w, a in instructions() if w == "HEALTHCHECK"]


def test_runtime_stage_installs_only_runtime_packages():
    runs = " ".join(a for s, w, a in instructions() if s == "runtime" and w == "RUN")
    install = runs.split("apt-get install", 1)[1].split("&&", 1)[0].split()
    packages = [p for p in install if not p.startswith("-")]
    assert "--no-install-recommends" in install
    assert "rm -rf /var/lib/apt/lists/*" in runs
    for p in packages:
        assert not p.endswith("-dev"), p
        assert p not in ("build-essential", "cmake", "ninja-build", "gcc", "g++"), p
    for needed in ("libgrpc++1.51", "libprotobuf32", "libyaml-cpp0.7", "libssl3",
                   "libprometheus-cpp-core1.0"):
        assert needed in packages, needed
    # The binaries load no library of prometheus-cpp-pull (civetweb); container-test checks it.
    assert "libprometheus-cpp-pull1.0" not in packages
    # Real package names of this Debian release: the build machine has the libraries, pulled
    # in by the -dev packages scripts/install-deps.sh installs; others must be known to apt.
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages],
                          capture_output=True, text=True)
    installed = {l.split()[0] for l in proc.stdout.splitlines() if l.endswith("install ok installed")}
    unknown = [p for p in packages if p not in installed and subprocess.run(
        ["apt-cache", "show", p], capture_output=True).returncode != 0]
    assert not unknown, f"not Debian 12 packages: {unknown}"
    for lib in ("libgrpc++1.51", "libprotobuf32", "libyaml-cpp0.7", "libprometheus-cpp-core1.0"):
        assert lib in installed, f"{lib}: the -dev package the build uses should have pulled it in"
