#include "dataplane/http2/h2_session.h"

#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <boost/asio/error.hpp>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/http2/h2_headers.h"
#include "dataplane/http_proxy/body_relay.h"
#include "dataplane/http_proxy/chunked_scanner.h"
#include "dataplane/http_proxy/client_limits_phase.h"
#include "dataplane/http_proxy/local_reply.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/http_proxy/request_record.h"
#include "dataplane/http_proxy/upstream_exchange.h"
#include "dataplane/http_proxy/ws_upgrade_checks.h"
#include "dataplane/net/any_stream.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"
#include "dataplane/worker/worker_config.h"
#include "dataplane/ws_tunnel/ws_handoff.h"
#include "dataplane/ws_tunnel/ws_tunnel.h"
#include "dataplane/ws_tunnel/ws_tunnel_engine.h"
#include "onedomain/v1/listener.pb.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::dataplane::h2 {
namespace {

// Flow control. A stream may have this much request body in flight toward us before the
// exchange took it; all streams of a connection together, kConnectionWindow. Those bound the
// request bytes a connection can make us hold.
constexpr int32_t kStreamWindow = 128 * 1024;
constexpr int32_t kConnectionWindow = 1024 * 1024;
// Beyond the connection window, what a lingering close reads of a client's other frames.
constexpr uint64_t kLingerSlack = 64 * 1024;
// A stream's response bytes waiting for the client's window: the exchange's next write waits
// while more than this is queued (so at most this plus one relay chunk per stream).
constexpr size_t kStreamOutHigh = 64 * 1024;
// Frames nghttp2 produced that the socket has not taken: reading stops above this.
constexpr size_t kWriteBacklogHigh = 256 * 1024;
// nghttp2_session_mem_send is asked for more until this much is ready for one write.
constexpr size_t kWriteBatch = 64 * 1024;
// One socket read, into a per-thread buffer (nghttp2 copies what it keeps).
constexpr size_t kReadScratch = 64 * 1024;
// SETTINGS_MAX_CONCURRENT_STREAMS unless the listener says otherwise.
constexpr uint32_t kDefaultMaxStreams = 100;
// A tunnel's client stream takes this much from the tunnel engine before it says would_block.
constexpr size_t kTunnelOutLimit = 128 * 1024;
// Rapid reset (CVE-2023-44487): RST_STREAM from the client, as a token bucket; below
// nghttp2's own limit (1000, 33/s) so the answer is ours: GOAWAY ENHANCE_YOUR_CALM.
constexpr double kResetBurst = 200;
constexpr double kResetsPerSecond = 50;
// DATA frames that carry nothing and do not end the stream: harmless once, a CPU flood by
// the thousand.
constexpr uint32_t kMaxEmptyFrames = 100;
// Header bytes of one request beyond which decoding stops (HPACK bombs): the stream is reset
// instead of answered 431.
constexpr uint64_t kHeaderHardFactor = 4;
// How often a connection looks whether the worker started draining.
constexpr auto kDrainPoll = std::chrono::milliseconds(250);

using stats::Http2Error;
using stats::Http2Goaway;

// RFC 6455 4.2.2: base64(SHA-1(key + GUID)).
std::string WebSocketAccept(std::string_view key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string in(key);
  in.append(kGuid);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(in.data()), in.size(), digest);
  unsigned char out[64];
  const int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
}

// A fresh Sec-WebSocket-Key: 16 random bytes in base64.
std::string NewWebSocketKey() {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof(raw)) != 1) {
    for (unsigned char& b : raw) b = static_cast<unsigned char>(std::rand());  // NOLINT
  }
  unsigned char out[32];
  const int n = EVP_EncodeBlock(out, raw, sizeof(raw));
  return std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
}

class Connection;

// One request stream. Owned by its Connection; lives until nghttp2 closed the stream and its
// coroutine ended, whichever comes last.
struct Stream {
  Stream(Connection& c, int32_t stream_id, uint32_t max_header_bytes, Dispatcher& d)
      : conn(c), id(stream_id), builder(max_header_bytes), reader(d), writer(d) {}

  Connection& conn;
  const int32_t id;
  H2RequestBuilder builder;
  RequestHead head;
  bool end_stream_with_headers = false;

  // Request body toward the exchange (chunked framing added when the length is unknown).
  beast::flat_buffer in;
  bool chunked_in = false;
  bool end_in = false;     // END_STREAM received
  uint64_t unacked = 0;    // DATA bytes received and not yet handed back to the window
  uint64_t appended = 0;   // bytes ever appended to `in`
  uint64_t delivered = 0;  // `appended` when ReadMore last returned: what the exchange has seen
  Parked reader;

  // Response toward the client.
  H2Response resp;
  std::string scratch;        // the HTTP/1.1 rendering of the head before conversion
  bool resp_pending = false;  // a head is waiting to be submitted
  bool resp_submitted = false;
  bool resp_no_body = false;
  bool resp_chunked = false;  // the upstream body arrives chunked: de-chunked here
  ChunkedScanner dechunker;
  std::optional<uint64_t> resp_length;
  uint64_t resp_body = 0;  // body bytes queued
  bool resp_complete = false;
  std::string out;  // body bytes not yet taken by the data provider
  size_t out_off = 0;
  bool out_eof = false;  // the body ended: the data provider ends the stream
  bool deferred = false;
  Parked writer;

  // Client limits: the connection's client, and the WebSocket counts this stream holds (many
  // tunnels share a connection; each counts once, until its stream ends).
  ClientState limits;

  // RFC 8441 tunnels.
  std::string ws_key;               // the Sec-WebSocket-Key we sent upstream
  bool bad_accept = false;          // the upstream's 101 did not prove it read our key
  StreamEvents* ws_sink = nullptr;  // the tunnel engine, while it runs on this stream
  bool ev_read = false;             // events owed to ws_sink
  bool ev_write = false;

  bool closed = false;     // nghttp2 closed the stream (done or reset)
  bool cancelled = false;  // the exchange cancelled the client I/O (request_timeout)
  bool running = false;    // its coroutine has not ended
  bool finished = false;   // its coroutine ended: nobody takes request bytes any more

  size_t out_pending() const { return out.size() - out_off; }
};

class Connection final : public StreamEvents {
 public:
  Connection(AnyStream& stream, Worker& worker, uint32_t slot, ClientState& client,
             const CompiledListener& listener);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends our SETTINGS, feeds `already_read`, and starts taking the stream's events.
  bool Start(std::string_view already_read);
  // Waits until the connection ended and every stream's coroutine finished.
  net::awaitable<void> Wait();

