"""The differential-parsing corpus: malformed or ambiguous HTTP/1.1 requests and responses,
as (name, bytes). test_differential_parsing.py runs every entry through the data plane and
through python3-h11 (a strict reference parser) and compares what each made of it.

Each request is complete as written (the test sends no EOF after it), so h11's verdict is
"accepted" (one or more whole requests) or "rejected" (a syntax error in the bytes given) --
except `cl-huge`, where h11 waits for 10^26 body bytes; the node must refuse it at once.
Each response is followed by the upstream closing the connection."""

H = b"Host: t\r\n"
POST_CHUNKED = b"POST /c HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
POST_CL5 = b"POST /c HTTP/1.1\r\n" + H


def _get(target=b"/", headers=b"", version=b"HTTP/1.1"):
    return b"GET " + target + b" " + version + b"\r\n" + headers + b"\r\n"


def _post_cl(cl_lines, body=b"hello"):
    return POST_CL5 + cl_lines + b"\r\n" + body


REQUESTS = [
    # ---- sanity: well-formed ----------------------------------------------------------
    ("valid-get", _get(headers=H)),
    ("valid-post-cl", _post_cl(b"Content-Length: 5\r\n")),
    ("valid-post-chunked", POST_CHUNKED + b"5\r\nhello\r\n0\r\n\r\n"),
    ("valid-pipelined", _get(b"/one", H) + _post_cl(b"Content-Length: 5\r\n") + _get(b"/two", H)),
    # ---- request line -----------------------------------------------------------------
    ("lowercase-method", b"get / HTTP/1.1\r\n" + H + b"\r\n"),
    ("method-with-paren", b"GE(T / HTTP/1.1\r\n" + H + b"\r\n"),
    ("method-tab-separator", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n"),
    ("double-space-after-method", b"GET  / HTTP/1.1\r\n" + H + b"\r\n"),
    ("trailing-space-after-version", b"GET / HTTP/1.1 \r\n" + H + b"\r\n"),
    ("version-1.2", _get(headers=H, version=b"HTTP/1.2")),
    ("version-2.0", _get(headers=H, version=b"HTTP/2.0")),
    ("version-lowercase", _get(headers=H, version=b"http/1.1")),
    ("version-missing-minor", _get(headers=H, version=b"HTTP/1")),
    ("version-garbage", _get(headers=H, version=b"HTTP/1.1x")),
    ("http-0.9", b"GET /\r\n\r\n"),
    ("bare-lf-request-line", b"GET / HTTP/1.1\n" + H + b"\r\n"),
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: t\n\n"),
    ("bare-lf-end-of-head", b"GET / HTTP/1.1\r\nHost: t\n\n"),
    ("leading-empty-line", b"\r\n" + _get(headers=H)),
    ("target-asterisk-get", _get(b"*", H)),
    ("target-no-leading-slash", _get(b"a/b", H)),
    ("target-absolute-form-other-host", _get(b"http://other.example/x", H)),
    ("target-absolute-form-same-host", _get(b"http://t/x", H)),
    ("target-authority-form-get", _get(b"t:80", H)),
    ("target-dot-segments", _get(b"/a/../b/./c", H)),
    ("target-encoded-dot-segments", _get(b"/a/%2e%2e/b", H)),
    ("target-fragment", _get(b"/a#frag", H)),
    ("target-empty", b"GET  HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-double-quote", _get(b'/a"b', H)),
    ("target-backslash", _get(b"/a\\b", H)),
    ("target-curly", _get(b"/a{b}", H)),
    ("target-pipe-caret-backtick", _get(b"/a|^`", H)),
    ("target-lt-gt", _get(b"/<script>", H)),
    # ---- Host ---------------------------------------------------------------------------
    ("host-missing", _get()),
    ("host-missing-http10", _get(version=b"HTTP/1.0")),
    ("host-duplicate", _get(headers=b"Host: a\r\nHost: b\r\n")),
    ("host-duplicate-same", _get(headers=b"Host: t\r\nHost: t\r\n")),
    ("host-empty", _get(headers=b"Host:\r\n")),
    ("host-with-space-and-slash", _get(headers=b"Host: a b/c\r\n")),
    ("host-with-slash", _get(headers=b"Host: a/c\r\n")),
    ("host-with-userinfo", _get(headers=b"Host: user@t\r\n")),
    ("host-bad-port", _get(headers=b"Host: t:80x\r\n")),
    ("host-comma-list", _get(headers=b"Host: a, b\r\n")),
    # ---- header syntax ----------------------------------------------------------------
    ("space-before-colon", _get(headers=b"Host : t\r\n")),
    ("tab-before-colon", _get(headers=H + b"X-A\t: 1\r\n")),
    ("space-in-header-name", _get(headers=H + b"X A: 1\r\n")),
    ("header-without-colon", _get(headers=H + b"X-A\r\n")),
    ("empty-header-name", _get(headers=H + b": 1\r\n")),
    ("paren-in-header-name", _get(headers=H + b"X(A): 1\r\n")),
    ("ff-in-header-name", _get(headers=H + b"X-\xffA: 1\r\n")),
    ("obs-fold", _get(headers=H + b"X-A: 1\r\n 2\r\n")),
    ("obs-fold-tab", _get(headers=H + b"X-A: 1\r\n\t2\r\n")),
    ("obs-fold-first-line", _get(headers=b" X-A: 1\r\n" + H)),
    ("obs-fold-host", _get(headers=b"Host:\r\n t\r\n")),
    ("cr-in-header-value", _get(headers=H + b"X-A: a\rb\r\n")),
    ("lf-in-header-value", _get(headers=H + b"X-A: a\nb\r\n")),
    ("header-8k-value", _get(headers=H + b"X-A: " + b"v" * 8192 + b"\r\n")),
    # ---- Content-Length ---------------------------------------------------------------
    ("cl-negative", _post_cl(b"Content-Length: -5\r\n")),
    ("cl-plus-sign", _post_cl(b"Content-Length: +5\r\n")),
    ("cl-hex", _post_cl(b"Content-Length: 0x5\r\n")),
    ("cl-leading-zeros", _post_cl(b"Content-Length: 005\r\n")),
    ("cl-empty", _post_cl(b"Content-Length:\r\n", b"")),
    ("cl-space-inside", _post_cl(b"Content-Length: 5 5\r\n")),
    ("cl-list-same", _post_cl(b"Content-Length: 5, 5\r\n")),
    ("cl-list-different", _post_cl(b"Content-Length: 5, 6\r\n")),
    ("cl-duplicate-same", _post_cl(b"Content-Length: 5\r\nContent-Length: 5\r\n")),
    ("cl-duplicate-different", _post_cl(b"Content-Length: 5\r\nContent-Length: 6\r\n")),
    ("cl-huge", _post_cl(b"Content-Length: 99999999999999999999999999\r\n")),
    ("cl-decimal-point", _post_cl(b"Content-Length: 5.0\r\n")),
    ("cl-obs-fold", _post_cl(b"Content-Length:\r\n 5\r\n")),
    ("cl-on-get-with-body", _get(headers=H + b"Content-Length: 5\r\n") + b"hello"),
    # ---- Transfer-Encoding ------------------------------------------------------------
    ("cl-and-te", POST_CL5 + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("te-and-cl-smuggle", POST_CL5 + b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n"
     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("cl-smuggle-with-te-gzip", POST_CL5 + b"Content-Length: 5\r\n"
     b"Transfer-Encoding: gzip\r\n\r\nhello"),
    ("te-gzip", POST_CL5 + b"Transfer-Encoding: gzip\r\n\r\nhello"),
    ("te-gzip-chunked", POST_CL5 + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("te-chunked-gzip", POST_CL5 + b"Transfer-Encoding: chunked, gzip\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("te-chunked-chunked", POST_CL5 + b"Transfer-Encoding: chunked, chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("te-two-headers", POST_CL5 + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("te-uppercase", POST_CL5 + b"Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("te-xchunked", POST_CL5 + b"Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("te-chunked-trailing-junk", POST_CL5 + b"Transfer-Encoding: chunked;q=1\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("te-vertical-tab", POST_CL5 + b"Transfer-Encoding:\x0bchunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("te-space-before-colon", POST_CL5 + b"Transfer-Encoding : chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("te-obs-fold", POST_CL5 + b"Transfer-Encoding:\r\n chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    ("te-empty", POST_CL5 + b"Transfer-Encoding:\r\n\r\n"),
    ("http10-with-te-chunked", b"POST /c HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
    # ---- chunked bodies ---------------------------------------------------------------
    ("chunk-size-hex-prefix", POST_CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-negative", POST_CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-plus", POST_CHUNKED + b"+5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-leading-space", POST_CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-trailing-space", POST_CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-not-hex", POST_CHUNKED + b"g\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-empty", POST_CHUNKED + b"\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-21-hex-digits", POST_CHUNKED + b"f" * 21 + b"\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-uppercase-hex", POST_CHUNKED + b"A\r\nhellohello\r\n0\r\n\r\n"),
    ("chunk-ext-valid", POST_CHUNKED + b"5;a=b\r\nhello\r\n0\r\n\r\n"),
    ("chunk-ext-empty", POST_CHUNKED + b"5;\r\nhello\r\n0\r\n\r\n"),
    ("chunk-ext-nul", POST_CHUNKED + b"5;a\x00\r\nhello\r\n0\r\n\r\n"),
    ("chunk-ext-bare-cr", POST_CHUNKED + b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
    ("chunk-ext-quoted-crlf-garbage", POST_CHUNKED + b'5;a="\x7f\xff"\r\nhello\r\n0\r\n\r\n'),
    ("chunk-data-too-long", POST_CHUNKED + b"5\r\nhelloXX\r\n0\r\n\r\n"),
    ("chunk-data-missing-crlf", POST_CHUNKED + b"5\r\nhello0\r\n\r\n"),
    ("chunk-data-bare-lf-after", POST_CHUNKED + b"5\r\nhello\n0\r\n\r\n"),
    ("last-chunk-leading-zeros", POST_CHUNKED + b"5\r\nhello\r\n000\r\n\r\n"),
    ("trailer-valid", POST_CHUNKED + b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
    ("trailer-without-colon", POST_CHUNKED + b"5\r\nhello\r\n0\r\nfoo\r\n\r\n"),
    ("trailer-space-before-colon", POST_CHUNKED + b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n"),
    ("trailer-obs-fold", POST_CHUNKED + b"5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"),
    ("trailer-nul", POST_CHUNKED + b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n"),
    ("trailer-content-length", POST_CHUNKED + b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"),
    ("trailer-with-smuggled-request", POST_CHUNKED + b"0\r\n"
     b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"),
]

# Control and non-ASCII bytes in the request-target and in a header value, one at a time.
for _b in (0x00, 0x01, 0x08, 0x09, 0x0b, 0x0c, 0x1f, 0x7f, 0x80, 0xc3, 0xff):
    REQUESTS.append((f"target-byte-{_b:02x}", _get(b"/a" + bytes([_b]) + b"b", H)))
for _b in (0x00, 0x01, 0x08, 0x0b, 0x0c, 0x1f, 0x7f, 0x80, 0xff):
    REQUESTS.append((f"header-value-byte-{_b:02x}", _get(headers=H + b"X-A: a" + bytes([_b]) +
                                                        b"b\r\n")))


def _resp(head_lines, body=b""):
    return b"HTTP/1.1 200 OK\r\n" + head_lines + b"\r\n" + body


def _chunked(body):
    return _resp(b"Transfer-Encoding: chunked\r\n", body)


RESPONSES = [
    # ---- sanity -------------------------------------------------------------------------
    ("valid-cl", _resp(b"Content-Length: 5\r\n", b"hello")),
    ("valid-chunked", _chunked(b"5\r\nhello\r\n0\r\n\r\n")),
    ("valid-close-delimited", _resp(b"", b"hello")),
    ("valid-100-then-200", b"HTTP/1.1 100 Continue\r\n\r\n" + _resp(b"Content-Length: 5\r\n",
                                                                     b"hello")),
    # ---- status line --------------------------------------------------------------------
    ("status-no-reason", b"HTTP/1.1 200\r\nContent-Length: 5\r\n\r\nhello"),
    ("status-empty-reason", b"HTTP/1.1 200 \r\nContent-Length: 5\r\n\r\nhello"),
    ("status-four-digits", b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("status-two-digits", b"HTTP/1.1 20 OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("status-letters", b"HTTP/1.1 abc OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("status-double-space", b"HTTP/1.1  200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("status-nul-in-reason", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 5\r\n\r\nhello"),
    ("version-2", b"HTTP/2 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("version-lowercase", b"http/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("version-icy", b"ICY 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("not-http-at-all", b"hello world\r\n\r\n"),
    ("head-never-ends", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"),
    ("bare-lf-everywhere", b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"),
    # ---- headers ------------------------------------------------------------------------
    ("space-before-colon", _resp(b"Content-Length : 5\r\n", b"hello")),
    ("header-without-colon", _resp(b"Content-Length: 5\r\nX-A\r\n", b"hello")),
    ("empty-header-name", _resp(b"Content-Length: 5\r\n: x\r\n", b"hello")),
    ("space-in-header-name", _resp(b"Content-Length: 5\r\nX A: 1\r\n", b"hello")),
    ("obs-fold", _resp(b"Content-Length: 5\r\nX-A: 1\r\n 2\r\n", b"hello")),
    ("obs-fold-first-line", _resp(b" X-A: 1\r\nContent-Length: 5\r\n", b"hello")),
    ("nul-in-header-value", _resp(b"Content-Length: 5\r\nX-A: a\x00b\r\n", b"hello")),
    ("ctl-in-header-value", _resp(b"Content-Length: 5\r\nX-A: a\x01b\r\n", b"hello")),
    ("del-in-header-value", _resp(b"Content-Length: 5\r\nX-A: a\x7fb\r\n", b"hello")),
    ("cr-in-header-value", _resp(b"Content-Length: 5\r\nX-A: a\rb\r\n", b"hello")),
    ("ff-in-set-cookie", _resp(b"Content-Length: 5\r\nSet-Cookie: a=\xff\r\n", b"hello")),
    ("ff-in-header-name", _resp(b"Content-Length: 5\r\nX-\xff: 1\r\n", b"hello")),
    # ---- Content-Length -----------------------------------------------------------------
    ("cl-and-te-chunked", _resp(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                                b"5\r\nhello\r\n0\r\n\r\n")),
    ("cl-duplicate-different", _resp(b"Content-Length: 5\r\nContent-Length: 3\r\n", b"hello")),
    ("cl-duplicate-same", _resp(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello")),
    ("cl-list-same", _resp(b"Content-Length: 5, 5\r\n", b"hello")),
    ("cl-list-different", _resp(b"Content-Length: 5, 3\r\n", b"hello")),
    ("cl-negative", _resp(b"Content-Length: -5\r\n", b"hello")),
    ("cl-plus-sign", _resp(b"Content-Length: +5\r\n", b"hello")),
    ("cl-hex", _resp(b"Content-Length: 0x5\r\n", b"hello")),
    ("cl-empty", _resp(b"Content-Length:\r\n", b"hello")),
    ("cl-huge", _resp(b"Content-Length: 99999999999999999999999999\r\n", b"hello")),
    ("cl-longer-than-body", _resp(b"Content-Length: 50\r\n", b"hello")),
    ("cl-shorter-than-body", _resp(b"Content-Length: 3\r\n", b"hello")),
    # ---- Transfer-Encoding and chunked --------------------------------------------------
    ("te-gzip", _resp(b"Transfer-Encoding: gzip\r\n", b"hello")),
    ("te-chunked-gzip", _resp(b"Transfer-Encoding: chunked, gzip\r\n", b"hello")),
    ("te-xchunked", _resp(b"Transfer-Encoding: xchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n")),
    ("te-two-headers", _resp(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                             b"5\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-not-hex", _chunked(b"zz\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-negative", _chunked(b"-5\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-hex-prefix", _chunked(b"0x5\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-empty", _chunked(b"\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-21-hex-digits", _chunked(b"f" * 21 + b"\r\nhello\r\n0\r\n\r\n")),
    ("chunk-size-overflow-64bit", _chunked(b"10000000000000000\r\nhello\r\n0\r\n\r\n")),
    ("chunk-ext-garbage", _chunked(b"5;\x01\xff\r\nhello\r\n0\r\n\r\n")),
    ("chunk-data-too-long", _chunked(b"5\r\nhelloXX\r\n0\r\n\r\n")),
    ("chunk-data-missing-crlf", _chunked(b"5\r\nhello0\r\n\r\n")),
    ("chunk-bare-lf", _chunked(b"5\nhello\n0\n\n")),
    ("chunked-truncated", _chunked(b"5\r\nhello\r\n")),
    ("chunked-no-last-crlf", _chunked(b"5\r\nhello\r\n0\r\n")),
    ("trailer-valid", _chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")),
    ("trailer-without-colon", _chunked(b"5\r\nhello\r\n0\r\nfoo\r\n\r\n")),
    ("trailer-nul", _chunked(b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n")),
    ("no-content-with-body", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
    ("http10-chunked", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n"),
]
