// ws_h2_load: a WebSocket-over-HTTP/2 load client (RFC 8441) for bench/h2/ws.sh, the HTTP/2
// twin of bench/websocket/ws_load.cc's pingpong mode.
//
//   ws_h2_load --target 127.0.0.1:PORT [--conns 10] [--streams 100] [--size 64] [--duration 3]
//              [--warmup 1] [--path /ws/bench] [--host H] [--origin O] [--cookie C] [--tls]
//              [--connect-timeout 10]
//
// Opens --conns HTTP/2 connections, plain with prior knowledge (h2c) or, with --tls, TLS with
// ALPN h2. --tls does NOT verify the server's certificate: it is for loopback benchmarks
// against a throwaway self-signed certificate only. Each connection waits for the server's
// SETTINGS, which must carry SETTINGS_ENABLE_CONNECT_PROTOCOL=1, then opens --streams
// extended CONNECT streams (`:method CONNECT`, `:protocol websocket`, sec-websocket-version
// 13) and expects `:status 200` on each. Every stream then sends one masked binary WebSocket
// frame of --size bytes, waits for the whole echo frame, checks its payload and repeats until
// the run ends; then it sends a Close (1000) with END_STREAM and waits for the server's Close.
// Prints one `result` line in the format of ws_load's pingpong: round trips/s, p50/p99/max
// latency, error counts (open_failed and declined count streams).
//
// Exit status: 0 all good; 1 any stream or connection failed (connect, TLS, stream open,
// echo, close); 2 usage; 3 declined: the server does not speak HTTP/2 here, did not advertise
// SETTINGS_ENABLE_CONNECT_PROTOCOL=1, or answered every CONNECT with a non-200 status (the
// line `declined http_status=N` says which), so a script can tell "not supported" from
// "broken".
//
// One thread, one poll() loop over all connections; nghttp2 (client session, automatic
// WINDOW_UPDATEs) does the framing through mem_recv/mem_send, so a loop turn answers every
// echo that arrived and writes each connection's frames with one send. Bounded: connects,
// TLS handshakes, the SETTINGS wait and the stream opens each get --connect-timeout; the run
// ends at its deadline, and streams still busy 5 s after it are abandoned and counted as
// timed out.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "websocket/bench_flags.h"
#include "websocket/latency_histogram.h"

namespace {

using Clock = std::chrono::steady_clock;
using onedomain_bench::LatencyHistogram;

constexpr auto kCloseGrace = std::chrono::seconds(5);
constexpr size_t kOutHighWater = 256 * 1024;  // bytes serialised ahead of the socket

struct Options {
  sockaddr_in target{};
  std::string target_text;
  std::string authority;  // :authority; default the target
  std::string path = "/ws/bench";
  std::string origin;
  std::string cookie;
  size_t conns = 10;
  size_t streams = 100;
  size_t size = 64;
  double duration_s = 3;
  double warmup_s = 1;
  double connect_timeout_s = 10;
  bool tls = false;
};

}  // namespace

namespace onedomain_bench {
void Usage(const std::string& why) {
  std::cerr
      << "ws_h2_load: " << why << "\n"
      << "usage: ws_h2_load --target 127.0.0.1:PORT [--conns N] [--streams M] [--size BYTES]\n"
         "         [--duration S] [--warmup S] [--path P] [--host H] [--origin O]\n"
         "         [--cookie C] [--tls] [--connect-timeout S]\n";
  std::exit(2);
}
}  // namespace onedomain_bench

