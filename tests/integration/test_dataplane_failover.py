"""Two endpoints under load; one is killed: traffic moves to the other with a bounded number
of errors (only requests in flight on the dead one), and with both down every answer is a
502 (below the panic threshold every endpoint is tried again)."""

import threading
import time

import pytest

import dp_support as dp


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_one_endpoint_mid_load_then_both(procs, workers):
    a, port_a = dp.start_demo_backend(procs, "A")
    b, port_b = dp.start_demo_backend(procs, "B")
    doc = dp.bootstrap(
        [dp.cluster("agents", [port_a, port_b],
                    outlier_detection={"consecutive_failures": 3, "ejection_time": "30s"})],
        [dp.route("api", "/api/v1/", "agents")])
    plane = dp.start_dataplane(procs, doc, workers=workers)

    stop = threading.Event()
    lock = threading.Lock()
    outcomes = []  # (time, status or exception name, instance)

    def load():
        c = None
        while not stop.is_set():
            try:
                if c is None:
                    c = dp.Conn(plane.port, timeout=5)
                r = c.request("GET", "/api/v1/echo")
                item = (time.monotonic(), r.status, r.header("X-Demo-Instance"))
                if r.header("Connection") == "close":
                    c.close()
                    c = None
            except (OSError, EOFError) as e:
                item = (time.monotonic(), type(e).__name__, None)
                if c is not None:
                    c.close()
                c = None
            with lock:
                outcomes.append(item)
        if c is not None:
            c.close()

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    dp.wait_until(lambda: sum(1 for o in list(outcomes) if o[2] == "B") >= 50, 20,
                  "traffic on both endpoints")
    killed_at = time.monotonic()
    b.proc.kill()  # a crash, not a graceful stop
    b.proc.wait(timeout=5)
    dp.wait_until(lambda: sum(1 for o in list(outcomes) if o[0] > killed_at + 1.0) >= 300, 30,
                  "load after the kill")
    stop.set()
    for t in threads:
        t.join(timeout=10)

    after = [o for o in outcomes if o[0] > killed_at]
    errors = [o for o in after if o[1] != 200]
    print(f"workers={workers}: {len(after)} requests after the kill, {len(errors)} errors")
    assert len(after) >= 300
    assert len(errors) <= 8, errors  # at most the requests in flight on B when it died
    settled = [o for o in after if o[0] > killed_at + 1.0]
    assert all(o[1] == 200 and o[2] == "A" for o in settled), settled[:5]
    assert plane.counter("onedomain_upstream_ejections_total", cluster="agents") >= 1

    # Both down: with no endpoint left healthy the panic threshold (default 50 %) sends
    # requests to every endpoint again, so each gets a precise 502 (connection refused), never
    # a hang, and an endpoint that comes back serves at once.
    a.proc.kill()
    a.proc.wait(timeout=5)
    statuses = [dp.request(plane.port, "GET", "/api/v1/echo").status for _ in range(10)]
    assert set(statuses) == {502}, statuses
