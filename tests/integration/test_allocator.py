"""The node runs on tcmalloc (the build links gperftools' tcmalloc_minimal; see
ONEDOMAIN_ALLOCATOR in the top-level CMakeLists.txt) and says which malloc it runs on in its
startup log."""

import os
import re
import tempfile

import pytest

import dp_support as dp
import support


def build_allocator():
    """ONEDOMAIN_ALLOCATOR and the sanitizer switches of the build under test."""
    with open(os.path.join(support.BUILD_DIR, "CMakeCache.txt")) as f:
        cache = dict(re.findall(r"^(ONEDOMAIN_\w+):\w+=(.*)$", f.read(), re.M))
    if cache.get("ONEDOMAIN_SANITIZE") == "ON" or cache.get("ONEDOMAIN_FUZZ") == "ON":
        return "sanitizer"
    return cache.get("ONEDOMAIN_ALLOCATOR", "tcmalloc")


def start(procs):
    doc = dp.bootstrap([dp.cluster("none", [dp.free_port()])], [dp.route("all", "/", "none")])
    path = dp.write_bootstrap(tempfile.mkdtemp(prefix="dp-malloc-"), doc)
    p = procs([support.binary("dataplane"), "--config", path], name="dataplane")
    p.wait_ports()
    return p


def mapped_libraries(pid):
    with open(f"/proc/{pid}/maps") as f:
        return {os.path.basename(line.split()[-1]) for line in f if "/" in line}


def test_the_node_runs_on_tcmalloc(procs):
    if build_allocator() != "tcmalloc":
        pytest.skip(f"this build chose the {build_allocator()} allocator")
    p = start(procs)
    assert any(lib.startswith("libtcmalloc_minimal.so") for lib in mapped_libraries(p.pid))
    assert re.search(r"malloc: tcmalloc \(gperftools \d+\.\d+", p.output())
