"""Differential parsing: every entry of parse_corpus (malformed or ambiguous requests and
responses) goes through the data plane and through python3-h11, a strict HTTP/1.1 parser,
and the two must agree wherever it matters for safety.

Requests (client → node → an in-process upstream that parses with h11 and records):
- h11 rejects a message → the client gets a 4xx for it (501 allowed for a transfer coding
  the node does not implement, RFC 9112 6.1), and the upstream never receives that message:
  nothing of it when the error is in the head; when the error is in the body (bad chunk
  framing, bad trailer) the head and a prefix of the body may have been streamed upstream
  already, but the upstream must never see the message complete.
- h11 accepts → the upstream receives exactly the same messages (method, body, and the target
  when it has no dot-segments, percent-escapes or absolute form the node may rewrite), and
  the client gets a 200 for each; or the node is stricter and answers a 4xx (allowed; the
  cases are listed below and printed).
- In no case may the upstream's h11 find a syntax error in what the node forwarded.

Responses (a raw upstream sends the corpus bytes and closes):
- h11 rejects → the client gets a 502, or, if the node had already sent the response head,
  a message cut short by a close. Never a complete non-502 response: the malformed bytes
  must not pass through as if they were fine.
- h11 accepts → the client gets the same status and body, or a 502 (node stricter; listed).
- What the client receives is itself valid HTTP/1.1 for h11.

Cases where h11 accepts and the node rejects (stricter, allowed) are listed in
STRICTER_REQUESTS / STRICTER_RESPONSES below, as observed on main at 6422211; the test prints
the current list (run with -s) but does not pin it. Besides, NODE_MUST_REFUSE names requests
h11 accepts that the node must refuse anyway, and the last test checks that prefix routes
see paths after dot-segment removal."""

import socket
import threading

import h11
import pytest

import dp_support as dp
import parse_corpus
import support

# h11 accepts, the node refuses (observed at 6422211; informative, not asserted). Requests:
# all 400. Most are RFC 9112 "MAY reject" cases the node takes the strict side of: obs-fold
# (9112 5.2), bare LF (9112 2.2), CL+TE (9112 6.1: MAY reject, must close), TE in HTTP/1.0
# (9112 6.1), control bytes in header values and chunk extensions, HTTP/1.2 and 2.0 on an
# HTTP/1.1 connection, request-targets in asterisk or authority form or without a leading
# slash on a GET, and a Host that is not a valid uri-host[:port] (RFC 9110 7.2).
STRICTER_REQUESTS = [
    "version-1.2", "version-2.0", "bare-lf-request-line", "target-asterisk-get",
    "target-no-leading-slash", "target-authority-form-get", "host-with-space-and-slash",
    "host-with-slash", "host-with-userinfo", "host-bad-port", "host-comma-list", "obs-fold",
    "obs-fold-tab", "obs-fold-host", "cl-obs-fold", "cl-and-te", "te-and-cl-smuggle",
    "te-obs-fold", "http10-with-te-chunked", "chunk-ext-nul", "chunk-ext-bare-cr",
    "chunk-ext-quoted-crlf-garbage", "trailer-obs-fold", "header-value-byte-01",
    "header-value-byte-08", "header-value-byte-1f", "header-value-byte-7f",
]
# Responses: all 502.
STRICTER_RESPONSES = [
    "status-no-reason", "bare-lf-everywhere", "obs-fold", "ctl-in-header-value",
    "del-in-header-value", "cl-and-te-chunked", "chunk-ext-garbage",
]

READ_TIMEOUT = 3.0

# Refusals the node owes whatever h11 says (h11 accepts the first and the third).
NODE_MUST_REFUSE = {
    "host-with-space-and-slash": 400,   # an invalid Host
    "target-byte-ff": 400,              # 0xFF in the request-target
    "trailer-without-colon": 400,       # a chunked trailer line without a colon
}


# ---- the h11 reference ---------------------------------------------------------------------

class Verdict:
    def __init__(self):
        self.messages = []       # [(method, target, body)] complete messages, in order
        self.rejected = False    # a syntax error after `messages`
        self.error = ""
        self.head_seen = False   # the rejected message's head parsed (error in its body)
        self.incomplete = False  # bytes left that make no whole message


