"""A second, independent WebSocket client: the Beast-based load tool from bench/websocket
(ws_load) ping-pongs 64 B and 16 KiB binary and text messages through the data plane to a
plain echo backend (bench's ws_echo_server, which sends nothing but echoes), verifying every
echo byte for byte, then holds idle sockets and checks each one echoes afterwards."""

import os
import re
import resource
import subprocess

import pytest

import cp_support
import fleet_support
import support


def ws_load(*args, stdin=None):
    path = os.path.join(support.BUILD_DIR, "bench", "websocket", "ws_load")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, input=stdin)


def start_node(procs, tmp_path, workers):
    """The echo backend and a data plane in front of it; returns (the node, its port)."""
    echo = procs([os.path.join(support.BUILD_DIR, "bench", "websocket", "ws_echo_server"),
                  "--address", "127.0.0.1", "--port", "0"], name="ws_echo_server")
    ports = echo.wait_ports()  # ws_echo_server writes the bare port number
    echo_port = ports if isinstance(ports, int) else list(ports.values())[0]
    snapshot = cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{echo_port}",))
    config = support.write_file(str(tmp_path), "dp.yaml", f"""
admin: {{address: 127.0.0.1, port: 0}}
drain: {{delay: 0s, timeout: 10s}}
snapshot:{snapshot}""")
    dp = procs([support.binary("dataplane"), "--config", config, "--workers", str(workers)])
    return dp, fleet_support.wait_listener(dp)


def test_beast_client_through_the_data_plane(procs, tmp_path):
    dp, port = start_node(procs, tmp_path, workers=2)
    target = f"127.0.0.1:{port}"
    for extra in ([], ["--text"]):
        for size in ("64", "16384"):
            r = ws_load("pingpong", "--target", target, "--conns", "10", "--size", size,
                        "--duration", "1", "--warmup", "0", "--path", "/ws/chat/1",
                        "--origin", "http://127.0.0.1", "--cookie", "sess_beast=1", *extra)
            assert r.returncode == 0, r.stdout + r.stderr
            m = re.search(r"round_trips=(\d+).*errors=(\d+)", r.stdout)
            assert m and int(m.group(1)) > 0 and int(m.group(2)) == 0, r.stdout

    r = ws_load("idle", "--target", target, "--conns", "50", "--path", "/ws/chat/2",
                "--origin", "http://127.0.0.1", "--go", "stdin", "--hold", "20", stdin="go\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "READY 50" in r.stdout and "ECHO ok=50 failed=0" in r.stdout, r.stdout

    # A foreign Origin is refused before any upstream connection.
    r = ws_load("pingpong", "--target", target, "--conns", "1", "--duration", "1",
                "--warmup", "0", "--path", "/ws/chat/3", "--origin", "http://evil.example")
    assert r.returncode == 3 and "declined http_status=403" in r.stdout + r.stderr, \
        r.stdout + r.stderr


def open_descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads_asleep(pid):
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            states.append(f.read().rsplit(")", 1)[1].split()[0])
    return all(s in ("S", "D") for s in states)


def test_a_thousand_websockets_closing_at_once_leave_no_socket_behind(procs, tmp_path):
    """1,000 WebSockets ping-pong through one worker and then all close at once (each client
    sends Close, the echo backend answers and hangs up). Every close completes, the node
    closes every socket it held for them and its loop goes back to sleep. On the io_uring
    loop, a socket's poll used to be cancelled with POLL_REMOVE, which answered -EALREADY on
    every retry once the peer had closed: the worker spun at 100 % CPU, hundreds of closes
    never completed and their sockets stayed in CLOSE-WAIT for good."""
    count = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * count + 256  # the node holds a client and an upstream socket per WebSocket
    if hard < need:
        pytest.skip(f"needs {need} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    dp, port = start_node(procs, tmp_path, workers=1)
    idle = open_descriptors(dp.pid)
    r = ws_load("pingpong", "--target", f"127.0.0.1:{port}", "--conns", str(count),
                "--size", "64", "--duration", "1", "--warmup", "0", "--path", "/ws/chat/9",
                "--origin", "http://127.0.0.1", "--cookie", "sess_beast=1")
    # timed_out: connections whose close had not completed 5 s after the run.
    assert r.returncode == 0 and " timed_out=0 " in r.stdout, r.stdout + r.stderr
    support.wait_for(lambda: open_descriptors(dp.pid) <= idle, timeout=15,
                     what=f"the node back to {idle} descriptors")
    support.wait_for(lambda: threads_asleep(dp.pid), timeout=15,
                     what="every thread of the node asleep")