  Worker& worker() { return worker_; }
  uint32_t slot() const { return slot_; }
  // Whether a lingering close can still get our last bytes to the client: its socket works
  // and took everything we wrote (a client that stopped reading would not get them anyway,
  // and must not keep the node reading what it floods).
  bool worth_lingering() const { return !socket_failed_ && woff_ == wbuf_.size(); }
  std::string_view client_ip() const { return client_.text; }
  ClientState& client() { return client_; }
  // The client is over its connection cap (counted by the caller): GOAWAY, no new streams.
  void RefuseClient() {
    if (terminated_) return;
    terminated_ = true;
    nghttp2_session_terminate_session(session_, NGHTTP2_ENHANCE_YOUR_CALM);
    Flush();
  }
  const ListenerLimits& limits() const { return limits_; }
  std::string_view forwarded_proto() const { return forwarded_proto_; }
  std::string_view listener_name() const { return listener_name_; }

  // ---- for streams (from their coroutines, never inside nghttp2 callbacks) ----
  // Hands the DATA bytes the exchange took back to the client's windows.
  void Consume(Stream& s);
  // Submits the response head pending on `s` (with a deferred body unless it has none).
  void SubmitResponse(Stream& s);
  // New body bytes, or the end, for the data provider.
  void ResumeData(Stream& s);
  void Reset(Stream& s, uint32_t code);
  void Flush();
  // Flushes once at the end of this loop turn: the frames every stream queued in the turn
  // (response HEADERS, DATA, END_STREAM) leave in one TLS record and one write.
  void FlushSoon() {
    if (!flush_soon_.armed()) flush_soon_.ArmAt(worker_.Now());
  }
  void Count(Http2Error e) { worker_.counters().http2_errors[static_cast<size_t>(e)].Add(); }
  // Hands `n` bytes a tunnel read back to the client's windows.
  void ConsumeTunnel(Stream& s, size_t n);
  int32_t remote_window(const Stream& s) const {
    return nghttp2_session_get_stream_remote_window_size(session_, s.id);
  }
  // Tunnel events owed (set from nghttp2 callbacks, delivered from the loop).
  void OweEvents() {
    events_owed_ = true;
    if (!delivering_) drain_poll_.ArmAt(worker_.Now());
  }

  // nghttp2 callbacks.
  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                      void* user);
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int OnDataChunk(nghttp2_session*, uint8_t flags, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user);
  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user);
  static ssize_t ReadBody(nghttp2_session*, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void* user);
  static int OnFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int OnInvalidFrame(nghttp2_session*, const nghttp2_frame* frame, int lib_error,
                            void* user);

 private:
  // StreamEvents
  // Top-level calls from the loop: the only places (with drain_poll_) that call into a
  // tunnel engine, so that it is never re-entered from inside its own calls.
  void OnReadable() override {
    DoRead();
    DeliverEvents();
  }
  void OnWritable() override {
    write_blocked_ = false;
    Flush();
    DeliverEvents();
  }

  void DoRead();
  void StartStreams();
  void OnStreamDone(Stream* s);
  void Fail();
  // nghttp2 ends a session it finds flooded without a GOAWAY: ours (ENHANCE_YOUR_CALM), as raw
  // bytes after what is queued, written if the socket takes it now (a client that does not
  // read gets none).
  void SendFloodGoaway();
  // Writes wbuf_ from woff_ as far as the socket takes it now; false when it stopped early
  // (write_blocked_ set, or the socket failed: dead_ and socket_failed_ set).
  bool WriteBuffered();
  void MaybeFinish();
  void WakeAll();
  void ArmIdle();
  void DeliverEvents();
  void CheckDrain();
  void Terminate(uint32_t code, Http2Error why);
  // Wakes Wait once the connection finished and no stream is left.
  void NotifyIfDone();

  AnyStream& stream_;
  Worker& worker_;
  const uint32_t slot_;
  ClientState& client_;
  const ListenerLimits limits_;
  const std::string forwarded_proto_;
  const std::string listener_name_;
  const uint32_t max_streams_;
  const bool connect_protocol_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  std::vector<Stream*> to_start_;
  std::string wbuf_;
  size_t woff_ = 0;
  bool write_blocked_ = false;
  bool read_paused_ = false;
  bool reading_ = false;
  bool flushing_ = false;
  bool dead_ = false;           // the socket failed or the peer left: no more I/O
  bool socket_failed_ = false;  // a read or write on the client's socket failed (or its end)
  bool finished_ = false;       // nothing more to do on the connection
  bool sink_set_ = false;
  bool delivering_ = false;
  bool events_owed_ = false;
  bool goaway_sent_ = false;  // drain: the final GOAWAY is out
  bool terminated_ = false;   // we ended the session for an abuse
  double reset_tokens_ = kResetBurst;
  Clock::time_point reset_refill_{};
  uint32_t empty_frames_ = 0;
  Timer idle_;
  Timer drain_poll_;
  Timer flush_soon_;
  Parked done_;
};

// ---- the exchange's view of a stream -------------------------------------------------------

class H2Source final : public ByteSource {
 public:
  explicit H2Source(Stream& s) : s_(s) {}
  beast::flat_buffer& buffer() override { return s_.in; }
  net::awaitable<RelayStatus> ReadMore() override {
    Connection& c = s_.conn;
    c.Consume(s_);  // the caller took what it has seen: its window goes back
    // The buffer fills in the background, also while the caller was writing what it took
    // from it: bytes that came in since the last return are news even if they came before
    // this call.
    const Clock::time_point until = c.worker().Now() + c.limits().body_timeout;
    for (;;) {
      if (s_.appended != s_.delivered) {
        s_.delivered = s_.appended;
        co_return RelayStatus::kOk;
      }
      if (s_.cancelled) co_return RelayStatus::kCancelled;
      if (s_.closed) co_return RelayStatus::kSrcError;
      if (s_.end_in) co_return RelayStatus::kSrcClosed;
      const error_code ec = co_await WaitUntil(s_.reader, c.worker().dispatcher(), until);
      if (ec == net::error::timed_out) co_return RelayStatus::kSrcTimeout;
      if (ec == net::error::operation_aborted) co_return RelayStatus::kCancelled;
    }
  }

 private:
  Stream& s_;
};

