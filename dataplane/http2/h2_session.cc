#include "dataplane/http2/h2_session.h"

#include <nghttp2/nghttp2.h>

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
#include "dataplane/http_proxy/local_reply.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/http_proxy/request_record.h"
#include "dataplane/http_proxy/upstream_exchange.h"
#include "dataplane/net/any_stream.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"
#include "dataplane/worker/worker_config.h"
#include "dataplane/ws_tunnel/ws_tunnel.h"
#include "onedomain/v1/listener.pb.h"

namespace onedomain::dataplane::h2 {
namespace {

// Flow control. A stream may have this much request body in flight toward us before the
// exchange took it; all streams of a connection together, kConnectionWindow. Those bound the
// request bytes a connection can make us hold.
constexpr int32_t kStreamWindow = 128 * 1024;
constexpr int32_t kConnectionWindow = 1024 * 1024;
// A stream's response bytes waiting for the client's window: the exchange's next write waits
// while more than this is queued (so at most this plus one relay chunk per stream).
constexpr size_t kStreamOutHigh = 64 * 1024;
// Frames nghttp2 produced that the socket has not taken: reading stops above this.
constexpr size_t kWriteBacklogHigh = 256 * 1024;
// nghttp2_session_mem_send is asked for more until this much is ready for one write.
constexpr size_t kWriteBatch = 64 * 1024;
// SETTINGS_MAX_CONCURRENT_STREAMS unless the listener says otherwise.
constexpr uint32_t kDefaultMaxStreams = 100;

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
  bool end_in = false;    // END_STREAM received
  uint64_t unacked = 0;   // DATA bytes received and not yet handed back to the window
  uint64_t appended = 0;  // bytes ever appended to `in` (ReadMore's progress)
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

  bool closed = false;     // nghttp2 closed the stream (done or reset)
  bool cancelled = false;  // the exchange cancelled the client I/O (request_timeout)
  bool running = false;    // its coroutine has not ended
  bool finished = false;   // its coroutine ended: nobody takes request bytes any more

