"""The workers' event-loop backend (worker_io): auto picks io_uring where the kernel allows it
and falls back to epoll where a seccomp profile refuses io_uring_setup (as Docker's and
containerd's defaults do), saying so in the log and in onedomain_worker_io_backend; io_uring
asked for explicitly and refused stops the node with a clear message. The rest of the suite
runs under both backends (ctest labels io_uring and epoll)."""

import ctypes
import os
import sys
import tempfile

import pytest

import dp_support as dp
import support

HERE = os.path.dirname(os.path.abspath(__file__))
NO_OVERRIDE = {"ONEDOMAIN_WORKER_IO": ""}  # the suite's epoll run sets it; these tests choose


def io_uring_allowed():
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = libc.syscall(425, 1, params)
    if fd >= 0:
        os.close(fd)
        return True
    return False


def config(api):
    return dp.bootstrap([dp.cluster("agents", [api])], [dp.route("api", "/api/v1/", "agents")])


def start(procs, doc, args=(), seccomp=False):
    path = dp.write_bootstrap(tempfile.mkdtemp(prefix="dp-io-"), doc)
    cmd = [support.binary("dataplane"), "--config", path, "--workers", "2", *args]
    if seccomp:
        cmd = [sys.executable, os.path.join(HERE, "seccomp_exec.py"), *cmd]
    return procs(cmd, env=NO_OVERRIDE, name="dataplane")


def backend_gauge(admin_port):
    samples = dp.parse_metrics(support.http_get(f"http://127.0.0.1:{admin_port}/metrics")[2]
                               .decode())
    return {b: dp.metric_value(samples, "onedomain_worker_io_backend", backend=b)
            for b in ("epoll", "io_uring")}


@pytest.mark.skipif(not io_uring_allowed(), reason="io_uring_setup is refused on this machine")
def test_auto_runs_io_uring_where_the_kernel_allows_it(procs):
    _, api = dp.start_demo_backend(procs)
    p = start(procs, config(api))
    ports = p.wait_ports()
    assert backend_gauge(ports["admin"]) == {"epoll": 0, "io_uring": 1}
    # Kernels from 5.19 on receive into a provided-buffer ring (and send and accept through
    # the ring).
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    reads = ("receiving into a provided-buffer ring, sending and accepting through the ring"
             if (major, minor) >= (5, 19)
             else "polling (no provided-buffer rings here)")
    # Two workers: each loop yields the CPU before it sleeps (uring_poller.cc).
    assert (f"worker event loop: io_uring, {reads}, yielding the CPU before it sleeps "
            "(2+ workers) (worker_io auto)") in p.output()
    for i in range(20):  # both workers serve (SO_REUSEPORT spreads the connections)
        assert dp.request(ports["listener.main"], "GET", f"/api/v1/echo?i={i}").status == 200


def test_auto_falls_back_to_epoll_when_seccomp_refuses_io_uring(procs):
    _, api = dp.start_demo_backend(procs)
    p = start(procs, config(api), seccomp=True)
    ports = p.wait_ports()
    assert backend_gauge(ports["admin"]) == {"epoll": 1, "io_uring": 0}
    out = p.output()
    assert "io_uring unavailable (io_uring_setup: Operation not permitted): workers use epoll" \
        in out, out
    assert "worker event loop: epoll (worker_io auto)" in out
    assert dp.request(ports["listener.main"], "GET", "/api/v1/echo").status == 200


def test_io_uring_asked_for_and_refused_stops_the_node(procs):
    _, api = dp.start_demo_backend(procs)
    doc = config(api)
    doc["worker_io"] = "io_uring"
    p = start(procs, doc, seccomp=True)
    assert p.wait_exit(timeout=15) == 1
    assert "worker_io is io_uring but the kernel refuses it (io_uring_setup: Operation not " \
        "permitted)" in p.output()


def test_the_flag_overrides_the_file(procs):
    _, api = dp.start_demo_backend(procs)
    doc = config(api)
    doc["worker_io"] = "io_uring"
    p = start(procs, doc, args=("--io", "epoll"))
    ports = p.wait_ports()
    assert backend_gauge(ports["admin"]) == {"epoll": 1, "io_uring": 0}
    assert dp.request(ports["listener.main"], "GET", "/api/v1/echo").status == 200


def test_a_bad_worker_io_names_the_key(procs):
    doc = config(1)
    doc["worker_io"] = "uring"
    p = start(procs, doc)
    assert p.wait_exit(timeout=15) == 1
    assert "worker_io: must be auto, epoll or io_uring, got 'uring'" in p.output()