class H2Sink final : public ByteSink {
 public:
  explicit H2Sink(Stream& s) : s_(s) {}
  net::awaitable<RelayStatus> Write(net::const_buffer a, net::const_buffer b,
                                    uint64_t& written) override {
    Connection& c = s_.conn;
    if (s_.closed || s_.bad_accept) co_return RelayStatus::kDstError;
    if (s_.cancelled) co_return RelayStatus::kCancelled;
    if (s_.resp_pending && !s_.resp_submitted) c.SubmitResponse(s_);
    Append(a);
    Append(b);
    written += a.size() + b.size();
    c.ResumeData(s_);
    // Back-pressure: the next write waits until the client's window took most of it.
    const Clock::time_point until = c.worker().Now() + c.limits().idle_timeout;
    while (s_.out_pending() > kStreamOutHigh) {
      if (s_.closed) co_return RelayStatus::kDstError;
      if (s_.cancelled) co_return RelayStatus::kCancelled;
      const error_code ec = co_await WaitUntil(s_.writer, c.worker().dispatcher(), until);
      if (ec == net::error::timed_out) {
        // A client that keeps its window shut holds our buffers: it loses the stream.
        if (!s_.closed && c.remote_window(s_) <= 0) c.Count(Http2Error::kZeroWindow);
        co_return RelayStatus::kDstTimeout;
      }
      if (ec == net::error::operation_aborted) co_return RelayStatus::kCancelled;
    }
    co_return s_.closed ? RelayStatus::kDstError : RelayStatus::kOk;
  }

 private:
  void Append(net::const_buffer buf) {
    if (buf.size() == 0) return;
    const std::string_view bytes(static_cast<const char*>(buf.data()), buf.size());
    if (s_.out_off == s_.out.size()) {
      s_.out.clear();
      s_.out_off = 0;
    }
    if (s_.resp_chunked) {
      const ChunkedScanner::Result r =
          s_.dechunker.Feed(bytes, [this](const char* p, size_t n) { s_.out.append(p, n); });
      if (r.done) s_.resp_complete = true;
      return;
    }
    s_.out.append(bytes);
    s_.resp_body += bytes.size();
    if (s_.resp_length && s_.resp_body >= *s_.resp_length) s_.resp_complete = true;
  }

  Stream& s_;
};

class H2Client final : public ExchangeClient {
 public:
  explicit H2Client(Stream& s) : s_(s), source_(s), sink_(s) {}

  ByteSource& request_body() override { return source_; }
  ByteSink& response_out() override { return sink_; }
  void RenderResponseHead(const ResponseHead& head, DownstreamHeadParams params,
                          std::string&) override {
    // The HTTP/1.1 rendering (cookie policy and all), converted; nothing goes to `out`: the
    // head leaves as a HEADERS frame with the first body bytes.
    params.client_version = 11;
    params.close = false;
    params.dechunk = false;
    s_.scratch.clear();
    AppendDownstreamResponseHead(head, params, s_.scratch);
    if (head.status / 100 == 1 && head.status != 101) return;  // interim: not passed on
    if (!ConvertResponseHead(s_.scratch, params.keep_upgrade, s_.resp)) {
      s_.resp.Clear();
      s_.resp.status = "502";
    }
    if (head.status == 101) {
      // RFC 8441: the tunnel's 200 carries the bytes that follow; the backend must have
      // answered our key (RFC 6455 4.1: else the handshake failed).
      std::string_view accept;
      for (const HeaderField& f : head.fields) {
        if (f.id == http::field::sec_websocket_accept) accept = f.value;
      }
      s_.bad_accept = accept != WebSocketAccept(s_.ws_key);
      s_.resp_pending = true;
      s_.resp_no_body = false;
      s_.resp_chunked = false;
      s_.resp_length.reset();
      s_.resp_complete = true;
      return;
    }
    s_.resp_pending = true;
    s_.resp_no_body =
        head.no_body || (head.framing.content_length && *head.framing.content_length == 0);
    s_.resp_chunked = head.framing.chunked && !head.no_body;
    s_.resp_length = head.framing.content_length;
    s_.resp_complete = s_.resp_no_body || (!s_.resp_chunked && !s_.resp_length);
  }
  net::awaitable<bool> SendContinue() override { co_return !s_.closed; }
  net::awaitable<bool> SendLocalReply(const ProxyError& error, RequestRecord& record,
                                      SendReplyOptions options) override {
    Reply(error, record, options.head_request);
    co_return false;
  }
  void CancelIo() override {
    s_.cancelled = true;
    s_.reader.Post(net::error::operation_aborted);
    s_.writer.Post(net::error::operation_aborted);
  }

  // A local reply as the stream's whole response.
  void Reply(const ProxyError& error, RequestRecord& record, bool head_request) {
    if (s_.resp_submitted || s_.closed) return;
    s_.scratch.clear();
    RenderLocalReply(error, {.head_request = head_request, .close = false}, record, s_.scratch);
    const size_t end = s_.scratch.find("\r\n\r\n");
    const std::string_view all(s_.scratch);
    if (end == std::string_view::npos ||
        !ConvertResponseHead(all.substr(0, end + 4), false, s_.resp)) {
      s_.conn.Reset(s_, NGHTTP2_INTERNAL_ERROR);
      return;
    }
    s_.out.assign(all.substr(end + 4));
    s_.out_off = 0;
    s_.resp_pending = true;
    s_.resp_no_body = s_.out.empty();
    s_.resp_complete = true;
    s_.out_eof = true;
    s_.conn.SubmitResponse(s_);
  }

 private:
  Stream& s_;
  H2Source source_;
  H2Sink sink_;
};

// ---- the stream coroutine ------------------------------------------------------------------

AccessContext MakeAccess(Connection& c, const RequestHead& head, std::string& method,
                         std::string& target) {
  AccessContext a;
  a.log = c.worker().access_log();
  if (a.log == nullptr) return a;
  a.scratch = &c.worker().log_scratch();
  a.client = c.client_ip();
  a.listener = c.listener_name();
  method.assign(head.method_text);
  target.assign(head.target);
  a.method = method;
  a.target = target;
  a.version = 20;
  return a;
}

// Reads the start of the request body before any upstream connection is taken, as the
// HTTP/1.1 codec does (request_buffer_bytes within body_timeout).
net::awaitable<std::optional<ProxyError>> BufferBodyStart(Stream& s, H2Source& source,
                                                          uint64_t limit) {
  const ListenerLimits& limits = s.conn.limits();
  if (limits.request_buffer_bytes == 0 || !HasRequestBody(s.head)) co_return std::nullopt;
  for (;;) {
    const std::string_view all(static_cast<const char*>(s.in.data().data()), s.in.size());
    const BufferedBody b = ProbeBufferedBody(s.head.framing, all, limit);
    if (b.error) co_return b.error;
    if (b.complete || s.in.size() >= limits.request_buffer_bytes) co_return std::nullopt;
    const RelayStatus st = co_await source.ReadMore();
    if (st == RelayStatus::kSrcTimeout) co_return ProxyError{ProxyErrorKind::kBodyTimeout};
    if (st != RelayStatus::kOk) {
      co_return ProxyError{ProxyErrorKind::kMalformedRequest,
                           "the client ended the stream before sending its body"};
    }
  }
}

