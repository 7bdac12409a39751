"""The node deepens glibc's per-thread allocator cache for itself (it re-executes once with
glibc.malloc.tcache_count in GLIBC_TUNABLES, same PID), says so in its startup log, and
leaves the allocator alone when the user chose: ONEDOMAIN_MALLOC_TUNING=off, a
GLIBC_TUNABLES that already sets tcache_count (other tunables are kept), or LD_PRELOAD."""

import tempfile

import pytest

import dp_support as dp
import support

UNSET = {"GLIBC_TUNABLES": "", "ONEDOMAIN_MALLOC_TUNING": "", "LD_PRELOAD": ""}


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)


def start(procs, env):
    doc = dp.bootstrap([dp.cluster("none", [dp.free_port()])], [dp.route("all", "/", "none")])
    path = dp.write_bootstrap(tempfile.mkdtemp(prefix="dp-malloc-"), doc)
    p = procs([support.binary("dataplane"), "--config", path], env={**UNSET, **env},
              name="dataplane")
    p.wait_ports()
    return p


def test_the_node_sets_the_tcache_depth_for_itself(procs):
    p = start(procs, {})
    # The process we started is the re-executed one (same PID), with the tunable.
    env = environ(p.pid)
    assert env.get(b"GLIBC_TUNABLES") == b"glibc.malloc.tcache_count=1024"
    assert env.get(b"ONEDOMAIN_MALLOC_TUNING") == b"applied"  # never re-executed twice
    assert "malloc: glibc.malloc.tcache_count=1024" in p.output()


@pytest.mark.parametrize("env, log", [
    # Other tunables are kept, tcache_count added (glibc may rewrite the string it shows in
    # /proc/PID/environ, so the log is what is checked).
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"},
     "malloc: glibc.malloc.tcache_count=1024"),
    ({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=16"}, "malloc: glibc.malloc.tcache_count=16"),
    ({"ONEDOMAIN_MALLOC_TUNING": "off"}, "malloc: default tcache (ONEDOMAIN_MALLOC_TUNING=off)"),
    ({"LD_PRELOAD": "libc.so.6"}, "malloc: untouched (LD_PRELOAD is set)"),
])
def test_the_users_choice_wins(procs, env, log):
    p = start(procs, env)
    assert log in p.output()
    if "ONEDOMAIN_MALLOC_TUNING" in env or "LD_PRELOAD" in env:
        assert not environ(p.pid).get(b"GLIBC_TUNABLES")  # not re-executed