namespace {

using onedomain_bench::ParseNumber;
using onedomain_bench::ParseSeconds;
using onedomain_bench::Usage;

Options ParseOptions(int argc, char** argv) {
  Options o;
  std::string target;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--tls") {
      o.tls = true;
      continue;
    }
    if (i + 1 >= argc) Usage(std::string(flag) + " needs a value");
    const std::string_view v = argv[++i];
    if (flag == "--target") {
      target = v;
    } else if (flag == "--conns") {
      o.conns = ParseNumber<size_t>(flag, v);
    } else if (flag == "--streams") {
      o.streams = ParseNumber<size_t>(flag, v);
    } else if (flag == "--size") {
      o.size = ParseNumber<size_t>(flag, v);
    } else if (flag == "--duration") {
      o.duration_s = ParseSeconds(flag, v);
    } else if (flag == "--warmup") {
      o.warmup_s = ParseSeconds(flag, v);
    } else if (flag == "--path") {
      o.path = v;
    } else if (flag == "--host") {
      o.authority = v;
    } else if (flag == "--origin") {
      o.origin = v;
    } else if (flag == "--cookie") {
      o.cookie = v;
    } else if (flag == "--connect-timeout") {
      o.connect_timeout_s = ParseSeconds(flag, v);
    } else {
      Usage("unknown flag '" + std::string(flag) + "'");
    }
  }
  // Loopback only, as ws_load: this tool is a load generator.
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos) Usage("--target must be 127.x.x.x:PORT");
  const std::string host = target.substr(0, colon);
  o.target.sin_family = AF_INET;
  if (inet_pton(AF_INET, host.c_str(), &o.target.sin_addr) != 1 ||
      (ntohl(o.target.sin_addr.s_addr) >> 24) != 127) {
    Usage("--target must be a 127.0.0.0/8 address with a port");
  }
  o.target.sin_port = htons(ParseNumber<uint16_t>("--target port", target.substr(colon + 1)));
  o.target_text = target;
  if (o.authority.empty()) o.authority = target;
  if (o.conns == 0 || o.conns > 10'000) Usage("--conns must be 1..10000");
  if (o.streams == 0 || o.streams > 10'000) Usage("--streams must be 1..10000");
  if (o.size > 16 * 1024 * 1024) Usage("--size at most 16 MiB");
  if (o.path.empty() || o.path[0] != '/') Usage("--path must start with /");
  return o;
}

// xorshift64: WebSocket masking keys need not be unpredictable on a loopback bench.
uint32_t NextMaskKey(uint64_t& state) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return static_cast<uint32_t>(state);
}

// Appends one client frame (FIN set, masked, RFC 6455 section 5.2) to `out`.
void AppendMaskedFrame(std::string& out, uint8_t opcode, std::string_view payload, uint64_t& rng) {
  out.push_back(static_cast<char>(0x80 | opcode));
  const size_t n = payload.size();
  if (n < 126) {
    out.push_back(static_cast<char>(0x80 | n));
  } else if (n <= 0xffff) {
    out.push_back(static_cast<char>(0x80 | 126));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(n & 0xff));
  } else {
    out.push_back(static_cast<char>(0x80 | 127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      out.push_back(static_cast<char>((static_cast<uint64_t>(n) >> shift) & 0xff));
    }
  }
  const uint32_t key = NextMaskKey(rng);
  char mask[4];
  std::memcpy(mask, &key, 4);
  out.append(mask, 4);
  const size_t at = out.size();
  out.append(payload);
  for (size_t i = 0; i < n; ++i) out[at + i] = static_cast<char>(out[at + i] ^ mask[i & 3]);
}

// A server frame parsed from the front of a buffer.
struct ServerFrame {
  bool complete = false;
  bool fin = false;
  bool masked = false;
  uint8_t opcode = 0;
  size_t header_size = 0;
  uint64_t payload_size = 0;
};

ServerFrame ParseServerFrame(std::string_view in) {
  ServerFrame f;
  if (in.size() < 2) return f;
  const auto b0 = static_cast<uint8_t>(in[0]);
  const auto b1 = static_cast<uint8_t>(in[1]);
  f.fin = (b0 & 0x80) != 0;
  f.opcode = b0 & 0x0f;
  f.masked = (b1 & 0x80) != 0;
  uint64_t len = b1 & 0x7f;
  size_t header = 2;
  if (len == 126) {
    if (in.size() < 4) return f;
    len = (uint64_t{static_cast<uint8_t>(in[2])} << 8) | static_cast<uint8_t>(in[3]);
    header = 4;
  } else if (len == 127) {
    if (in.size() < 10) return f;
    len = 0;
    for (size_t i = 2; i < 10; ++i) len = (len << 8) | static_cast<uint8_t>(in[i]);
    header = 10;
  }
  if (f.masked) header += 4;
  f.header_size = header;
  f.payload_size = len;
  f.complete = in.size() >= header && in.size() - header >= len;
  return f;
}