// An RFC 8441 tunnel's client side: the stream's DATA as a NonBlockingStream for the tunnel
// engine. Reads take from the stream's buffer (and give the window back); writes queue for
// the data provider up to kTunnelOutLimit; events come from Connection::DeliverEvents.
class H2TunnelStream final : public NonBlockingStream {
 public:
  explicit H2TunnelStream(Stream& s) : s_(s) {}
  ~H2TunnelStream() { s_.ws_sink = nullptr; }

  size_t TryRead(net::mutable_buffer buf, error_code& ec) override {
    ec = {};
    if (s_.in.size() > 0) {
      const size_t n = net::buffer_copy(buf, s_.in.data());
      s_.in.consume(n);
      s_.conn.ConsumeTunnel(s_, n);
      return n;
    }
    if (s_.in.capacity() > 2 * kInitialReadSize) s_.in.shrink_to_fit();  // idle: no buffer
    if (s_.end_in) {
      ec = net::error::eof;
    } else if (s_.closed) {
      ec = net::error::connection_reset;
    } else {
      ec = net::error::would_block;
    }
    return 0;
  }
  size_t TryWrite(const net::const_buffer* bufs, size_t count, error_code& ec) override {
    ec = {};
    if (s_.closed || s_.out_eof) {
      ec = net::error::broken_pipe;
      return 0;
    }
    if (s_.out_off == s_.out.size()) {
      s_.out.clear();
      s_.out_off = 0;
    }
    size_t room = kTunnelOutLimit > s_.out_pending() ? kTunnelOutLimit - s_.out_pending() : 0;
    if (room == 0) {
      ec = net::error::would_block;
      return 0;
    }
    size_t taken = 0;
    for (size_t i = 0; i < count && room > 0; ++i) {
      const size_t n = std::min(room, bufs[i].size());
      s_.out.append(static_cast<const char*>(bufs[i].data()), n);
      taken += n;
      room -= n;
    }
    s_.conn.ResumeData(s_);
    return taken;
  }
  void ShutdownSend() override {
    if (s_.out_eof) return;
    s_.out_eof = true;
    s_.conn.ResumeData(s_);
  }
  bool maybe_readable() const override { return s_.in.size() > 0 || s_.end_in || s_.closed; }
  void SetEventSink(StreamEvents* sink) override {
    s_.ws_sink = sink;
    if (sink != nullptr && maybe_readable()) {
      s_.ev_read = true;
      s_.conn.OweEvents();
    }
  }

 private:
  Stream& s_;
};

// Resumes ServeTunnel once the engine is done (posted: never under the engine's feet).
struct TunnelDone final : WsTunnelDone {
  explicit TunnelDone(Dispatcher& dispatcher) : parked(dispatcher) {}
  void OnTunnelDone() override { parked.Post({}); }
  Parked parked;
};

// The tunnel on a stream whose upstream answered 101: the same engine as HTTP/1.1 upgrades
// (frame tracking, idle timeout, keepalive pings, drain with Close 1001).
net::awaitable<void> RunTunnel(Stream& s, std::unique_ptr<WsHandoff> handoff) {
  Connection& c = s.conn;
  const std::unique_ptr<UpstreamConnection> upstream = std::move(handoff->upstream);
  s.conn.Consume(s);  // what arrived before the 200 is in the handoff
  H2TunnelStream client(s);
  TunnelDone done(c.worker().dispatcher());
  const WsTunnelPolicy policy{handoff->route_slot, handoff->idle_timeout,
                              handoff->keepalive_interval, handoff->drain_grace,
                              handoff->drain_spread};
  WsTunnel tunnel(c.worker().ws_tunnels(), client, upstream->stream(), *handoff->counters, policy,
                  done);
  tunnel.Start(std::move(handoff->from_client), std::move(handoff->from_upstream));
  handoff.reset();
  if (!tunnel.done()) (void)co_await done.parked.Wait();  // only OnTunnelDone resumes it
  // The client side's end went out as END_STREAM (ShutdownSend) or the stream is gone.
}

// The upgrade exchange; on a 101 (the client got its 200) `tunnel` holds what the tunnel
// engine needs.
net::awaitable<void> ServeTunnel(Stream& s, H2Client& client, RequestRecord& record,
                                 WorkerConfig& cfg, const CompiledListener& listener,
                                 const CompiledRoute& route, std::unique_ptr<WsHandoff>& tunnel) {
  Connection& c = s.conn;
  ExchangeBuffers bufs;
  const ExchangeRequest req{s.head,
                            route,
                            *cfg.clusters[route.cluster_index],
                            record,
                            c.client_ip(),
                            c.forwarded_proto(),
                            listener.limits.max_header_bytes,
                            0,
                            /*keep_alive_ok=*/false,
                            /*client_takes_interim=*/false,
                            /*client_takes_chunked=*/true,
                            ExchangeMode::kUpgrade,
                            c.client().replace_forwarded_for};
  ExchangeResult result = co_await RunExchange(client, req, c.worker(), bufs);
  if (s.bad_accept) {
    // The 200 never went out (the sink refused it): the client gets a precise 502.
    result.upgraded.reset();
    s.resp_submitted = false;
    client.Reply(ProxyError{ProxyErrorKind::kUpstreamBadResponse, "wrong Sec-WebSocket-Accept"},
                 record, false);
    co_return;
  }
  if (result.upgraded && !s.closed) tunnel = std::move(result.upgraded);
}

