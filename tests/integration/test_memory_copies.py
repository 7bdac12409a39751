"""On an AMD CPU with ERMS the node runs itself again at startup with glibc's rep movsb
threshold raised (dataplane/server/copy_tuning.h), keeps an operator's own value, and says
which copies it runs with in its startup log. ONEDOMAIN_COPY_TUNING=off keeps glibc's
defaults; elsewhere nothing changes."""

import re
import tempfile

import pytest

import dp_support as dp
import support

TUNABLE = "glibc.cpu.x86_rep_movsb_threshold"
OURS = f"{TUNABLE}=1073741824"


def amd_with_erms():
    with open("/proc/cpuinfo") as f:
        info = f.read()
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", info, re.M)
    flags = re.search(r"^flags\s*:(.*)$", info, re.M)
    return (vendor is not None and vendor.group(1) == "AuthenticAMD" and flags is not None
            and "erms" in flags.group(1).split())


@pytest.fixture
def start(procs, monkeypatch):
    """Starts a node with GLIBC_TUNABLES set to `tunables`, or unset (None)."""
    monkeypatch.delenv("ONEDOMAIN_COPY_TUNING", raising=False)

    def run(tunables):
        monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
        if tunables is not None:
            monkeypatch.setenv("GLIBC_TUNABLES", tunables)
        doc = dp.bootstrap([dp.cluster("none", [dp.free_port()])],
                           [dp.route("all", "/", "none")])
        path = dp.write_bootstrap(tempfile.mkdtemp(prefix="dp-copies-"), doc)
        p = procs([support.binary("dataplane"), "--config", path], name="dataplane")
        p.wait_ports()
        support.wait_for(lambda: "memory copies:" in p.output(), what="the startup log line")
        return p
    return run


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return [item.decode(errors="replace") for item in f.read().split(b"\0")]


def environ_tunables(pid):
    """GLIBC_TUNABLES as the process's environment block holds it. glibc cuts the block's copy
    after the first tunable it parses, so only the first one shows."""
    for item in environ(pid):
        if item.startswith("GLIBC_TUNABLES="):
            return item[len("GLIBC_TUNABLES="):]
    return None


def copies_line(p):
    return re.search(r"memory copies: [^\n;]*", p.output()).group(0)


def test_on_amd_the_node_restarts_itself_once_with_rep_movsb_off(start):
    if not amd_with_erms():
        pytest.skip("not an AMD CPU with ERMS: the node leaves glibc's copies alone")
    p = start(None)
    # Same process (execve keeps the pid), now with the tunable in its environment.
    assert environ_tunables(p.pid) == OURS
    assert copies_line(p) == f"memory copies: GLIBC_TUNABLES {OURS}"
    # Once: the re-executed process knows (ONEDOMAIN_COPY_TUNING=applied) and logged once.
    assert "ONEDOMAIN_COPY_TUNING=applied" in environ(p.pid)
    assert p.output().count("memory copies:") == 1
    # Still named after its binary (exec of /proc/self/exe would have named it "exe").
    with open(f"/proc/{p.pid}/comm") as f:
        assert f.read().strip() == "dataplane"


def test_the_tunable_joins_the_operators_other_tunables(start):
    if not amd_with_erms():
        pytest.skip("not an AMD CPU with ERMS: the node leaves glibc's copies alone")
    p = start("glibc.malloc.check=0")
    assert environ_tunables(p.pid) == "glibc.malloc.check=0"  # theirs first (see above)
    assert copies_line(p) == f"memory copies: GLIBC_TUNABLES {OURS}"


def test_an_operators_own_threshold_wins(start):
    p = start(f"{TUNABLE}=8192")
    assert environ_tunables(p.pid) == f"{TUNABLE}=8192"
    assert copies_line(p) == f"memory copies: GLIBC_TUNABLES {TUNABLE}=8192"


def test_the_operator_can_switch_it_off(start, monkeypatch):
    monkeypatch.setenv("ONEDOMAIN_COPY_TUNING", "off")
    p = start(None)
    assert environ_tunables(p.pid) is None
    assert copies_line(p) == "memory copies: glibc's defaults (ONEDOMAIN_COPY_TUNING=off)"


def test_elsewhere_nothing_changes(start):
    if amd_with_erms():
        pytest.skip("an AMD CPU with ERMS: the node raises the threshold here")
    p = start(None)
    assert environ_tunables(p.pid) is None
    assert copies_line(p) == "memory copies: glibc's defaults"