// Stamps message `seq` into the first 8 bytes, as ws_load does.
void Stamp(std::string& payload, uint64_t seq) {
  if (payload.size() < 8) return;
  for (size_t i = 0; i < 8; ++i) payload[i] = static_cast<char>('a' + ((seq >> (4 * i)) & 15));
}

struct Client;
struct Conn;

// One extended CONNECT stream: a WebSocket. Owned by its Conn; nghttp2 holds a pointer to it
// as stream user data and as the DATA source, both valid until the Conn is destroyed.
struct Stream {
  enum class State { kOpening, kOpen, kClosing, kDone, kFailed };
  Conn* conn = nullptr;
  int32_t id = -1;
  State state = State::kOpening;
  unsigned http_status = 0;
  std::string out;  // masked frame bytes not yet handed to nghttp2
  size_t out_off = 0;
  bool end_after_out = false;  // END_STREAM once `out` is drained (after our Close)
  std::string in;              // server frame bytes not yet parsed
  std::string payload;         // the message in flight, unmasked
  uint64_t seq = 0;
  bool awaiting_echo = false;
  Clock::time_point sent_at;
};

// One HTTP/2 connection and its streams. Lives on the main thread, owned by the Client.
struct Conn {
  Client* client = nullptr;
  size_t index = 0;
  int fd = -1;
  SSL* ssl = nullptr;
  nghttp2_session* session = nullptr;
  bool got_settings = false;
  bool dead = false;
  bool want_write = false;  // the socket (or TLS) refused bytes: poll for POLLOUT
  std::string out;          // serialised by nghttp2, not yet written
  size_t out_off = 0;
  std::vector<std::unique_ptr<Stream>> streams;

  ~Conn() {
    if (session != nullptr) nghttp2_session_del(session);
    if (ssl != nullptr) SSL_free(ssl);
    if (fd >= 0) close(fd);
  }
};

struct Window {
  Clock::time_point start;
  Clock::time_point end;
};

struct Client {
  explicit Client(const Options& o) : opts(o) {}
  const Options& opts;
  SSL_CTX* tls = nullptr;
  std::vector<std::unique_ptr<Conn>> conns;
  Window window{Clock::time_point::max(), Clock::time_point::max()};
  bool released = false;
  uint64_t rng =
      0x9e3779b97f4a7c15ULL ^ static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  LatencyHistogram latency;
  uint64_t round_trips = 0;
  uint64_t all_round_trips = 0;
  uint64_t errors = 0;  // failures after the stream opened
  uint64_t close_errors = 0;
  uint64_t open_ok = 0;
  uint64_t open_failed = 0;
  uint64_t declined = 0;
  unsigned declined_status = 0;
  uint64_t finished = 0;  // streams in kDone or kFailed
  uint64_t opening = 0;   // streams submitted and still waiting for their response
  std::string first_error;

  void NoteError(const std::string& what) {
    if (first_error.empty()) first_error = what;
  }
};

void Finish(Stream& s, Stream::State how) {
  s.state = how;
  ++s.conn->client->finished;
}

// A stream that ended badly, counted by the phase it was in.
void FailStream(Stream& s, const std::string& why) {
  Client& c = *s.conn->client;
  switch (s.state) {
    case Stream::State::kOpening:
      ++c.open_failed;
      --c.opening;
      break;
    case Stream::State::kOpen:
      ++c.errors;
      break;
    case Stream::State::kClosing:
      ++c.close_errors;
      break;
    case Stream::State::kDone:
    case Stream::State::kFailed:
      return;
  }
  c.NoteError(why);
  Finish(s, Stream::State::kFailed);
}

void Resume(Stream& s) {
  // NGHTTP2_ERR_INVALID_ARGUMENT only says the DATA source was not deferred: nghttp2 will ask
  // it again on its own.
  nghttp2_session_resume_data(s.conn->session, s.id);
}

// The next message on an open stream, or its Close once the window has ended.
void SendNext(Stream& s) {
  Client& c = *s.conn->client;
  const auto now = Clock::now();
  if (now >= c.window.end) {
    uint8_t close_payload[2] = {0x03, 0xe8};  // 1000, normal closure
    AppendMaskedFrame(s.out, 0x8, std::string_view(reinterpret_cast<char*>(close_payload), 2),
                      c.rng);
    s.end_after_out = true;
    s.state = Stream::State::kClosing;
  } else {
    Stamp(s.payload, s.seq++);
    AppendMaskedFrame(s.out, 0x2, s.payload, c.rng);
    s.awaiting_echo = true;
    s.sent_at = now;
  }
  Resume(s);
}