// The phases and the exchange for one stream; the HTTP/1.1 session's ServeRequest, minus
// keep-alive.
net::awaitable<void> ServeStream(Stream& s, H2Client& client, RequestRecord& record,
                                 WorkerConfig& cfg, const CompiledListener& listener,
                                 std::string& target_storage, std::unique_ptr<WsHandoff>& tunnel) {
  Connection& c = s.conn;
  RequestHead& head = s.head;
  const bool head_method = head.method == http::verb::head;
  if (s.builder.too_large()) {
    c.Count(Http2Error::kHeaderListTooLarge);
    client.Reply(ProxyError{ProxyErrorKind::kHeaderTooLarge}, record, head_method);
    co_return;
  }
  const std::string_view protocol = s.builder.protocol();
  if (!protocol.empty() && protocol != "websocket") {
    client.Reply(ProxyError{ProxyErrorKind::kUnsupportedProtocol}, record, false);
    co_return;
  }
  const bool websocket = !protocol.empty();
  std::optional<ProxyError> bad = NormalizeRequest(head, target_storage);
  if (!bad) bad = CheckRequest(head);
  if (bad) {
    client.Reply(*bad, record, head_method);
    co_return;
  }
  const CompiledRoute* route = cfg.routes().Match(head.host, PathOfTarget(head.target));
  if (route == nullptr) {
    client.Reply(ProxyError{ProxyErrorKind::kNoRoute}, record, head_method);
    co_return;
  }
  record.route_counters = cfg.route_counters[route->index];
  record.route_name = route->name;
  const uint64_t limit = route->max_body_bytes.value_or(listener.limits.max_body_bytes);
  if (websocket) {
    // Policy first, as for HTTP/1.1: a refused upgrade never opens an upstream connection.
    if (auto refusal = CheckUpgrade(head, *route, cfg.compiled->source->site().origins())) {
      record.route_counters->RecordUpgrade(refusal->result, true);
      client.Reply(refusal->error, record, false);
      co_return;
    }
    // Client limits next (429), still before any upstream connection.
    if (auto limited = CheckClientLimits(s.limits, cfg, *route, head, true, c.worker(),
                                         *record.route_counters)) {
      client.Reply(*limited, record, false);
      co_return;
    }
    co_await ServeTunnel(s, client, record, cfg, listener, *route, tunnel);
    if (!tunnel) ReleaseWebSocketCounts(s.limits);  // no tunnel: its counts go back
    co_return;
  }
  if (auto limited = CheckClientLimits(s.limits, cfg, *route, head, false, c.worker(),
                                       *record.route_counters)) {
    client.Reply(*limited, record, head_method);
    co_return;
  }
  if (auto too_large = CheckBodyLimit(head, limit)) {
    client.Reply(*too_large, record, head_method);
    co_return;
  }
  H2Source& source = static_cast<H2Source&>(client.request_body());
  if (auto body_error = co_await BufferBodyStart(s, source, limit)) {
    client.Reply(*body_error, record, head_method);
    co_return;
  }
  ExchangeBuffers bufs;
  const ExchangeRequest req{head,
                            *route,
                            *cfg.clusters[route->cluster_index],
                            record,
                            c.client_ip(),
                            c.forwarded_proto(),
                            listener.limits.max_header_bytes,
                            limit,
                            /*keep_alive_ok=*/true,
                            /*client_takes_interim=*/false,
                            /*client_takes_chunked=*/true,
                            ExchangeMode::kHttp,
                            c.client().replace_forwarded_for};
  ExchangeResult result = co_await RunExchange(client, req, c.worker(), bufs);
  (void)result;  // a stream carries one exchange: keep-alive is the connection's business
}

// The request part of a stream, under the config pinned for it (released before a tunnel
// runs: tunnels never hold a config). Returns the tunnel to run, if the upgrade got its 101.
net::awaitable<std::unique_ptr<WsHandoff>> ServeRequestPart(Stream& s, H2Client& client) {
  Connection& c = s.conn;
  Worker& worker = c.worker();
  std::unique_ptr<WsHandoff> tunnel;
  RequestRecord record;
  record.route_counters = &worker.no_route_counters();
  record.start = worker.Now();
  record.http2 = true;
  const Ref<WorkerConfig> cfg = worker.config();
  const CompiledListener* listener = cfg ? cfg->listener(c.slot()) : nullptr;
  if (listener == nullptr) {
    c.Reset(s, NGHTTP2_REFUSED_STREAM);  // the listener was removed: finish here
    co_return tunnel;
  }
  std::string_view error;
  std::string log_method, log_target, target_storage;
  if (!s.builder.protocol().empty()) s.ws_key = NewWebSocketKey();
  const bool ok = s.builder.Finish(s.head, s.end_stream_with_headers, error, s.ws_key);
  ClientState& conn_client = c.client();
  if (ok && !conn_client.decided) {  // a trusted proxy's first stream names the client
    if (!DecideClientFromForwardedFor(conn_client, s.head, cfg->compiled->client_limits, worker)) {
      c.Reset(s, NGHTTP2_REFUSED_STREAM);
      c.RefuseClient();
      co_return tunnel;
    }
  }
  s.limits.address = conn_client.address;
  s.limits.text = conn_client.text;
  s.limits.decided = conn_client.decided;
  s.limits.replace_forwarded_for = conn_client.replace_forwarded_for;
  const AccessContext access = MakeAccess(c, s.head, log_method, log_target);
  if (!ok) {
    client.Reply(ProxyError{ProxyErrorKind::kMalformedRequest, error}, record, false);
  } else {
    co_await ServeStream(s, client, record, *cfg, *listener, target_storage, tunnel);
  }
  // Logged and counted at the tunnel's 200, as an HTTP/1.1 upgrade is at its 101.
  FinishRequest(record, access, worker.Now());
  co_return tunnel;
}

net::awaitable<void> RunStream(Stream& s) {
  Connection& c = s.conn;
  H2Client client(s);
  std::unique_ptr<WsHandoff> tunnel = co_await ServeRequestPart(s, client);
  if (tunnel) co_await RunTunnel(s, std::move(tunnel));
  if (s.closed) co_return;
  if (s.resp_pending && !s.resp_submitted) c.SubmitResponse(s);
  if (!s.resp_submitted || !s.resp_complete) {
    // The response never started, or broke off mid-body: the client must not take a
    // truncated body for a whole one.
    c.Reset(s, NGHTTP2_INTERNAL_ERROR);
    co_return;
  }
  s.out_eof = true;
  c.ResumeData(s);
}

// ---- Connection ------------------------------------------------------------------------

Connection::Connection(AnyStream& stream, Worker& worker, uint32_t slot, ClientState& client,
                       const CompiledListener& listener)
    : stream_(stream),
      worker_(worker),
      slot_(slot),
      client_(client),
      limits_(listener.limits),
      forwarded_proto_(listener.forwarded_proto),
      listener_name_(listener.name),
      max_streams_(listener.source.http2().max_concurrent_streams() != 0
                       ? listener.source.http2().max_concurrent_streams()
                       : kDefaultMaxStreams),
      connect_protocol_(!listener.source.http2().has_enable_connect_protocol() ||
                        listener.source.http2().enable_connect_protocol()),
      idle_(worker.dispatcher(),
            [this] {
              if (session_ != nullptr && !finished_) {
                nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
                Flush();
              }
            }),
      drain_poll_(worker.dispatcher(),
                  [this] {
                    drain_poll_.Arm(kDrainPoll);
                    CheckDrain();
                    DeliverEvents();  // from the loop: never inside a tunnel's own call
                  }),
      flush_soon_(worker.dispatcher(),
                  [this] {
                    flush_soon_.Disarm();
                    Flush();
                  }),
      done_(worker.dispatcher()) {}

