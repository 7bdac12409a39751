"""Real Python backends with their default connection handling behind the node, under
keep-alive churn: gunicorn's default sync worker (answers every request with Connection:
close), gunicorn's gthread worker (keep-alive, 1 s here; the default is 2 s) and uvicorn
(--timeout-keep-alive 1; the default is 5 s). Requests come in bursts separated by pauses
that outlast the backend's keep-alive, so every pooled upstream connection is closed by the
backend while idle before the next burst reuses the pool. GETs and POSTs (Content-Length and
chunked bodies) must all succeed: 200 and the body echoed. A backend closing an idle
keep-alive connection is normal; the node has to notice before it reuses one.

The apps are tests/integration/backends/echo_apps.py. The pause between bursts waits until
the backend holds no established connection any more (read from /proc/net/tcp), not a
guessed time."""

import concurrent.futures
import json
import os
import random
import re
import time

import pytest

import dp_support as dp
import support

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backends")
ROUNDS = 5
PER_ROUND = 20
CLIENTS = 4


def start_backend(procs, kind):
    if kind == "uvicorn":
        args = ["/usr/bin/python3", "-m", "uvicorn", "--app-dir", APPS, "--host", "127.0.0.1",
                "--port", "0", "--timeout-keep-alive", "1", "--no-access-log",
                # (its X-Forwarded-For handling would replace the client port with 0)
                "--no-proxy-headers",
                "echo_apps:asgi_app"]
        pattern = r"Uvicorn running on http://127\.0\.0\.1:(\d+)"
    else:
        args = ["/usr/bin/gunicorn", "--chdir", APPS, "-b", "127.0.0.1:0", "--workers", "2"]
        if kind == "gunicorn-gthread":
            args += ["--worker-class", "gthread", "--threads", "8", "--keep-alive", "1"]
        args.append("echo_apps:wsgi_app")
        pattern = r"Listening at: http://127\.0\.0\.1:(\d+)"
    p = procs(args, port_file=False, name=kind)

    def port():
        if p.proc.poll() is not None:
            raise RuntimeError(f"{kind} exited:\n{p.output()}")
        m = re.search(pattern, p.output())
        return int(m.group(1)) if m else None
    backend_port = support.wait_for(port, 20, what=f"{kind} listening")
    # Ready when it answers (gunicorn's workers boot after the master listens).
    support.wait_for(lambda: _answers(backend_port), 20, what=f"{kind} answering")
    return backend_port


def _answers(port):
    try:
        return dp.request(port, "GET", "/ready").status == 200
    except OSError:
        return False


def established_to(port):
    """Established TCP connections whose local port is `port` (the backend's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            continue
    return count


def one_request(port, i, rng):
    """GET or POST (Content-Length or chunked) on a fresh client connection; returns
    (ok, description, upstream client port)."""
    c = dp.Conn(port, timeout=15)
    try:
        kind = i % 3
        if kind == 0:
            r = c.request("GET", f"/echo?i={i}")
            ok = r.status == 200 and r.json()["query"] == f"i={i}"
        elif kind == 1:
            body = rng.randbytes(rng.choice([0, 1, 100, 4000, 70000]))
            r = c.request("POST", "/echo", body=body)
            ok = r.status == 200 and r.body == body
        else:
            body = rng.randbytes(rng.randint(1, 20000))
            c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
            r = c.response()
            ok = r.status == 200 and r.body == body
        return ok, f"#{i} kind {kind}: {r.status} {r.body[:120]!r}", r.header("X-Client-Port")
    except (OSError, EOFError) as e:
        return False, f"#{i}: {type(e).__name__} {e}", None
    finally:
        c.close()


@pytest.mark.parametrize("kind", ["gunicorn-sync", "gunicorn-gthread", "uvicorn"])
def test_keep_alive_churn(procs, kind):
    backend = start_backend(procs, kind)
    node = dp.start_dataplane(procs, dp.bootstrap([dp.cluster("app", [backend])],
                                                  [dp.route("all", "/", "app")]))
    rng = random.Random(15)
    failures, ports_per_round = [], []
    deadline = time.monotonic() + 90
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        for rnd in range(ROUNDS):
            assert time.monotonic() < deadline, "out of time"
            seeds = [rng.randrange(1 << 30) for _ in range(PER_ROUND)]
            results = list(pool.map(
                lambda a: one_request(node.port, a[0], random.Random(a[1])),
                [(rnd * PER_ROUND + k, seeds[k]) for k in range(PER_ROUND)]))
            failures += [d for ok, d, _ in results if not ok]
            ports_per_round.append({p for _, _, p in results if p})
            # The pause: until the backend has closed every idle keep-alive connection.
            support.wait_for(lambda: established_to(backend) == 0, 15,
                             what=f"{kind} closing its idle connections")
    assert not failures, f"{len(failures)} of {ROUNDS * PER_ROUND} failed: {failures[:10]}"
    # The churn happened: no upstream connection outlived a pause.
    for a, b in zip(ports_per_round, ports_per_round[1:]):
        assert not (a & b), f"an upstream connection survived a pause: {a & b}"
    codes = node.metrics()
    assert dp.metric_value(codes, "onedomain_http_requests_total", route="all",
                           code="200") == ROUNDS * PER_ROUND