// Consumes every complete server frame buffered on `s`.
void HandleFrames(Stream& s) {
  Client& c = *s.conn->client;
  size_t pos = 0;
  while (s.state == Stream::State::kOpen || s.state == Stream::State::kClosing) {
    const std::string_view rest = std::string_view(s.in).substr(pos);
    const ServerFrame f = ParseServerFrame(rest);
    if (f.header_size > 0 && (f.masked || f.payload_size > c.opts.size + 1024)) {
      FailStream(s, f.masked ? "server frame is masked" : "server frame too large");
      break;
    }
    if (!f.complete) break;
    const std::string_view body = rest.substr(f.header_size, f.payload_size);
    pos += f.header_size + f.payload_size;
    if (f.opcode == 0x8) {
      if (s.state == Stream::State::kClosing) {
        Finish(s, Stream::State::kDone);
      } else {
        FailStream(s, "the server sent Close during the run");
      }
      break;
    }
    if (f.opcode == 0x9 || f.opcode == 0xa) continue;  // neither server sends pings; skip
    if (s.state != Stream::State::kOpen || !s.awaiting_echo) {
      FailStream(s, "unexpected frame (opcode " + std::to_string(f.opcode) + ")");
      break;
    }
    if (!f.fin || f.opcode != 0x2 || body != s.payload) {
      FailStream(s, "echo mismatch");
      break;
    }
    const auto done_at = Clock::now();
    s.awaiting_echo = false;
    ++c.all_round_trips;
    if (done_at >= c.window.start && done_at <= c.window.end) {
      ++c.round_trips;
      c.latency.Record(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(done_at - s.sent_at).count()));
    }
    SendNext(s);
  }
  s.in.erase(0, pos);
}

Stream* StreamOf(nghttp2_session* session, int32_t id) {
  return static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
}

// ---- nghttp2 callbacks (called inside mem_recv / mem_send on the main thread) ------------

ssize_t ReadStreamData(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* data_flags,
                       nghttp2_data_source* source, void*) {
  auto& s = *static_cast<Stream*>(source->ptr);
  const size_t n = std::min(length, s.out.size() - s.out_off);
  if (n == 0 && !s.end_after_out) return NGHTTP2_ERR_DEFERRED;
  std::memcpy(buf, s.out.data() + s.out_off, n);
  s.out_off += n;
  if (s.out_off == s.out.size()) {
    s.out.clear();
    s.out_off = 0;
    if (s.end_after_out) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return static_cast<ssize_t>(n);
}

int OnHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
             size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  Stream* s = StreamOf(session, frame->hd.stream_id);
  if (s == nullptr) return 0;
  if (std::string_view(reinterpret_cast<const char*>(name), namelen) == ":status") {
    unsigned status = 0;
    const auto* v = reinterpret_cast<const char*>(value);
    std::from_chars(v, v + valuelen, status);  // a bad value stays 0: "not 200"
    s->http_status = status;
  }
  return 0;
}

int OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
  auto& conn = *static_cast<Conn*>(user_data);
  Client& c = *conn.client;
  if (frame->hd.type == NGHTTP2_SETTINGS && (frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) {
    conn.got_settings = true;
    return 0;
  }
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    c.NoteError("GOAWAY from the server, error code " + std::to_string(frame->goaway.error_code));
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  Stream* s = StreamOf(session, frame->hd.stream_id);
  if (s == nullptr || s->state != Stream::State::kOpening) return 0;
  if (s->http_status == 200 && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
    s->state = Stream::State::kOpen;
    ++c.open_ok;
    --c.opening;
  } else if (s->http_status >= 200 && s->http_status != 200) {
    ++c.declined;
    --c.opening;
    if (c.declined_status == 0) c.declined_status = s->http_status;
    Finish(*s, Stream::State::kFailed);
    // Our side of the stream is still open (its DATA source is deferred): cancel it.
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
  } else if (s->http_status == 200) {
    FailStream(*s, "200 to CONNECT with END_STREAM");
  }
  return 0;
}

int OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t* data,
                size_t len, void*) {
  Stream* s = StreamOf(session, stream_id);
  if (s == nullptr || (s->state != Stream::State::kOpen && s->state != Stream::State::kClosing)) {
    return 0;
  }
  s->in.append(reinterpret_cast<const char*>(data), len);
  HandleFrames(*s);
  return 0;
}

int OnStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code, void*) {
  Stream* s = StreamOf(session, stream_id);
  if (s == nullptr) return 0;
  if (s->state != Stream::State::kDone && s->state != Stream::State::kFailed) {
    FailStream(*s, "stream closed by the server (error code " + std::to_string(error_code) + ", " +
                       nghttp2_http2_strerror(error_code) + ")");
  }
  return 0;
}

// ---- sockets ----------------------------------------------------------------------------

std::string TlsError() {
  char buf[256];
  const unsigned long e = ERR_get_error();
  if (e == 0) return "no OpenSSL error queued";
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// Waits for `events` on one descriptor until `deadline`. False on timeout.
bool WaitFd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// Non-blocking TCP connect plus, with --tls, the handshake with ALPN h2. Empty on success.
std::string Connect(Conn& conn, const Options& o, SSL_CTX* tls, Clock::time_point deadline) {
  conn.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (conn.fd < 0) return std::string("socket: ") + std::strerror(errno);
  const int one = 1;
  // A failure only costs latency.
  setsockopt(conn.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(conn.fd, reinterpret_cast<const sockaddr*>(&o.target), sizeof o.target) != 0) {
    if (errno != EINPROGRESS) return std::string("connect: ") + std::strerror(errno);
    if (!WaitFd(conn.fd, POLLOUT, deadline)) return "connect: timed out";
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(conn.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return std::string("connect: ") + std::strerror(err);
  }
  if (tls == nullptr) return "";
  conn.ssl = SSL_new(tls);
  if (conn.ssl == nullptr) return "SSL_new: " + TlsError();
  SSL_set_fd(conn.ssl, conn.fd);
  const std::string host = o.authority.substr(0, o.authority.rfind(':'));
  in_addr ignored{};
  if (inet_pton(AF_INET, host.c_str(), &ignored) != 1) {
    SSL_set_tlsext_host_name(conn.ssl, host.c_str());  // SNI for names, never for addresses
  }
  for (;;) {
    ERR_clear_error();
    const int r = SSL_connect(conn.ssl);
    if (r == 1) break;
    const int err = SSL_get_error(conn.ssl, r);
    short events = 0;
    if (err == SSL_ERROR_WANT_READ) {
      events = POLLIN;
    } else if (err == SSL_ERROR_WANT_WRITE) {
      events = POLLOUT;
    } else {
      return "TLS handshake: " + TlsError();
    }
    if (!WaitFd(conn.fd, events, deadline)) return "TLS handshake: timed out";
  }
  const unsigned char* alpn = nullptr;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(conn.ssl, &alpn, &alpn_len);
  if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_len) != "h2") {
    return "TLS: the server did not select ALPN h2";
  }
  return "";
}

// Writes what nghttp2 has serialised, as much as the socket takes. False: connection broken.
bool Flush(Conn& conn, std::string& why) {
  conn.want_write = false;
  for (;;) {
    if (conn.out_off == conn.out.size()) {
      conn.out.clear();
      conn.out_off = 0;
      while (conn.out.size() < kOutHighWater) {
        const uint8_t* data = nullptr;
        const ssize_t n = nghttp2_session_mem_send(conn.session, &data);
        if (n < 0) {
          why = std::string("nghttp2 send: ") + nghttp2_strerror(static_cast<int>(n));
          return false;
        }
        if (n == 0) break;
        conn.out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
      }
      if (conn.out.empty()) return true;
    }
    const char* p = conn.out.data() + conn.out_off;
    const size_t left = conn.out.size() - conn.out_off;
    if (conn.ssl != nullptr) {
      ERR_clear_error();
      const int r = SSL_write(conn.ssl, p, static_cast<int>(std::min<size_t>(left, 1 << 30)));
      if (r > 0) {
        conn.out_off += static_cast<size_t>(r);
        continue;
      }
      const int err = SSL_get_error(conn.ssl, r);
      if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
        conn.want_write = true;
        return true;
      }
      why = "TLS write: " + TlsError();
      return false;
    }
    const ssize_t r = send(conn.fd, p, left, MSG_NOSIGNAL);
    if (r > 0) {
      conn.out_off += static_cast<size_t>(r);
      continue;
    }
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
      conn.want_write = true;
      return true;
    }
    why = std::string("send: ") + std::strerror(errno);
    return false;
  }
}