Connection::~Connection() {
  // Streams whose coroutine still runs exist only when the worker shuts down (Wait returns
  // after the last one ended otherwise): their frames, destroyed in no set order with this
  // one, still point at them, so they are left to the process's end.
  for (auto& [id, st] : streams_) {
    if (st->running) (void)st.release();  // NOLINT(bugprone-unused-return-value): on purpose
  }
  if (sink_set_) stream_.SetEventSink(nullptr);
  if (session_ != nullptr) nghttp2_session_del(session_);
}

bool Connection::Start(std::string_view already_read) {
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) return false;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, &Connection::OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cb, &Connection::OnHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, &Connection::OnFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, &Connection::OnDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, &Connection::OnStreamClose);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, &Connection::OnFrameSend);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, &Connection::OnInvalidFrame);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // Window updates are ours: a DATA byte is acknowledged once the exchange took it.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  const int rv = nghttp2_session_server_new2(&session_, cb, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  if (rv != 0) return false;

  std::vector<nghttp2_settings_entry> settings = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams_},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(kStreamWindow)},
  };
  if (connect_protocol_) settings.push_back({NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1});
  // What we decode at most (RFC 9113 6.5.2, advisory): a larger section resets the stream; one
  // over the HTTP/1.1 limit but under this gets its 431 answer.
  settings.push_back({NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                      static_cast<uint32_t>(std::min<uint64_t>(
                          kHeaderHardFactor * limits_.max_header_bytes, UINT32_MAX))});
  if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size()) != 0 ||
      nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow) !=
          0) {
    return false;
  }
  stream_.SetEventSink(this);
  sink_set_ = true;
  if (!already_read.empty()) {
    const auto* p = reinterpret_cast<const uint8_t*>(already_read.data());
    const ssize_t rv = nghttp2_session_mem_recv(session_, p, already_read.size());
    if (rv < 0) {
      Count(rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? Http2Error::kBadPreface : Http2Error::kProtocol);
      Fail();
      return true;
    }
    StartStreams();
  }
  idle_.Arm(limits_.header_timeout);
  reset_refill_ = worker_.Now();
  drain_poll_.Arm(kDrainPoll);
  Flush();
  DoRead();
  return true;
}

net::awaitable<void> Connection::Wait() {
  while (!(finished_ && streams_.empty())) {
    (void)co_await done_.Wait();  // resumed by MaybeFinish or a stream's end
  }
}

void Connection::ArmIdle() {
  if (streams_.empty() && !finished_) idle_.Arm(limits_.idle_timeout);
}

void Connection::DoRead() {
  if (reading_ || read_paused_ || dead_ || finished_) return;
  reading_ = true;
  // Not the tunnels' scratch buffer: a tunnel may be between reading into that and copying
  // out of it when its write to one of our streams flushes and resumes this read.
  thread_local const std::unique_ptr<uint8_t[]> scratch(new uint8_t[kReadScratch]);
  for (;;) {
    error_code ec;
    const size_t n = stream_.TryRead(net::buffer(scratch.get(), kReadScratch), ec);
    if (ec == net::error::would_block) break;
    if (ec) {
      // The client's end (or a failure): what is in flight toward it cannot arrive.
      dead_ = true;
      socket_failed_ = true;
      break;
    }
    const ssize_t rv = nghttp2_session_mem_recv(session_, scratch.get(), n);
    if (rv < 0) {
      log::Debug("http2", str::Cat("session error with ", client_.text, ": ",
                                   nghttp2_strerror(static_cast<int>(rv))));
      const bool flood = rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS;
      Count(rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? Http2Error::kBadPreface
            : flood                            ? Http2Error::kFlood
                                               : Http2Error::kProtocol);
      if (flood) SendFloodGoaway();
      Fail();
      break;
    }
    StartStreams();
    if (wbuf_.size() - woff_ > kWriteBacklogHigh) {
      read_paused_ = true;  // the client does not read what we send: stop taking more
      break;
    }
    Flush();
  }
  reading_ = false;
  Flush();
  if (dead_) WakeAll();
  MaybeFinish();
}

void Connection::StartStreams() {
  // A drain that began since the last poll: the GOAWAY goes out with the first new stream.
  if (!to_start_.empty() && worker_.draining() && !goaway_sent_) CheckDrain();
  std::vector<int32_t> start;
  for (const Stream* s : to_start_) start.push_back(s->id);
  to_start_.clear();
  for (const int32_t id : start) {
    // By id: a coroutine may run inline here and close (or fail) the connection, which
    // deletes streams that did not start.
    const auto it = streams_.find(id);
    if (dead_ || it == streams_.end()) continue;
    Stream* s = it->second.get();
    if (s->closed || s->running || s->finished) continue;
    s->running = true;
    idle_.Disarm();
    worker_.counters().http2_streams_active.Inc();
    worker_.dispatcher().Spawn(RunStream(*s), "http2 stream", [this, s] { OnStreamDone(s); });
  }
}

void Connection::OnStreamDone(Stream* s) {
  worker_.counters().http2_streams_active.Dec();
  s->running = false;
  s->finished = true;
  if (s->closed) streams_.erase(s->id);
  FlushSoon();
  ArmIdle();
  MaybeFinish();
  NotifyIfDone();
}

void Connection::NotifyIfDone() {
  if (finished_ && streams_.empty()) done_.Post({});
}

bool Connection::WriteBuffered() {
  while (woff_ < wbuf_.size()) {
    error_code ec;
    const net::const_buffer b(wbuf_.data() + woff_, wbuf_.size() - woff_);
    const size_t n = stream_.TryWrite(&b, 1, ec);
    if (ec == net::error::would_block) {
      write_blocked_ = true;
      return false;
    }
    if (ec) {
      dead_ = true;
      socket_failed_ = true;
      return false;
    }
    woff_ += n;
  }
  wbuf_.clear();
  woff_ = 0;
  return true;
}

void Connection::Flush() {
  if (flushing_ || session_ == nullptr) return;
  flushing_ = true;
  while (!dead_) {
    while (wbuf_.size() - woff_ < kWriteBatch && nghttp2_session_want_write(session_)) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        dead_ = true;
        break;
      }
      if (n == 0) break;
      if (woff_ == wbuf_.size()) {
        wbuf_.clear();
        woff_ = 0;
      }
      wbuf_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    if (dead_ || woff_ == wbuf_.size() || write_blocked_) break;
    if (!WriteBuffered()) break;
  }
  if (wbuf_.capacity() > 4 * kWriteBatch && wbuf_.empty()) wbuf_.shrink_to_fit();
  flushing_ = false;
  if (dead_) WakeAll();
  // Tunnel events owed from here are delivered by the loop (this may run inside a tunnel's
  // own call).
  if (events_owed_ && !delivering_) drain_poll_.ArmAt(worker_.Now());
  if (read_paused_ && wbuf_.size() - woff_ <= kWriteBacklogHigh / 2) {
    read_paused_ = false;
    DoRead();
  }
  MaybeFinish();
}

