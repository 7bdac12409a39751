#include "dataplane/http2/h2_connection.h"

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

// The exchange scratch (the upstream read buffer, the rendered heads, the parsed response)
// of this worker thread's streams. An HTTP/1.1 session keeps one for all its requests; an
// HTTP/2 stream carries one request, so it borrows one here instead of allocating the
// 16 KiB read buffer and the head strings per request. Bounded in count and in what each
// keeps; a buffer that grew past kPooledReadBytes (a large relayed head) is freed instead.
constexpr size_t kPooledBuffers = 64;
constexpr size_t kPooledReadBytes = 64 * 1024;

class BorrowedBuffers {
 public:
  BorrowedBuffers() {
    std::vector<std::unique_ptr<ExchangeBuffers>>& pool = Pool();
    if (pool.empty()) {
      bufs_ = std::make_unique<ExchangeBuffers>();
    } else {
      bufs_ = std::move(pool.back());
      pool.pop_back();
    }
  }
  ~BorrowedBuffers() {
    std::vector<std::unique_ptr<ExchangeBuffers>>& pool = Pool();
    // RunExchange clears what it reads before it reads (as for a keep-alive session).
    if (pool.size() < kPooledBuffers && bufs_->upstream_in.capacity() <= kPooledReadBytes &&
        bufs_->request_head.capacity() <= kPooledReadBytes &&
        bufs_->response_head.capacity() <= kPooledReadBytes) {
      pool.push_back(std::move(bufs_));
    }
  }
  BorrowedBuffers(const BorrowedBuffers&) = delete;
  BorrowedBuffers& operator=(const BorrowedBuffers&) = delete;

  ExchangeBuffers& get() { return *bufs_; }

 private:
  // Per worker thread: streams never leave the worker that accepted their connection.
  static std::vector<std::unique_ptr<ExchangeBuffers>>& Pool() {
    thread_local std::vector<std::unique_ptr<ExchangeBuffers>> pool;
    return pool;
  }

  std::unique_ptr<ExchangeBuffers> bufs_;
};

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

// ---- the exchange's view of a stream -------------------------------------------------------