// Reads what the socket has (bounded per turn, so one busy connection cannot starve the
// others) and feeds it to nghttp2. False: connection ended or broken.
bool ReadAvailable(Conn& conn, std::string& why) {
  static char buf[64 * 1024];
  for (int turn = 0; turn < 16; ++turn) {
    ssize_t n = 0;
    if (conn.ssl != nullptr) {
      ERR_clear_error();
      const int r = SSL_read(conn.ssl, buf, sizeof buf);
      if (r <= 0) {
        const int err = SSL_get_error(conn.ssl, r);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return true;
        why = err == SSL_ERROR_ZERO_RETURN ? "the server closed the connection"
                                           : "TLS read: " + TlsError();
        return false;
      }
      n = r;
    } else {
      n = recv(conn.fd, buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return true;
        why = std::string("recv: ") + std::strerror(errno);
        return false;
      }
      if (n == 0) {
        why = "the server closed the connection";
        return false;
      }
    }
    const ssize_t used = nghttp2_session_mem_recv(conn.session, reinterpret_cast<uint8_t*>(buf),
                                                  static_cast<size_t>(n));
    if (used < 0) {
      why = std::string("nghttp2 receive: ") + nghttp2_strerror(static_cast<int>(used));
      return false;
    }
  }
  return true;
}

void KillConn(Conn& conn, const std::string& why) {
  if (conn.dead) return;
  conn.dead = true;
  conn.client->NoteError("connection " + std::to_string(conn.index) + ": " + why);
  for (auto& s : conn.streams)
    FailStream(*s, "connection " + std::to_string(conn.index) + ": " + why);
}

// Runs the poll loop over every live connection until `done()` or `deadline`. False on
// timeout.
bool RunUntil(Client& c, Clock::time_point deadline, const std::function<bool()>& done) {
  std::vector<pollfd> fds;
  std::vector<Conn*> owners;
  for (;;) {
    std::string why;
    for (auto& conn : c.conns) {
      if (!conn->dead && !Flush(*conn, why)) KillConn(*conn, why);
    }
    if (done()) return true;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    fds.clear();
    owners.clear();
    for (auto& conn : c.conns) {
      if (conn->dead) continue;
      short events = POLLIN;
      if (conn->want_write) events |= POLLOUT;
      fds.push_back(pollfd{conn->fd, events, 0});
      owners.push_back(conn.get());
    }
    if (fds.empty()) return done();
    // Wake at least every 100 ms: the window's end is noticed when an echo arrives, but the
    // deadline must be checked even if nothing does.
    const int r =
        poll(fds.data(), fds.size(), static_cast<int>(std::min<int64_t>(left.count(), 100)));
    if (r < 0 && errno != EINTR) {
      std::perror("ws_h2_load: poll");
      return false;
    }
    for (size_t i = 0; r > 0 && i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      Conn& conn = *owners[i];
      if ((fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0 && !ReadAvailable(conn, why)) {
        KillConn(conn, why);
      }
      // POLLOUT: the next turn's Flush writes.
    }
  }
}

nghttp2_session_callbacks* MakeCallbacks() {
  nghttp2_session_callbacks* cbs = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0) return nullptr;
  nghttp2_session_callbacks_set_on_header_callback(cbs, OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, OnStreamClose);
  return cbs;
}