void Connection::SendFloodGoaway() {
  // Length 8, type GOAWAY, no flags, stream 0; then the last stream id and the error code.
  uint8_t frame[17] = {0, 0, 8, NGHTTP2_GOAWAY};
  const auto put32 = [&frame](size_t at, uint32_t v) {
    for (size_t i = 0; i < 4; ++i) frame[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
  };
  put32(9, static_cast<uint32_t>(nghttp2_session_get_last_proc_stream_id(session_)) & 0x7fffffffu);
  put32(13, NGHTTP2_ENHANCE_YOUR_CALM);
  wbuf_.append(reinterpret_cast<const char*>(frame), sizeof frame);
  worker_.counters().http2_goaways[static_cast<size_t>(Http2Goaway::kEnhanceYourCalm)].Add();
  if (!dead_ && !write_blocked_) WriteBuffered();
}

void Connection::Fail() {
  // nghttp2 already queued a GOAWAY for protocol errors; send what we can, then stop.
  Flush();
  dead_ = true;
  WakeAll();
}

void Connection::WakeAll() {
  for (auto& [id, s] : streams_) {
    s->closed = true;
    s->reader.Post(net::error::connection_reset);
    s->writer.Post(net::error::connection_reset);
    s->ev_read = s->ev_write = true;
    events_owed_ = true;
  }
  to_start_.clear();  // never started: they go now
  for (auto it = streams_.begin(); it != streams_.end();) {
    it = it->second->running ? std::next(it) : streams_.erase(it);
  }
}

void Connection::MaybeFinish() {
  if (finished_ || reading_ || flushing_) return;
  const bool idle_session = session_ == nullptr || (!nghttp2_session_want_read(session_) &&
                                                    !nghttp2_session_want_write(session_));
  if (!dead_ && !(idle_session && woff_ == wbuf_.size())) return;
  finished_ = true;
  idle_.Disarm();
  WakeAll();
  NotifyIfDone();
}

void Connection::DeliverEvents() {
  if (delivering_ || !events_owed_) return;
  delivering_ = true;
  // Handlers may write, which flushes, which may owe new events: a few rounds at most.
  for (int round = 0; round < 8 && events_owed_; ++round) {
    events_owed_ = false;
    std::vector<int32_t> ids;
    for (const auto& [id, st] : streams_) {
      if (st->ws_sink != nullptr && (st->ev_read || st->ev_write)) ids.push_back(id);
    }
    for (const int32_t id : ids) {
      const auto it = streams_.find(id);
      if (it == streams_.end()) continue;
      Stream& st = *it->second;
      if (st.ev_read && st.ws_sink != nullptr) {
        st.ev_read = false;
        st.ws_sink->OnReadable();
      }
      if (st.ev_write && st.ws_sink != nullptr) {
        st.ev_write = false;
        st.ws_sink->OnWritable();
      }
    }
  }
  delivering_ = false;
  if (events_owed_) {
    // Still owed after the rounds: the next turn of the loop delivers them.
    drain_poll_.ArmAt(worker_.Now());
  }
}

void Connection::CheckDrain() {
  if (finished_ || dead_ || goaway_sent_ || !worker_.draining()) return;
  // Graceful first (the client stops opening streams), then the final GOAWAY naming the last
  // stream served; open streams (WebSockets: Close 1001 from the tunnel drain) finish.
  nghttp2_submit_shutdown_notice(session_);
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  goaway_sent_ = true;
  Flush();
}

void Connection::Terminate(uint32_t code, Http2Error why) {
  if (terminated_) return;  // once per connection, counted once
  terminated_ = true;
  Count(why);
  nghttp2_session_terminate_session(session_, code);
}

void Connection::ConsumeTunnel(Stream& s, size_t n) {
  const uint64_t k = std::min<uint64_t>(n, s.unacked);
  if (k == 0 || s.closed || dead_) return;
  s.unacked -= k;
  nghttp2_session_consume(session_, s.id, k);
  FlushSoon();
}

void Connection::Consume(Stream& s) {
  if (s.unacked == 0 || s.closed || dead_) return;
  nghttp2_session_consume(session_, s.id, s.unacked);
  s.unacked = 0;
  FlushSoon();
}

void Connection::SubmitResponse(Stream& s) {
  if (s.resp_submitted || s.closed || dead_) return;
  s.resp_submitted = true;
  s.resp_pending = false;
  std::vector<nghttp2_nv> nv;
  nv.reserve(s.resp.fields.size() + 1);
  const auto make = [](std::string_view n, std::string_view v) {
    return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                      NGHTTP2_NV_FLAG_NONE};
  };
  nv.push_back(make(":status", s.resp.status));
  for (const H2Response::Field& f : s.resp.fields) {
    nv.push_back(make(std::string_view(s.resp.storage).substr(f.name_off, f.name_size),
                      std::string_view(s.resp.storage).substr(f.value_off, f.value_size)));
  }
  nghttp2_data_provider body{};
  body.source.ptr = &s;
  body.read_callback = &Connection::ReadBody;
  const bool no_body = s.resp_no_body && s.out_pending() == 0;
  if (nghttp2_submit_response(session_, s.id, nv.data(), nv.size(), no_body ? nullptr : &body) !=
      0) {
    Reset(s, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  FlushSoon();
}

void Connection::ResumeData(Stream& s) {
  if (!s.resp_submitted || s.closed || dead_) return;
  if (s.deferred) {
    s.deferred = false;
    nghttp2_session_resume_data(session_, s.id);
  }
  FlushSoon();
}

void Connection::Reset(Stream& s, uint32_t code) {
  if (s.closed || dead_) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, code);
  Flush();
}

int Connection::OnBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto s = std::make_unique<Stream>(*c, frame->hd.stream_id, c->limits_.max_header_bytes,
                                    c->worker_.dispatcher());
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s.get());
  c->streams_[frame->hd.stream_id] = std::move(s);
  return 0;
}

int Connection::OnHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                         size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    return 0;  // trailers: not forwarded (the upstream body ends with its last chunk)
  }
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (s == nullptr) return 0;
  s->builder.Add({reinterpret_cast<const char*>(name), namelen},
                 {reinterpret_cast<const char*>(value), valuelen});
  if (s->builder.bytes() > kHeaderHardFactor * s->conn.limits().max_header_bytes) {
    // An HPACK bomb: stop decoding into this stream (reset) rather than count on.
    s->conn.Count(Http2Error::kHeaderListTooLarge);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  return 0;
}

