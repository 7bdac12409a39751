"""Bodies far larger than any buffer stream through with bounded memory: 128 MiB up and
128 MiB down (Content-Length and chunked), while the proxy's resident set grows by less than
20 MiB (VmHWM, the peak, against VmRSS before)."""

import hashlib

import pytest

import dp_support as dp

SIZE = 128 * 1024 * 1024
BLOCK = bytes(range(256)) * 4096  # 1 MiB
RSS_BUDGET_KIB = 20 * 1024


@pytest.fixture
def plane(procs):
    _, api = dp.start_demo_backend(procs)
    doc = dp.bootstrap([dp.cluster("agents", [api])], [dp.route("api", "/api/v1/", "agents")])
    plane = dp.start_dataplane(procs, doc)
    # Warm up: first connections, pools, TLS-free code paths touched once.
    for _ in range(3):
        assert dp.request(plane.port, "POST", "/api/v1/upload", body=b"x" * 100000).status == 200
    return plane


def upload(plane, chunked):
    digest = hashlib.sha256()
    c = dp.Conn(plane.port, timeout=60)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % SIZE
    c.send(b"POST /api/v1/upload HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n\r\n")
    for _ in range(SIZE // len(BLOCK)):
        c.send(b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK) if chunked else BLOCK)
        digest.update(BLOCK)
    if chunked:
        c.send(b"0\r\n\r\n")
    r = c.response()
    c.close()
    assert r.status == 200, r.body
    echo = r.json()
    assert echo["body_bytes"] == SIZE
    assert echo["body_sha256"] == digest.hexdigest()


def download(plane, chunked):
    c = dp.Conn(plane.port, timeout=60)
    c.send(b"GET /api/v1/bytes?n=%d%s HTTP/1.1\r\nHost: t\r\n\r\n"
           % (SIZE, b"&chunked=1" if chunked else b""))
    status, _, headers, _ = c.read_head()
    assert status == 200
    received = 0
    if chunked:
        assert ("Transfer-Encoding", "chunked") in headers
        counted = [0]

        def sink(piece):
            counted[0] += len(piece)
        c.read_chunked(sink)
        received = counted[0]
    else:
        length = int(dict(headers)["Content-Length"])
        assert length == SIZE
        received = c.skip(length)
    c.close()
    assert received == SIZE


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_bodies_stream_with_bounded_memory(plane, chunked):
    before = plane.rss_kib("VmRSS")
    upload(plane, chunked)
    download(plane, chunked)
    peak = plane.rss_kib("VmHWM")
    growth = peak - before
    print(f"RSS before {before} KiB, peak {peak} KiB, growth {growth} KiB")
    assert growth < RSS_BUDGET_KIB, f"RSS grew by {growth} KiB"
