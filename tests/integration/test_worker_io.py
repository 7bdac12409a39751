"""The workers' event-loop backend (worker_io): auto picks io_uring where the kernel allows it
and falls back to epoll where a seccomp profile refuses io_uring_setup (as Docker's and
containerd's defaults do), saying so in the log and in onedomain_worker_io_backend; io_uring
asked for explicitly and refused stops the node with a clear message. The rest of the suite
runs under both backends (ctest labels io_uring and epoll)."""

import ctypes
import os
import struct
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


def slice_of(tid):
    """A thread's scheduler slice in ns (sched_getattr's sched_runtime; Linux 6.12+ gives
    every SCHED_OTHER thread one, older kernels report 0), or None once it has ended. 0: the
    calling thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint8 * 56)()
    if libc.syscall(315, tid, attr, 56, 0) != 0:  # sched_getattr (x86_64)
        return None
    return struct.unpack_from("IIQiIQ", bytes(attr))[5]


def thread_slices(pid):
    """{thread name: the set of its threads' scheduler slices in ns}."""
    slices = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        ns = slice_of(int(tid))
        if ns is None:
            continue  # the thread has just ended
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            slices.setdefault(f.read().strip(), set()).add(ns)
    return slices


def kernel_slice():
    """The slice of this test's own thread, which asked for none: the kernel's default (0:
    no per-thread slices on this kernel)."""
    ns = slice_of(0)
    assert ns is not None
    return ns


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
    # Two workers: each loop yields the CPU before it sleeps (uring_poller.cc), in 500us
    # scheduler slices where the kernel lets a thread choose (worker_slice).
    slice_text = (", scheduler slice 500us" if kernel_slice() else
                  ", kernel scheduler slice (worker_slice 500us needs Linux 6.12+)")
    assert (f"worker event loop: io_uring, {reads}, yielding the CPU before it sleeps "
            f"(2+ workers){slice_text} (worker_io auto)") in p.output()
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


@pytest.mark.skipif(not io_uring_allowed() or kernel_slice() == 0,
                    reason="needs io_uring and per-thread scheduler slices (Linux 6.12+)")
def test_yielding_workers_run_in_short_scheduler_slices(procs):
    # Two io_uring workers yield the CPU before they sleep; a yield puts a thread a whole
    # slice back in the run queue, so they ask for 500us instead of the kernel's slice.
    _, api = dp.start_demo_backend(procs)
    p = start(procs, config(api))
    p.wait_ports()
    support.wait_for(lambda: thread_slices(p.pid).get("worker-0") == {500000} and
                     thread_slices(p.pid).get("worker-1") == {500000},
                     what=f"both workers in 500us slices: {thread_slices(p.pid)}")
    # The other threads (control, admin, gRPC) keep the kernel's.
    assert thread_slices(p.pid)["dataplane"] == {kernel_slice()}
    assert ", scheduler slice 500us (worker_io auto)" in p.output()
    assert dp.request(p.ports["listener.main"], "GET", "/api/v1/echo").status == 200


@pytest.mark.skipif(kernel_slice() == 0, reason="no per-thread scheduler slices before 6.12")
def test_worker_slice_in_the_file_is_every_workers_and_0s_the_kernels(procs):
    _, api = dp.start_demo_backend(procs)
    doc = config(api)
    doc["worker_slice"] = "2ms"  # on epoll too, which does not yield
    p = start(procs, doc, args=("--io", "epoll"))
    p.wait_ports()
    support.wait_for(lambda: thread_slices(p.pid).get("worker-0") == {2000000} and
                     thread_slices(p.pid).get("worker-1") == {2000000},
                     what=f"both workers in 2ms slices: {thread_slices(p.pid)}")
    assert "worker event loop: epoll, scheduler slice 2000us (worker_io epoll)" in p.output()
    p.stop()

    doc["worker_slice"] = "0s"
    p = start(procs, doc)
    p.wait_ports()
    assert dp.request(p.ports["listener.main"], "GET", "/api/v1/echo").status == 200
    slices = thread_slices(p.pid)
    assert slices["worker-0"] == slices["worker-1"] == {kernel_slice()}, slices
    assert "scheduler slice" not in p.output()


def test_one_worker_keeps_the_kernels_slice(procs):
    # One worker does not yield before it sleeps, and lost throughput with a short slice.
    _, api = dp.start_demo_backend(procs)
    path = dp.write_bootstrap(tempfile.mkdtemp(prefix="dp-io-"), config(api))
    p = procs([support.binary("dataplane"), "--config", path, "--workers", "1"],
              env=NO_OVERRIDE, name="dataplane")
    p.wait_ports()
    assert dp.request(p.ports["listener.main"], "GET", "/api/v1/echo").status == 200
    assert thread_slices(p.pid)["worker-0"] == {kernel_slice()}
    assert "scheduler slice" not in p.output()


def test_a_worker_slice_linux_would_clamp_names_the_key(procs):
    doc = config(1)
    doc["worker_slice"] = "50us"
    p = start(procs, doc)
    assert p.wait_exit(timeout=15) == 1
    assert "worker_slice: must be 0s (the kernel's slice) or 100us to 100ms, got 50us" \
        in p.output()