nghttp2_nv Header(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

// Submits the extended CONNECT of every stream on `conn`. False: nghttp2 refused.
bool SubmitStreams(Conn& conn, const Options& o) {
  std::vector<nghttp2_nv> nva = {Header(":method", "CONNECT"),
                                 Header(":protocol", "websocket"),
                                 Header(":scheme", o.tls ? "https" : "http"),
                                 Header(":path", o.path),
                                 Header(":authority", o.authority),
                                 Header("sec-websocket-version", "13"),
                                 Header("user-agent", "onedomain-ws_h2_load")};
  if (!o.origin.empty()) nva.push_back(Header("origin", o.origin));
  if (!o.cookie.empty()) nva.push_back(Header("cookie", o.cookie));
  for (size_t k = 0; k < o.streams; ++k) {
    auto s = std::make_unique<Stream>();
    s->conn = &conn;
    s->payload.assign(o.size, 'x');
    nghttp2_data_provider provider{};
    provider.source.ptr = s.get();
    provider.read_callback = ReadStreamData;
    const int32_t id =
        nghttp2_submit_request(conn.session, nullptr, nva.data(), nva.size(), &provider, s.get());
    if (id < 0) {
      conn.client->NoteError(std::string("nghttp2_submit_request: ") + nghttp2_strerror(id));
      return false;
    }
    s->id = id;
    conn.streams.push_back(std::move(s));
    ++conn.client->opening;
  }
  return true;
}

void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);  // best effort: a failure shows up as connect errors
  }
}

std::string SecondsText(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}