def h11_requests(data):
    """Parses `data` (no EOF after it) as a server would; see Verdict."""
    v = Verdict()
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    cur = None
    try:
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                v.incomplete = cur is not None or bool(conn.trailing_data[0])
                return v
            if ev is h11.PAUSED:
                return v
            if isinstance(ev, h11.Request):
                cur = [ev.method, ev.target, b""]
            elif isinstance(ev, h11.Data):
                cur[2] += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                v.messages.append(tuple(cur))
                cur = None
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return v  # the request asked to close: nothing after it counts
                conn.start_next_cycle()
            elif isinstance(ev, h11.ConnectionClosed):
                return v
    except h11.RemoteProtocolError as e:
        v.rejected = True
        v.error = str(e)
        v.head_seen = cur is not None
        return v


def h11_response(data, method="GET"):
    """Parses what a peer sent and then closed: ("ok", status, body), ("cut", why, status)
    when the bytes were fine but the close came before the message ended, or ("bad", why,
    status) for a syntax error (status None when no response head was parsed)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/r", headers=[("Host", "t")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    eof = False
    status, body = None, b""
    try:
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                if eof:
                    return ("cut", "incomplete", status)
                conn.receive_data(b"")
                eof = True
            elif isinstance(ev, h11.InformationalResponse):
                continue
            elif isinstance(ev, h11.Response):
                status = ev.status_code
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                return ("ok", status, body)
            else:  # ConnectionClosed, PAUSED
                return ("cut", repr(ev), status)
    except h11.RemoteProtocolError as e:
        return ("cut" if eof else "bad", str(e), status)


# ---- an upstream that parses with h11 and records -------------------------------------------

class RecordingUpstream:
    """Serves each connection with an h11 server: records every request head it parses, every
    complete request, and any syntax error in what it received; answers 200 "ok"."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.reset()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self):
        with self.lock:
            self.heads = []      # (method, target, headers)
            self.complete = []   # (method, target, body, headers)
            self.errors = []     # (error, raw bytes of the connection)

    def _accept(self):
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                s, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        conn = h11.Connection(h11.SERVER)
        raw = b""
        cur = None
        s.settimeout(30)
        try:
            while not self._stop:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = s.recv(65536)
                    if not data:
                        return  # EOF (mid-message or not): the node gave up, not an error
                    raw += data
                    conn.receive_data(data)
                    continue
                if isinstance(ev, h11.Request):
                    cur = [ev.method, ev.target, b"", ev.headers]
                    with self.lock:
                        self.heads.append((ev.method, ev.target, ev.headers))
                elif isinstance(ev, h11.Data):
                    cur[2] += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    with self.lock:
                        self.complete.append(tuple(cur))
                    cur = None
                    s.sendall(conn.send(h11.Response(status_code=200, headers=[
                        ("Content-Length", "2")])) + conn.send(h11.Data(data=b"ok")) +
                        conn.send(h11.EndOfMessage()))
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
                elif isinstance(ev, h11.ConnectionClosed) or ev is h11.PAUSED:
                    return
        except h11.RemoteProtocolError as e:
            with self.lock:
                self.errors.append((str(e), raw))
        except OSError:
            return
        finally:
            s.close()

    def stop(self):
        self._stop = True
        self.listener.close()


def read_responses(port, data, max_responses):
    """Sends `data` on one connection; returns (statuses, ending) where ending is "open"
    (all max_responses read), "closed" or "timeout"."""
    c = dp.Conn(port, timeout=READ_TIMEOUT)
    statuses = []
    try:
        c.send(data)
        while len(statuses) < max_responses:
            try:
                r = c.response()
            except (EOFError, ConnectionResetError, BrokenPipeError):
                return statuses, "closed"
            except socket.timeout:
                return statuses, "timeout"
            statuses.append(r.status)
            if r.header("Connection") == "close":
                return statuses, "closed"
        return statuses, "open"
    finally:
        c.close()


def is_reject(status):
    return 400 <= status < 500 or status == 501