  size_t out_pending() const { return out.size() - out_off; }
};

class Connection final : public StreamEvents {
 public:
  Connection(AnyStream& stream, Worker& worker, uint32_t slot, std::string_view client_ip,
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
  std::string_view client_ip() const { return client_ip_; }
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

 private:
  // StreamEvents
  void OnReadable() override { DoRead(); }
  void OnWritable() override {
    write_blocked_ = false;
    Flush();
  }

  void DoRead();
  void StartStreams();
  void OnStreamDone(Stream* s);
  void Fail();
  void MaybeFinish();
  void WakeAll();
  void ArmIdle();
  // Wakes Wait once the connection finished and no stream is left.
  void NotifyIfDone();

  AnyStream& stream_;
  Worker& worker_;
  const uint32_t slot_;
  const std::string_view client_ip_;
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
  bool dead_ = false;      // the socket failed or the peer left: no more I/O
  bool finished_ = false;  // nothing more to do on the connection
  bool sink_set_ = false;
  Timer idle_;
  Parked done_;
};

// ---- the exchange's view of a stream -------------------------------------------------------

class H2Source final : public ByteSource {
 public:
  explicit H2Source(Stream& s) : s_(s) {}
  beast::flat_buffer& buffer() override { return s_.in; }
  net::awaitable<RelayStatus> ReadMore() override {
    Connection& c = s_.conn;
    c.Consume(s_);  // what is in the buffer now was taken into account by the caller
    const uint64_t before = s_.appended;
    const Clock::time_point until = c.worker().Now() + c.limits().body_timeout;
    for (;;) {
      if (s_.appended != before) co_return RelayStatus::kOk;
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
    if (s_.closed) co_return RelayStatus::kDstError;
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
      if (ec == net::error::timed_out) co_return RelayStatus::kDstTimeout;
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
    s_.resp_pending = true;
    s_.resp_no_body = head.no_body || head.status == 101 ||
                      (head.framing.content_length && *head.framing.content_length == 0);
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
    if (end == std::string_view::npos || !ConvertResponseHead(all.substr(0, end + 4), false, s_.resp)) {
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

// The phases and the exchange for one stream; the HTTP/1.1 session's ServeRequest, minus
// keep-alive.
net::awaitable<void> ServeStream(Stream& s, H2Client& client, RequestRecord& record,
                                 WorkerConfig& cfg, const CompiledListener& listener,
                                 std::string& target_storage) {
  Connection& c = s.conn;
  RequestHead& head = s.head;
  const bool head_method = head.method == http::verb::head;
  if (s.builder.too_large()) {
    client.Reply(ProxyError{ProxyErrorKind::kHeaderTooLarge}, record, head_method);
    co_return;
  }
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
                            ExchangeMode::kHttp};
  ExchangeResult result = co_await RunExchange(client, req, c.worker(), bufs);
  (void)result;  // a stream carries one exchange: keep-alive is the connection's business
}

net::awaitable<void> RunStream(Stream& s) {
  Connection& c = s.conn;
  Worker& worker = c.worker();
  RequestRecord record;
  record.route_counters = &worker.no_route_counters();
  record.start = worker.Now();
  const Ref<WorkerConfig> cfg = worker.config();
  const CompiledListener* listener = cfg ? cfg->listener(c.slot()) : nullptr;
  if (listener == nullptr) {
    c.Reset(s, NGHTTP2_REFUSED_STREAM);  // the listener was removed: finish here
    co_return;
  }
  H2Client client(s);
  std::string_view error;
  std::string log_method, log_target, target_storage;
  if (!s.builder.Finish(s.head, s.end_stream_with_headers, error)) {
    client.Reply(ProxyError{ProxyErrorKind::kMalformedRequest, error}, record, false);
  } else {
    const AccessContext access = MakeAccess(c, s.head, log_method, log_target);
    co_await ServeStream(s, client, record, *cfg, *listener, target_storage);
    FinishRequest(record, access, worker.Now());
  }
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

Connection::Connection(AnyStream& stream, Worker& worker, uint32_t slot, std::string_view client_ip,
                       const CompiledListener& listener)
    : stream_(stream),
      worker_(worker),
      slot_(slot),
      client_ip_(client_ip),
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
      done_(worker.dispatcher()) {}

Connection::~Connection() {
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
  if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size()) != 0 ||
      nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow) !=
          0) {
    return false;
  }
  stream_.SetEventSink(this);
  sink_set_ = true;
  if (!already_read.empty()) {
    const auto* p = reinterpret_cast<const uint8_t*>(already_read.data());
    if (nghttp2_session_mem_recv(session_, p, already_read.size()) < 0) {
      Fail();
      return true;
    }
    StartStreams();
  }
  idle_.Arm(limits_.header_timeout);
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
  uint8_t* scratch = worker_.ws_tunnels().scratch();
  for (;;) {
    error_code ec;
    const size_t n = stream_.TryRead(net::buffer(scratch, WsTunnelSet::kScratchSize), ec);
    if (ec == net::error::would_block) break;
    if (ec) {
      // The client's end (or a failure): what is in flight toward it cannot arrive.
      dead_ = true;
      break;
    }
    const ssize_t rv = nghttp2_session_mem_recv(session_, scratch, n);
    if (rv < 0) {
      log::Debug("http2", str::Cat("session error with ", client_ip_, ": ",
                                   nghttp2_strerror(static_cast<int>(rv))));
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
  std::vector<Stream*> start;
  start.swap(to_start_);
  for (Stream* s : start) {
    if (s->closed) continue;
    s->running = true;
    idle_.Disarm();
    worker_.dispatcher().Spawn(RunStream(*s), "http2 stream", [this, s] { OnStreamDone(s); });
  }
}

void Connection::OnStreamDone(Stream* s) {
  s->running = false;
  s->finished = true;
  if (s->closed) streams_.erase(s->id);
  Flush();
  ArmIdle();
  MaybeFinish();
  NotifyIfDone();
}

void Connection::NotifyIfDone() {
  if (finished_ && streams_.empty()) done_.Post({});
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
    error_code ec;
    const net::const_buffer b(wbuf_.data() + woff_, wbuf_.size() - woff_);
    const size_t n = stream_.TryWrite(&b, 1, ec);
    if (ec == net::error::would_block) {
      write_blocked_ = true;
      break;
    }
    if (ec) {
      dead_ = true;
      break;
    }
    woff_ += n;
    if (woff_ == wbuf_.size()) {
      wbuf_.clear();
      woff_ = 0;
    }
  }
  if (wbuf_.capacity() > 4 * kWriteBatch && wbuf_.empty()) wbuf_.shrink_to_fit();
  flushing_ = false;
  if (dead_) WakeAll();
  if (read_paused_ && wbuf_.size() - woff_ <= kWriteBacklogHigh / 2) {
    read_paused_ = false;
    DoRead();
  }
  MaybeFinish();
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

void Connection::Consume(Stream& s) {
  if (s.unacked == 0 || s.closed || dead_) return;
  nghttp2_session_consume(session_, s.id, s.unacked);
  s.unacked = 0;
  Flush();
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
  Flush();
}

void Connection::ResumeData(Stream& s) {
  if (!s.resp_submitted || s.closed || dead_) return;
  if (s.deferred) {
    s.deferred = false;
    nghttp2_session_resume_data(session_, s.id);
  }
  Flush();
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
                         size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                         void*) {
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    return 0;  // trailers: not forwarded (the upstream body ends with its last chunk)
  }
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (s == nullptr) return 0;
  s->builder.Add({reinterpret_cast<const char*>(name), namelen},
                 {reinterpret_cast<const char*>(value), valuelen});
  return 0;
}

int Connection::OnFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
  auto* c = static_cast<Connection*>(user);
  if (frame->hd.stream_id == 0) return 0;
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (s == nullptr) return 0;
  const bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
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

}  // namespace

net::awaitable<void> ServeHttp2(AnyStream& stream, Worker& worker, uint32_t slot,
                                std::string_view client_ip, SessionLink& link,
                                std::string_view already_read) {
  (void)link;
  std::optional<Connection> conn;
  {
    // The listener's settings are copied; the config itself is pinned per stream only.
    const Ref<WorkerConfig> cfg = worker.config();
    const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
    if (listener == nullptr) co_return;
    conn.emplace(stream, worker, slot, client_ip, *listener);
  }
  if (!conn->Start(already_read)) {
    log::Warn("http2", str::Cat("cannot start an HTTP/2 session with ", client_ip));
    co_return;
  }
  co_await conn->Wait();
}

}  // namespace onedomain::dataplane::h2