double Micros(uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

std::chrono::milliseconds Millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  RaiseFileLimit();
  Client c(o);
  const size_t total_streams = o.conns * o.streams;

  std::printf("ws_h2_load target=%s path=%s conns=%zu streams=%zu size=%zu tls=%d\n",
              o.target_text.c_str(), o.path.c_str(), o.conns, o.streams, o.size, o.tls ? 1 : 0);
  std::fflush(stdout);

  if (o.tls) {
    c.tls = SSL_CTX_new(TLS_client_method());
    if (c.tls == nullptr) {
      std::fprintf(stderr, "ws_h2_load: SSL_CTX_new: %s\n", TlsError().c_str());
      return 1;
    }
    // No certificate verification: loopback benchmarks against a throwaway certificate.
    SSL_CTX_set_verify(c.tls, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_mode(c.tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    static const unsigned char kAlpn[] = {2, 'h', '2'};
    SSL_CTX_set_alpn_protos(c.tls, kAlpn, sizeof kAlpn);
  }
  nghttp2_session_callbacks* cbs = MakeCallbacks();
  if (cbs == nullptr) {
    std::fprintf(stderr, "ws_h2_load: out of memory\n");
    return 1;
  }

  // Phase 1: connections, TLS, the client preface and our SETTINGS.
  const auto open_deadline = Clock::now() + Millis(o.connect_timeout_s);
  for (size_t i = 0; i < o.conns; ++i) {
    auto conn = std::make_unique<Conn>();
    conn->client = &c;
    conn->index = i;
    const std::string why = Connect(*conn, o, c.tls, open_deadline);
    if (!why.empty()) {
      std::fprintf(stderr, "ws_h2_load: connection %zu to %s: %s\n", i, o.target_text.c_str(),
                   why.c_str());
      std::printf(
          "result rate=0 round_trips=0 p50_us=0.0 p99_us=0.0 max_us=0.0 errors=0 "
          "open_failed=%zu declined=0 close_errors=0 timed_out=0 all_round_trips=0\n"
          "first_error connection %zu: %s\n",
          total_streams, i, why.c_str());
      return 1;
    }
    if (nghttp2_session_client_new(&conn->session, cbs, conn.get()) != 0) {
      std::fprintf(stderr, "ws_h2_load: nghttp2_session_client_new failed\n");
      return 1;
    }
    const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(conn->session, NGHTTP2_FLAG_NONE, settings, 1);
    c.conns.push_back(std::move(conn));
  }
  nghttp2_session_callbacks_del(cbs);

  // Phase 2: every server's SETTINGS, which must enable extended CONNECT.
  RunUntil(c, open_deadline, [&c] {
    return std::all_of(c.conns.begin(), c.conns.end(),
                       [](const auto& conn) { return conn->dead || conn->got_settings; });
  });
  for (auto& conn : c.conns) {
    if (conn->got_settings) continue;
    std::fprintf(stderr,
                 "ws_h2_load: %s sent no HTTP/2 SETTINGS on connection %zu (%s): is HTTP/2 on "
                 "(prior_knowledge for h2c, ALPN h2 for --tls)?\n",
                 o.target_text.c_str(), conn->index,
                 c.first_error.empty() ? "timed out" : c.first_error.c_str());
    return conn->dead ? 3 : 1;
  }
  for (auto& conn : c.conns) {
    if (nghttp2_session_get_remote_settings(conn->session,
                                            NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) != 1) {
      std::fprintf(stderr,
                   "ws_h2_load: %s did not send SETTINGS_ENABLE_CONNECT_PROTOCOL=1 on "
                   "connection %zu: it does not accept WebSockets over HTTP/2 (RFC 8441)\n",
                   o.target_text.c_str(), conn->index);
      std::printf("declined settings_enable_connect_protocol=0\n");
      return 3;
    }
  }
  const uint32_t max_streams = nghttp2_session_get_remote_settings(
      c.conns.front()->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  if (o.streams > max_streams) {
    std::fprintf(stderr,
                 "ws_h2_load: warning: --streams %zu > the server's MAX_CONCURRENT_STREAMS %u: "
                 "the streams above it wait and time out\n",
                 o.streams, max_streams);
  }

  // Phase 3: the extended CONNECTs.
  for (auto& conn : c.conns) {
    if (!SubmitStreams(*conn, o)) KillConn(*conn, "could not submit the CONNECT streams");
  }
  const auto streams_deadline = Clock::now() + Millis(o.connect_timeout_s);
  const bool all_opened = RunUntil(c, streams_deadline, [&c] { return c.opening == 0; });
  if (!all_opened) {
    for (auto& conn : c.conns) {
      for (auto& s : conn->streams) {
        if (s->state == Stream::State::kOpening) {
          FailStream(*s, "no response to CONNECT in " + SecondsText(o.connect_timeout_s) +
                             " (the server's MAX_CONCURRENT_STREAMS is " +
                             std::to_string(max_streams) + ")");
          nghttp2_submit_rst_stream(conn->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        }
      }
    }
  }

  // Phase 4: ping-pong on every open stream until the window ends, then Close.
  c.window.start = Clock::now() + Millis(o.warmup_s);
  c.window.end = c.window.start + Millis(o.duration_s);
  for (auto& conn : c.conns) {
    for (auto& s : conn->streams) {
      if (s->state == Stream::State::kOpen) SendNext(*s);
    }
  }
  const bool all_finished = RunUntil(c, c.window.end + kCloseGrace,
                                     [&c, total_streams] { return c.finished >= total_streams; });
  const uint64_t timed_out = total_streams - c.finished;
  if (timed_out > 0)
    c.NoteError(std::to_string(timed_out) + " streams still busy 5 s after the run");

  // Hard stop: a GOAWAY where the socket takes it, then every connection is closed.
  for (auto& conn : c.conns) {
    if (conn->dead) continue;
    nghttp2_session_terminate_session(conn->session, NGHTTP2_NO_ERROR);
    std::string ignored;  // the connection is closed next either way
    Flush(*conn, ignored);
  }
  c.conns.clear();
  if (c.tls != nullptr) SSL_CTX_free(c.tls);

  if (c.declined > 0) {
    std::printf("declined http_status=%u count=%llu\n", c.declined_status,
                static_cast<unsigned long long>(c.declined));
  }
  const double secs = std::chrono::duration<double>(c.window.end - c.window.start).count();
  std::printf(
      "result rate=%.0f round_trips=%llu p50_us=%.1f p99_us=%.1f max_us=%.1f errors=%llu "
      "open_failed=%llu declined=%llu close_errors=%llu timed_out=%llu all_round_trips=%llu\n",
      secs > 0 ? static_cast<double>(c.round_trips) / secs : 0.0,
      static_cast<unsigned long long>(c.round_trips), Micros(c.latency.Quantile(0.50)),
      Micros(c.latency.Quantile(0.99)), Micros(c.latency.max()),
      static_cast<unsigned long long>(c.errors), static_cast<unsigned long long>(c.open_failed),
      static_cast<unsigned long long>(c.declined), static_cast<unsigned long long>(c.close_errors),
      static_cast<unsigned long long>(timed_out),
      static_cast<unsigned long long>(c.all_round_trips));
  if (!c.first_error.empty()) std::printf("first_error %s\n", c.first_error.c_str());
  std::fflush(stdout);

  const bool ok = all_opened && all_finished && c.errors == 0 && c.close_errors == 0 &&
                  c.open_failed == 0 && c.declined == 0;
  if (ok) return 0;
  if (c.declined > 0 && c.open_ok == 0) return 3;
  return 1;
}