def node_in_front_of(up):
    """One node routing everything to `up`, for a whole module's corpus; yields (node, up),
    then stops the upstream and the processes it started, by PID."""
    started = []

    def start(args, **kwargs):
        p = support.Process(args, **kwargs)
        started.append(p)
        return p
    doc = dp.bootstrap([{"name": "up", "endpoints": [{"host": "127.0.0.1", "port": up.port}],
                         "response_timeout": "5s",
                         "outlier_detection": {"consecutive_failures": 0}}],
                       [dp.route("all", "/", "up")])
    node = dp.start_dataplane(start, doc)
    yield node, up
    up.stop()
    for p in started:
        p.stop()


@pytest.fixture(scope="module")
def request_node():
    """One node (and upstream) for the whole request corpus."""
    yield from node_in_front_of(RecordingUpstream())


def comparable_target(target):
    return target.startswith(b"/") and not any(x in target for x in (b"/.", b"%", b"#"))


STRICTER_SEEN_REQUESTS = []


@pytest.mark.parametrize("name,data", parse_corpus.REQUESTS,
                         ids=[n for n, _ in parse_corpus.REQUESTS])
def test_request(request_node, name, data):
    node, up = request_node
    ref = h11_requests(data)
    if ref.incomplete:
        # h11 would wait for more (a Content-Length past 2^64): the node must refuse it now.
        assert name == "cl-huge", f"corpus entry {name} is not a whole request for h11"
        ref.rejected, ref.error = True, "waits for 10^26 body bytes"
    up.reset()
    expected = len(ref.messages) + (1 if ref.rejected else 0)
    statuses, ending = read_responses(node.direct_port(), data, max(expected, 1))
    with up.lock:
        heads, complete, errors = list(up.heads), list(up.complete), list(up.errors)
    what = (f"{name}: h11 {'rejects (' + ref.error + ')' if ref.rejected else 'accepts'} "
            f"{len(ref.messages)} whole; node answered {statuses} then {ending}; upstream "
            f"heads {[(m, t) for m, t, _ in heads]}, complete {len(complete)}")
    # The node never forwards bytes an h11 upstream finds malformed.
    assert not errors, f"{what}; the upstream's h11 rejected what the node sent: {errors}"
    # Whatever the node forwarded whole is what h11 parsed, in order (a prefix of it).
    assert len(complete) <= len(ref.messages), f"{what}: upstream got more than h11 parsed"
    for (m, t, body), (um, ut, ubody, uheaders) in zip(ref.messages, complete):
        assert um == m and ubody == body, f"{what}: {(m, t, body)} became {(um, ut, ubody)}"
        if comparable_target(t):
            assert ut == t, f"{what}: target {t!r} became {ut!r}"
        if t.lower().startswith((b"http://", b"https://")):
            # RFC 9112 3.2.2: with an absolute-form target the Host header is ignored and
            # the target's authority is the host; the upstream must not be told another one.
            authority = t.split(b"//", 1)[1].split(b"/", 1)[0]
            hosts = [v for n, v in uheaders if n == b"host"]
            assert hosts == [authority], f"{what}: target {t!r} forwarded with Host {hosts}"
    accepted = [s for s in statuses if s == 200]
    assert len(accepted) == len(complete), f"{what}: 200s do not match forwarded requests"
    stricter = len(complete) < len(ref.messages)
    if ref.rejected or stricter:
        # The first message the node did not forward got a 4xx, not a hang or a close.
        assert ending != "timeout", f"{what}: no answer within {READ_TIMEOUT}s"
        assert len(statuses) > len(complete) and is_reject(statuses[len(complete)]), \
            f"{what}: expected a 4xx for the refused message"
        # Head errors: nothing of the refused message reached the upstream. Body errors (and
        # messages h11 accepts but the node refuses, where the error may be in the body):
        # the head may have been streamed on, the message never completed (checked above).
        if ref.rejected and not ref.head_seen and not stricter:
            assert len(heads) == len(complete), f"{what}: the refused head reached upstream"
        else:
            assert len(heads) <= len(complete) + 1, what
    else:
        assert statuses == [200] * len(ref.messages), what
    if name in NODE_MUST_REFUSE:
        assert statuses[:1] == [NODE_MUST_REFUSE[name]], what
    if stricter and not ref.rejected:
        STRICTER_SEEN_REQUESTS.append(name)
        print(f"\nnode stricter than h11 (allowed): request {name}: {statuses}")


