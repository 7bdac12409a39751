"""The segmenting relay the ONEDOMAIN_SEGMENT runs rely on: it really cuts a write into
segments of the requested size (the receiver's reads see pieces, not one block), forwards the
bytes unchanged both ways, forwards a half-close, and turns a reset into a reset. No project
binary is involved; if this fails, the segmented runs prove nothing."""

import socket
import threading

import pytest

import segment_relay
import support


class Sink:
    """A one-connection server that records the size of every recv() and echoes the bytes."""

    def __init__(self, echo=True, read=True):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.reads = []
        self.eof = threading.Event()
        self.conn = None
        self.accepted = threading.Event()
        self.echo = echo
        self.read = read
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        self.listener.settimeout(10)
        self.conn, _ = self.listener.accept()
        self.accepted.set()
        if not self.read:
            return  # a reset from the test thread needs no recv blocked on the socket
        self.conn.settimeout(10)
        try:
            while True:
                data = self.conn.recv(65536)
                if not data:
                    self.eof.set()
                    return
                self.reads.append(len(data))
                if self.echo:
                    self.conn.sendall(data)
        except OSError:
            return

    def close(self):
        self.listener.close()
        if self.conn:
            self.conn.close()


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(65536)
        assert chunk, "closed early"
        out += chunk
    return out


@pytest.mark.parametrize("mode,max_piece", [("1", 1), ("7", 7), ("1448", 1448),
                                            ("random", 8192)])
def test_relay_cuts_writes_into_segments_and_keeps_bytes(mode, max_piece):
    sink = Sink()
    relay = segment_relay.SegmentRelay(sink.port, mode)
    try:
        c = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        payload = bytes(range(256)) * 80  # 20 KiB in one write
        c.sendall(payload)
        assert recv_exact(c, len(payload)) == payload  # both ways, unchanged
        support.wait_for(lambda: sum(sink.reads) == len(payload), 10, what="all bytes in")
        # Every write of at most max_piece bytes, both ways...
        min_segments = 2 * -(-len(payload) // max_piece)
        # (the count follows each send: the last may land a moment after the bytes)
        support.wait_for(lambda: relay.segments_sent >= min_segments, 5,
                         what=f"{min_segments} segments, {relay.segments_sent} counted")
        # ...and the receiver saw pieces (this slow Python reader may coalesce a few; the
        # data plane reads much faster).
        assert len(sink.reads) >= 2, sink.reads
        if mode in ("1", "7"):
            assert len(sink.reads) >= 8, f"segments were coalesced: {sink.reads}"
        # Half-close travels through: the sink sees EOF, and can still answer.
        c.shutdown(socket.SHUT_WR)
        assert sink.eof.wait(10)
        c.close()
    finally:
        relay.stop()
        sink.close()


def test_relay_forwards_a_reset_and_refuses_when_target_is_gone():
    sink = Sink(read=False)
    relay = segment_relay.SegmentRelay(sink.port, "7")
    try:
        c = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        assert sink.accepted.wait(10)
        segment_relay._reset(sink.conn)

        def reset_seen():
            try:
                return c.recv(10) == b"" or None
            except ConnectionResetError:
                return True
        assert support.wait_for(reset_seen, 10, what="reset through the relay")
        c.close()
        sink.close()
        # Nothing listens on the target any more: a new connection is reset at once (the
        # reset may even beat connect()'s return).
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            c = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            try:
                c.sendall(b"x")
                assert c.recv(10) == b""
                raise ConnectionResetError
            finally:
                c.close()
    finally:
        relay.stop()