class H2Source final : public ByteSource {
 public:
  explicit H2Source(Stream& s) : s_(s) {}
  beast::flat_buffer& buffer() override { return s_.in; }
  net::awaitable<RelayStatus> ReadMore() override {
    Connection& c = s_.conn;
    c.Consume(s_);  // the caller took what it has seen: its window goes back
    // Bytes arrive in the background, also while the caller was writing what it took: those
    // that came before this call are news too. They join the buffer only here, where the
    // caller holds no pointer into it.
    const Clock::time_point until = c.worker().Now() + c.limits().body_timeout;
    for (;;) {
      if (s_.arriving.size() > 0) {
        s_.TakeArriving();
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
  // The bytes go to the stream's queue at once; only a queue over kStreamOutHigh waits.
  bool TryWriteNow(net::const_buffer& a, net::const_buffer& b, uint64_t& written,
                   RelayStatus& status) override {
    if (s_.closed || s_.bad_accept) {
      status = RelayStatus::kDstError;
      return true;
    }
    if (s_.cancelled) {
      status = RelayStatus::kCancelled;
      return true;
    }
    if (s_.out_pending() + a.size() + b.size() > kStreamOutHigh) return false;
    Queue(a, b, written);
    a = {};
    b = {};
    status = s_.closed ? RelayStatus::kDstError : RelayStatus::kOk;
    return true;
  }
  net::awaitable<RelayStatus> Write(net::const_buffer a, net::const_buffer b,
                                    uint64_t& written) override {
    Connection& c = s_.conn;
    if (s_.closed || s_.bad_accept) co_return RelayStatus::kDstError;
    if (s_.cancelled) co_return RelayStatus::kCancelled;
    Queue(a, b, written);
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
  void Queue(net::const_buffer a, net::const_buffer b, uint64_t& written) {
    if (s_.resp_pending && !s_.resp_submitted) s_.conn.SubmitResponse(s_);
    Append(a);
    Append(b);
    written += a.size() + b.size();
    s_.conn.ResumeData(s_);
  }
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
    // The fields an HTTP/1.1 client would get (cookie policy and all), as HTTP/2 fields;
    // nothing goes to `out`: the head leaves as a HEADERS frame with the first body bytes.
    params.client_version = 11;
    params.close = false;
    params.dechunk = false;
    if (head.status / 100 == 1 && head.status != 101) {
      // Interim (102, 103 Early Hints, an unsolicited 100): a HEADERS frame of its own now.
      H2Response interim;
      if (ConvertResponseHead(head, params, false, interim)) s_.conn.SubmitInterim(s_, interim);
      return;
    }
    if (!ConvertResponseHead(head, params, params.keep_upgrade, s_.resp)) {
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
  net::awaitable<bool> SendContinue() override { co_return SendContinueNow(); }
  net::awaitable<bool> SendLocalReply(const ProxyError& error, RequestRecord& record,
                                      SendReplyOptions options) override {
    Reply(error, record, options.head_request);
    co_return false;
  }
  // Expect: 100-continue answered (RFC 9110 10.1.1): the client sends its body after this.
  bool SendContinueNow() {
    H2Response interim;
    interim.status = "100";
    if (!s_.conn.SubmitInterim(s_, interim)) return false;
    s_.head.continue_sent = true;
    return true;
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
// HTTP/1.1 codec does (request_buffer_bytes within body_timeout), answering Expect:
// 100-continue first when the body is not all here.
net::awaitable<std::optional<ProxyError>> BufferBodyStart(Stream& s, H2Client& client,
                                                          uint64_t limit) {
  const ListenerLimits& limits = s.conn.limits();
  if (limits.request_buffer_bytes == 0 || !HasRequestBody(s.head)) co_return std::nullopt;
  H2Source& source = static_cast<H2Source&>(client.request_body());
  for (;;) {
    s.TakeArriving();  // nothing is being written from `in` yet
    const std::string_view all(static_cast<const char*>(s.in.data().data()), s.in.size());
    const BufferedBody b = ProbeBufferedBody(s.head.framing, all, limit);
    if (b.error) co_return b.error;
    if (b.complete || s.in.size() >= limits.request_buffer_bytes) co_return std::nullopt;
    if (s.head.expect_continue && !s.head.continue_sent && !client.SendContinueNow()) {
      co_return ProxyError{ProxyErrorKind::kBodyTimeout, "client gone"};
    }
    const RelayStatus st = co_await source.ReadMore();
    if (st == RelayStatus::kSrcTimeout) co_return ProxyError{ProxyErrorKind::kBodyTimeout};
    if (st != RelayStatus::kOk) {
      co_return ProxyError{ProxyErrorKind::kMalformedRequest,
                           "the client ended the stream before sending its body"};
    }
  }
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
  s.TakeArriving();  // what came with the request is the start of its body
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
  if (c.limits().request_buffer_bytes != 0 && HasRequestBody(head)) {  // else nothing to wait for
    if (auto body_error = co_await BufferBodyStart(s, client, limit)) {
      client.Reply(*body_error, record, head_method);
      co_return;
    }
  }
  BorrowedBuffers bufs;
  const ExchangeRequest req{head,
                            *route,
                            *cfg.clusters[route->cluster_index],
                            record,
                            c.client_ip(),
                            c.forwarded_proto(),
                            listener.limits.max_header_bytes,
                            limit,
                            /*keep_alive_ok=*/true,
                            /*client_takes_interim=*/true,
                            /*client_takes_chunked=*/true,
                            ExchangeMode::kHttp,
                            c.client().replace_forwarded_for};
  s.TakeArriving();  // what came with the request is the start of its body
  ExchangeResult result = co_await RunExchange(client, req, c.worker(), bufs.get());
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

}  // namespace

void Stream::TakeArriving() {
  if (arriving.size() == 0) return;
  if (in.size() == 0) {
    using std::swap;
    swap(in, arriving);
    return;
  }
  in.commit(net::buffer_copy(in.prepare(arriving.size()), arriving.data()));
  arriving.consume(arriving.size());
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

}  // namespace onedomain::dataplane::h2
