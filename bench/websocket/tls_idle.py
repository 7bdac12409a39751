#!/usr/bin/python3
"""Idle wss:// tunnels through one data-plane worker: the process's VmRSS growth per idle
proxied connection with a TLS client (the plaintext figure is `run.sh idle`). Starts the
echo backend and a data plane with a TLS listener (a certificate made here with openssl) on
127.0.0.1 ephemeral ports, opens N WebSockets with python3-websockets, measures, then checks
that every one still echoes. Stops only the processes it started.

Usage: bench/websocket/tls_idle.py [N]     (default 2000; env BUILD=build)
"""

import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time

import websockets

ORIGIN = "https://bench.onedomain.test"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
BUILD = os.environ.get("BUILD", "build")


def wait_file(path, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return open(path).read()
        if proc.poll() is not None:
            sys.exit(f"tls_idle: {proc.args[0]} exited with {proc.returncode}")
        time.sleep(0.05)
    sys.exit(f"tls_idle: {path} did not appear")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_all(port, ctx):
    socks = []
    for i in range(N):  # bounded: N connections, each with the client's open timeout
        ws = await websockets.connect(f"wss://localhost:{port}/ws/{i}", ssl=ctx, origin=ORIGIN,
                                      open_timeout=10, max_size=None, ping_interval=None,
                                      compression=None)
        socks.append(ws)
    return socks


async def echo_all(socks):
    ok = 0
    for i, ws in enumerate(socks):
        msg = f"echo {i}"
        await ws.send(msg)
        if await asyncio.wait_for(ws.recv(), 10) == msg:
            ok += 1
    await asyncio.gather(*(ws.close() for ws in socks))
    return ok


def main():
    work = tempfile.mkdtemp(prefix="ws-tls-idle-")
    procs = []
    try:
        cert, key = os.path.join(work, "s.crt"), os.path.join(work, "s.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"],
                       check=True, capture_output=True, timeout=30)
        echo = subprocess.Popen([f"{BUILD}/bench/websocket/ws_echo_server", "--threads", "1",
                                 "--port-file", f"{work}/echo.port"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(echo)
        backend_port = int(wait_file(f"{work}/echo.port", echo))
        with open(f"{work}/dp.yaml", "w") as f:
            json.dump({"admin": {"address": "127.0.0.1", "port": 0}, "workers": 1,
                       "logging": {"level": "warn"},
                       "snapshot": {
                           "site": {"origins": [ORIGIN]},
                           "listeners": [{"name": "main", "address": "127.0.0.1", "port": 0,
                                          "tls": {"cert_file": cert, "key_file": key}}],
                           "clusters": [{"name": "echo",
                                         "endpoints": [f"127.0.0.1:{backend_port}"]}],
                           "routes": [{"name": "ws", "match": {"prefix": "/"},
                                       "cluster": "echo", "websocket": True}]}}, f)
        dp = subprocess.Popen([f"{BUILD}/dataplane/dataplane", "--config", f"{work}/dp.yaml",
                               "--port-file", f"{work}/dp.ports"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(dp)
        port = json.loads(wait_file(f"{work}/dp.ports", dp))["listener.main"]
        ctx = ssl.create_default_context(cafile=cert)

        async def run():
            socks = await open_all(port, ctx)
            await asyncio.sleep(2)
            after = rss_kib(dp.pid)
            return after, await echo_all(socks)

        time.sleep(0.5)
        before = rss_kib(dp.pid)
        after, ok = asyncio.run(run())
        per = (after - before) * 1024 / N
        print(f"wss idle: {N} connections through the data plane (1 worker, TLS 1.3 client "
              f"side, plain upstream)")
        print(f"VmRSS before {before / 1024:.1f} MiB, after {after / 1024:.1f} MiB: "
              f"{per:.0f} bytes = {per / 1024:.2f} KiB per idle proxied connection; "
              f"echo after idle ok={ok}/{N}")
        return 0 if ok == N else 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
