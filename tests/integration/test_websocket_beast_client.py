"""A second, independent WebSocket client: the Beast-based load tool from bench/websocket
(ws_load) ping-pongs 64 B and 16 KiB binary and text messages through the data plane to a
plain echo backend (bench's ws_echo_server, which sends nothing but echoes), verifying every
echo byte for byte, then holds idle sockets and checks each one echoes afterwards."""

import os
import re
import subprocess

import cp_support
import fleet_support
import support


def ws_load(*args, stdin=None):
    path = os.path.join(support.BUILD_DIR, "bench", "websocket", "ws_load")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, input=stdin)


def test_beast_client_through_the_data_plane(procs, tmp_path):
    echo = procs([os.path.join(support.BUILD_DIR, "bench", "websocket", "ws_echo_server"),
                  "--address", "127.0.0.1", "--port", "0"], name="ws_echo_server")
    ports = echo.wait_ports()  # ws_echo_server writes the bare port number
    echo_port = ports if isinstance(ports, int) else list(ports.values())[0]
    snapshot = cp_support.seed_yaml(agents_endpoints=(f"127.0.0.1:{echo_port}",))
    config = support.write_file(str(tmp_path), "dp.yaml", f"""
admin: {{address: 127.0.0.1, port: 0}}
drain: {{delay: 0s, timeout: 10s}}
snapshot:{snapshot}""")
    dp = procs([support.binary("dataplane"), "--config", config, "--workers", "2"])
    port = fleet_support.wait_listener(dp)
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