int Connection::OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  const bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (frame->hd.type == NGHTTP2_RST_STREAM) {
    const Clock::time_point now = c->worker_.Now();
    const double elapsed = std::chrono::duration<double>(now - c->reset_refill_).count();
    c->reset_refill_ = now;
    c->reset_tokens_ = std::min(kResetBurst, c->reset_tokens_ + elapsed * kResetsPerSecond);
    c->reset_tokens_ -= 1;
    if (c->reset_tokens_ < 0) {
      c->Terminate(NGHTTP2_ENHANCE_YOUR_CALM, Http2Error::kRapidReset);
      return 0;
    }
  }
  if (frame->hd.type == NGHTTP2_DATA && frame->hd.length == 0 && !end &&
      ++c->empty_frames_ > kMaxEmptyFrames) {
    c->Terminate(NGHTTP2_ENHANCE_YOUR_CALM, Http2Error::kEmptyFrames);
    return 0;
  }
  if (frame->hd.stream_id == 0) return 0;
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (s == nullptr) return 0;
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    s->end_stream_with_headers = end;
    s->chunked_in = !end && !s->builder.has_content_length() && s->builder.protocol().empty();
    if (end) s->end_in = true;
    c->to_start_.push_back(s);
    return 0;
  }
  if (end && (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS)) {
    if (s->chunked_in && !s->end_in) {
      s->in.commit(net::buffer_copy(s->in.prepare(5), net::buffer("0\r\n\r\n", 5)));
      s->appended += 5;
    }
    s->end_in = true;
    s->reader.Post({});
    if (s->ws_sink != nullptr) {
      s->ev_read = true;
      c->events_owed_ = true;
    }
  }
  return 0;
}

int Connection::OnDataChunk(nghttp2_session* session, uint8_t, int32_t stream_id,
                            const uint8_t* data, size_t len, void*) {
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (s == nullptr || s->finished || s->closed) {
    // Nobody will take these bytes: give the window back at once.
    nghttp2_session_consume(session, stream_id, len);
    return 0;
  }
  if (s->chunked_in) {
    char size_line[24];
    const int n = std::snprintf(size_line, sizeof(size_line), "%zx\r\n", len);
    s->in.commit(net::buffer_copy(s->in.prepare(static_cast<size_t>(n)),
                                  net::buffer(size_line, static_cast<size_t>(n))));
    s->appended += static_cast<uint64_t>(n);
  }
  s->in.commit(net::buffer_copy(s->in.prepare(len), net::buffer(data, len)));
  s->appended += len;
  if (s->chunked_in) {
    s->in.commit(net::buffer_copy(s->in.prepare(2), net::buffer("\r\n", 2)));
    s->appended += 2;
  }
  s->unacked += len;
  s->reader.Post({});
  if (s->ws_sink != nullptr) {
    s->ev_read = true;
    s->conn.OweEvents();
  }
  return 0;
}

int Connection::OnStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t, void* user) {
  auto* c = static_cast<Connection*>(user);
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
  if (s == nullptr) return 0;
  nghttp2_session_set_stream_user_data(session, stream_id, nullptr);
  s->closed = true;
  s->reader.Post(net::error::connection_reset);
  s->writer.Post(net::error::connection_reset);
  if (s->ws_sink != nullptr) {
    s->ev_read = s->ev_write = true;
    c->events_owed_ = true;
  }
  if (!s->running) {
    // Never started (reset before its headers ended) or already finished.
    std::erase(c->to_start_, s);
    c->streams_.erase(stream_id);
    c->ArmIdle();
    c->NotifyIfDone();
  }
  return 0;
}

ssize_t Connection::ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                             uint32_t* data_flags, nghttp2_data_source* source, void*) {
  auto* s = static_cast<Stream*>(source->ptr);
  const size_t n = std::min(length, s->out_pending());
  if (n > 0) {
    std::memcpy(buf, s->out.data() + s->out_off, n);
    s->out_off += n;
    if (s->out_pending() <= kStreamOutHigh) s->writer.Post({});
    if (s->ws_sink != nullptr) {
      s->ev_write = true;
      s->conn.OweEvents();
    }
  }
  if (s->out_pending() == 0 && s->out.capacity() > 2 * kInitialReadSize) {
    s->out.clear();
    s->out.shrink_to_fit();  // an idle tunnel keeps no buffer
    s->out_off = 0;
  }
  if (s->out_pending() == 0) {
    if (s->out_eof) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == 0) {
      s->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

int Connection::OnFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (frame->hd.type != NGHTTP2_GOAWAY) return 0;
  Http2Goaway r = Http2Goaway::kOther;
  switch (frame->goaway.error_code) {
    case NGHTTP2_NO_ERROR:
      r = Http2Goaway::kNoError;
      break;
    case NGHTTP2_PROTOCOL_ERROR:
      r = Http2Goaway::kProtocolError;
      break;
    case NGHTTP2_FLOW_CONTROL_ERROR:
      r = Http2Goaway::kFlowControlError;
      break;
    case NGHTTP2_COMPRESSION_ERROR:
      r = Http2Goaway::kCompressionError;
      break;
    case NGHTTP2_ENHANCE_YOUR_CALM:
      r = Http2Goaway::kEnhanceYourCalm;
      break;
    default:
      break;
  }
  c->worker_.counters().http2_goaways[static_cast<size_t>(r)].Add();
  return 0;
}

int Connection::OnInvalidFrame(nghttp2_session*, const nghttp2_frame*, int lib_error, void* user) {
  auto* c = static_cast<Connection*>(user);
  c->Count(lib_error == NGHTTP2_ERR_HTTP_HEADER      ? Http2Error::kBadHeader
           : lib_error == NGHTTP2_ERR_HTTP_MESSAGING ? Http2Error::kBadMessage
           : lib_error == NGHTTP2_ERR_FLOW_CONTROL   ? Http2Error::kFlowControl
                                                     : Http2Error::kProtocol);
  return 0;
}

}  // namespace

net::awaitable<uint64_t> ServeHttp2(AnyStream& stream, Worker& worker, uint32_t slot,
                                    ClientState& client, SessionLink& link,
                                    std::string_view already_read) {
  (void)link;
  std::optional<Connection> conn;
  {
    // The listener's settings are copied; the config itself is pinned per stream only.
    const Ref<WorkerConfig> cfg = worker.config();
    const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
    if (listener == nullptr) co_return 0;
    conn.emplace(stream, worker, slot, client, *listener);
  }
  if (!conn->Start(already_read)) {
    log::Warn("http2", str::Cat("cannot start an HTTP/2 session with ", client.text));
    co_return 0;
  }
  co_await conn->Wait();
  // In flight from a client told to stop: at most our connection window of DATA, plus frames.
  co_return conn->worth_lingering() ? kConnectionWindow + kLingerSlack : 0;
}

}  // namespace onedomain::dataplane::h2
