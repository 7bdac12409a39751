"""A segmenting TCP relay for the integration tests: it forwards bytes both ways, cut into
segments of N bytes (1, 7, 1448 or random), each sent on its own (TCP_NODELAY) and the first
few followed by a small delay, so the peer's reads see requests and responses in pieces.

With ONEDOMAIN_SEGMENT=<1|7|1448|random> in the environment, the fixtures in dp_support,
fleet_support and cp_support put a relay in front of every data-plane listener a test talks
to and in front of every backend endpoint a cluster names, so every request head, body,
response and WebSocket frame crosses the node in pieces. Without it, `relay_port(port)`
returns the port unchanged and nothing here runs.

Bounded by design: in each burst (the bytes a peer wrote before the relay found its socket
empty), the first 64 KiB are cut into segments, and delays stop after 20 ms of sleeping; the
rest of a large burst (a 16 MiB body) is forwarded as read. Heads and the start of every
body are therefore always split; a 16 MiB upload does not take an hour at 1 byte a segment.
ONEDOMAIN_SEGMENT_SEED makes `random` reproducible (pytest's header shows the seed drawn);
the sizes repeat exactly, the interleaving of threads does not.

Half-closes are forwarded (EOF → shutdown(SHUT_WR) on the other side) and a reset on one
side becomes a reset on the other (SO_LINGER 0), so a peer closing or resetting is seen as
such through the relay. A relay is only placed in front of a port that accepts connections
when it is set up: a test that points a cluster at a dead port still gets "connection
refused"."""

import os
import random
import socket
import struct
import threading
import time

LOOPBACK = "127.0.0.1"
FINE_BYTES = 64 * 1024        # bytes of each burst cut into segments
DELAY_BUDGET = 0.020          # seconds of delay per burst, 0-2 ms after each segment

_MODE = os.environ.get("ONEDOMAIN_SEGMENT", "").strip()
_SEED = os.environ.get("ONEDOMAIN_SEGMENT_SEED")
if _MODE and _SEED is None:
    _SEED = str(random.SystemRandom().randrange(1 << 30))
_seed_counter = 0
_seed_lock = threading.Lock()

_active = []
_active_lock = threading.Lock()
started_total = 0   # relays started in this process (conftest checks it in segmented runs)


def mode():
    """The segmenting mode from the environment ('' when off)."""
    return _MODE


def enabled():
    return bool(_MODE)


def seed():
    """The seed of `random` segment sizes and delays (ONEDOMAIN_SEGMENT_SEED replays it)."""
    return _SEED


def _next_rng():
    global _seed_counter
    with _seed_lock:
        _seed_counter += 1
        return random.Random(f"{_SEED}/{_seed_counter}")


def _reset(sock):
    """Closes with RST (SO_LINGER 0), so the peer sees the reset we saw. SHUT_RD first wakes
    a recv() blocked on the socket in the other pump thread (it sends nothing): Linux releases
    the socket, and sends the RST, only when no syscall holds it any more."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class SegmentRelay:
    """Listens on 127.0.0.1:0 and relays every accepted connection to target_port, cutting
    both directions into segments. One thread per direction per connection."""

    def __init__(self, target_port, segment_mode, target_host=LOOPBACK):
        if segment_mode not in ("1", "7", "1448", "random"):
            raise ValueError(f"ONEDOMAIN_SEGMENT must be 1, 7, 1448 or random, "
                             f"not {segment_mode!r}")
        self.target = (target_host, target_port)
        self.segment_mode = segment_mode
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(512)
        self.port = self.listener.getsockname()[1]
        self.accepts = 0
        self.segments_sent = 0   # segments written, both directions (a test can check > 0)
        self._stop = False
        self._lock = threading.Lock()
        self._socks = set()
        threading.Thread(target=self._accept_loop, daemon=True,
                         name=f"relay-{self.port}").start()

    def _size(self, rng):
        if self.segment_mode == "random":
            # Mostly tiny pieces, sometimes a full segment or more.
            r = rng.random()
            if r < 0.5:
                return rng.randint(1, 16)
            if r < 0.9:
                return rng.randint(17, 1448)
            return rng.randint(1449, 8192)
        return int(self.segment_mode)

    def _accept_loop(self):
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _reset(client)  # the target is gone: the client sees a reset, as a refusal
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            with self._lock:
                self.accepts += 1
                self._socks.update((client, upstream))
            state = {"open": 2, "reset": False}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, state, _next_rng()),
                                 daemon=True).start()

    def _pump(self, src, dst, state, rng):
        try:
            while not self._stop:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = None  # reset (or our own shutdown)
                if data is None:
                    state["reset"] = True
                    break
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)  # forward the half-close
                    except OSError:
                        pass
                    break
                if not self._forward_burst(src, dst, data, rng):
                    state["reset"] = True
                    break
        finally:
            with self._lock:
                state["open"] -= 1
                last = state["open"] == 0
            if state["reset"]:
                _reset(src)
                _reset(dst)
            elif last:
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass
            if last or state["reset"]:
                with self._lock:
                    self._socks.discard(src)
                    self._socks.discard(dst)

    def _forward_burst(self, src, dst, data, rng):
        """Sends `data` and whatever else src has ready, segmented; False when dst failed."""
        fine_left = FINE_BYTES
        delay_left = DELAY_BUDGET
        while data:
            try:
                if fine_left > 0:
                    piece = data[:min(self._size(rng), fine_left)]
                    dst.sendall(piece)
                    fine_left -= len(piece)
                    with self._lock:
                        self.segments_sent += 1
                    if delay_left > 0:
                        pause = rng.uniform(0, 0.002)
                        delay_left -= pause
                        time.sleep(pause)
                else:
                    piece = data
                    dst.sendall(piece)
            except OSError:
                return False
            data = data[len(piece):]
            if not data:
                # The burst goes on while src has bytes ready.
                try:
                    data = src.recv(65536, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    return True
                except OSError:
                    return False
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    # The pump's next recv sees EOF again and ends the direction.
                    return True
        return True

    def stop(self):
        self._stop = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _listening(port):
    try:
        socket.create_connection((LOOPBACK, port), timeout=1).close()
        return True
    except OSError:
        return False


def relay_port(port, probe=True):
    """The port to use for `port`: a segmenting relay's when ONEDOMAIN_SEGMENT is set (and,
    with probe, the port accepts connections), else `port` itself."""
    if not _MODE or (probe and not _listening(port)):
        return port
    global started_total
    relay = SegmentRelay(port, _MODE)
    with _active_lock:
        _active.append(relay)
        started_total += 1
    return relay.port


def stop_all():
    """Stops every relay started since the last call (the conftest fixture calls this after
    each test)."""
    with _active_lock:
        relays = list(_active)
        _active.clear()
    for r in relays:
        r.stop()