# ---- responses -----------------------------------------------------------------------------

class RawUpstream:
    """Answers every request head with `self.reply` (bytes), then closes the connection."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.reply = b""
        self.accepts = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                s, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepts += 1
            threading.Thread(target=self._serve, args=(s, self.reply), daemon=True).start()

    @staticmethod
    def _serve(s, reply):
        s.settimeout(10)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                data = s.recv(65536)
                if not data:
                    return
                buf += data
            s.sendall(reply)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):  # until the node closes its side
                pass
        except OSError:
            pass
        finally:
            s.close()

    def stop(self):
        self._stop = True
        self.listener.close()


@pytest.fixture(scope="module")
def response_node():
    yield from node_in_front_of(RawUpstream())


def fetch_raw(port):
    """GET /r with Connection: close; everything the client received until EOF."""
    c = dp.Conn(port, timeout=10)
    try:
        c.send(b"GET /r HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        try:
            return c.read_to_eof()
        except ConnectionResetError:
            return c.buf
    finally:
        c.close()


@pytest.mark.parametrize("name,data", parse_corpus.RESPONSES,
                         ids=[n for n, _ in parse_corpus.RESPONSES])
def test_response(response_node, name, data):
    node, up = response_node
    up.reply = data
    ref = h11_response(data)
    got_raw = fetch_raw(node.direct_port())
    got = h11_response(got_raw)
    what = f"{name}: h11 on upstream bytes {ref}; client got {got_raw[:300]!r}"
    assert got_raw, f"{what}: the client got no response at all, just a close"
    assert got[0] != "bad", f"{what}: the client received malformed HTTP ({got[1]})"
    if got[0] == "cut":
        # Cut short by a close: allowed only when the head was already on its way (a head
        # parsed) and the upstream's response was itself broken.
        assert got[2] is not None, f"{what}: no complete response head"
        assert ref[0] != "ok", f"{what}: a valid response arrived cut short"
        return
    _, status, body = got
    if ref[0] != "ok":
        assert status == 502, f"{what}: a response h11 rejects was passed on as {status}"
        return
    if status == 502 and ref[1] != 502:
        STRICTER_SEEN_RESPONSES.append(name)
        print(f"\nnode stricter than h11 (allowed): response {name}")
        return
    assert (status, body) == (ref[1], ref[2]), what


STRICTER_SEEN_RESPONSES = []


def test_corpus_is_large_enough():
    assert len(parse_corpus.REQUESTS) + len(parse_corpus.RESPONSES) >= 100
    names = [n for n, _ in parse_corpus.REQUESTS]
    assert len(names) == len(set(names))
    names = [n for n, _ in parse_corpus.RESPONSES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("target,route", [
    (b"/api/../admin", "root"), (b"/api/../../admin", "root"), (b"/x/../api/echo", "api"),
    (b"/api/./echo", "api"), (b"/./api/echo?q=/../x", "api"), (b"/api/x/../../admin", "root"),
])
def test_dot_segments_are_normalised_before_routing(procs, target, route):
    """A prefix route sees the path after dot-segment removal (RFC 3986 5.2.4): `/api/../admin`
    is not under /api/ and must not reach the api cluster, and the other way round."""
    ups = {"api": RecordingUpstream(), "root": RecordingUpstream()}
    try:
        doc = dp.bootstrap([{"name": n, "endpoints": [{"host": "127.0.0.1", "port": u.port}]}
                            for n, u in ups.items()],
                           [dp.route("api", "/api/", "api"), dp.route("root", "/", "root")])
        node = dp.start_dataplane(procs, doc)
        statuses, _ = read_responses(node.direct_port(), b"GET " + target +
                                     b" HTTP/1.1\r\nHost: t\r\n\r\n", 1)
        got = {n: [t for _, t, _, _ in u.complete] for n, u in ups.items()}
        assert statuses == [200] and len(got[route]) == 1 and \
            sum(map(len, got.values())) == 1, (statuses, got)
    finally:
        for u in ups.values():
            u.stop()
