#include "dataplane/http_proxy/http_session.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/http_proxy/body_relay.h"
#include "dataplane/http_proxy/client_limits_phase.h"
#include "dataplane/http_proxy/local_reply.h"
#include "dataplane/http_proxy/message_head.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/http_proxy/request_record.h"
#include "dataplane/http_proxy/session_context.h"
#include "dataplane/http_proxy/upstream_exchange.h"
#include "dataplane/http_proxy/ws_upgrade_checks.h"
#include "dataplane/net/tls_context.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"
#include "dataplane/worker/worker_config.h"
#include "dataplane/ws_tunnel/ws_tunnel.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::dataplane {
namespace {

// After we decide to close while the client may still be sending (an error mid-upload), a
// plain close would reset the connection and could destroy our answer in flight. Read and
// drop for a short while first (nginx's lingering close).
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr uint64_t kLingerBytes = 4 * 1024 * 1024;
// Waiting for the peer's TLS close_notify.
constexpr auto kShutdownTime = std::chrono::milliseconds(500);

// Keeps the worker's session list and connection gauges right for the life of a session.
class SessionScope {
 public:
  SessionScope(Worker& worker, SessionLink& link) : worker_(worker), link_(link) {
    worker_.AddSession(&link_);
    worker_.counters().downstream_active.Inc();
    worker_.counters().downstream_total.Add();
  }
  ~SessionScope() {
    worker_.RemoveSession(&link_);
    worker_.counters().downstream_active.Dec();
  }
  SessionScope(const SessionScope&) = delete;
  SessionScope& operator=(const SessionScope&) = delete;

 private:
  Worker& worker_;
  SessionLink& link_;
};

// Per-request access-log context; copies the head's method and target only when the log is
// on, since those views die with the read buffer.
AccessContext MakeAccessContext(Worker& worker, const Downstream& down, const RequestHead* head,
                                std::string& method, std::string& target) {
  AccessContext a;
  a.log = worker.access_log();
  if (a.log == nullptr) return a;
  a.scratch = &worker.log_scratch();
  a.client = down.client_ip;
  a.listener = down.listener.name;
  if (head != nullptr) {
    method.assign(head->method_text);
    target.assign(head->target);
    a.version = head->version;
  } else {
    method.clear();
    target.clear();
  }
  a.method = method;
  a.target = target;
  return a;
}

// Drops what the client still sends, for a bounded time and amount, then returns.
net::awaitable<void> Linger(AnyStream& stream, Timer& deadline, beast::flat_buffer& scratch,
                            uint64_t max_bytes = kLingerBytes) {
  // Tell the client the answer is complete first (FIN, and close_notify on TLS): it must not
  // wait for the linger to end.
  stream.ShutdownSend();
  deadline.Arm(kLingerTime);
  uint64_t dropped = 0;
  while (dropped < max_bytes) {
    scratch.clear();
    const IoResult r = co_await stream.ReadSome(scratch.prepare(kInitialReadSize));
    if (r.ec) break;
    dropped += r.n;
  }
  deadline.Disarm();
}

// The HTTP/1.1 codec's side of an exchange: the request body from the client's socket (the
// bytes already read first) under body_timeout, the response to it under idle_timeout.
class Http1Client final : public ExchangeClient {
 public:
  Http1Client(Downstream& down, std::string& reply_scratch, int version)
      : down_(down),
        reply_scratch_(reply_scratch),
        version_(version),
        body_(down.stream, down.deadline, down.listener.limits.body_timeout, down.in),
        out_(down.stream, down.deadline, down.listener.limits.idle_timeout) {}

  ByteSource& request_body() override { return body_; }
  ByteSink& response_out() override { return out_; }
  void RenderResponseHead(const ResponseHead& head, DownstreamHeadParams params,
                          std::string& out) override {
    params.client_version = version_;
    AppendDownstreamResponseHead(head, params, out);
  }
  net::awaitable<bool> SendContinue() override {
    uint64_t written = 0;
    co_return co_await out_.Write(net::buffer(kContinueResponse), {}, written) == RelayStatus::kOk;
  }
  net::awaitable<bool> SendLocalReply(const ProxyError& error, RequestRecord& record,
                                      SendReplyOptions options) override {
    co_return co_await dataplane::SendLocalReply(down_, error, record, options, reply_scratch_);
  }
  void CancelIo() override { down_.stream.Cancel(); }

 private:
  Downstream& down_;
  std::string& reply_scratch_;
  const int version_;
  StreamSource body_;
  StreamSink out_;
};

// Reads the start of the request's body into `down.in` before any upstream connection is
// taken: all of it, or the listener's request_buffer_bytes, within its body_timeout (nginx
// buffers bodies the same way, so a slow upload pins no backend connection). Answers
// Expect: 100-continue first when the body is not here yet. Keeps `head`'s views valid when
// the buffer grows. An error means the request is answered with it and the connection closes.
net::awaitable<std::optional<ProxyError>> ReadRequestBodyStart(Downstream& down, RequestHead& head,
                                                               uint64_t body_limit) {
  const ListenerLimits& limits = down.listener.limits;
  if (limits.request_buffer_bytes == 0 || !HasRequestBody(head)) co_return std::nullopt;
  const auto probe = [&] {
    const std::string_view all(static_cast<const char*>(down.in.data().data()), down.in.size());
    return ProbeBufferedBody(head.framing, all.substr(head.header_bytes), body_limit);
  };
  BufferedBody b = probe();
  const auto enough = [&] {
    return b.error || b.complete ||
           down.in.size() - head.header_bytes >= limits.request_buffer_bytes;
  };
  if (enough()) co_return b.error;
  if (head.expect_continue && head.version >= 11) {
    // The client waits for this before it sends the body.
    down.deadline.Arm(limits.idle_timeout);
    const IoResult w = co_await down.stream.Write(net::buffer(kContinueResponse));
    down.deadline.Disarm();
    if (w.ec) co_return ProxyError{ProxyErrorKind::kBodyTimeout, "client gone"};
    head.continue_sent = true;
  }
  down.deadline.Arm(limits.body_timeout);
  while (!enough()) {
    const char* base = static_cast<const char*>(down.in.data().data());
    const size_t size = down.in.size();
    const IoResult r = co_await down.stream.ReadSome(down.in.prepare(kInitialReadSize));
    const bool timed_out = down.deadline.fired();
    if (r.ec) {
      down.deadline.Disarm();
      co_return timed_out ? ProxyError{ProxyErrorKind::kBodyTimeout}
                          : ProxyError{ProxyErrorKind::kMalformedRequest,
                                       "the client closed before sending its body"};
    }
    down.in.commit(r.n);
    head.Rebase(base, size, static_cast<const char*>(down.in.data().data()));
    b = probe();
  }
  down.deadline.Disarm();
  co_return b.error;
}

// One client connection's HTTP/1.1 state, on ServeConnection's frame; the functions below
// borrow it.
struct Session {
  Session(AnyStream& st, Worker& w, uint32_t sl, ClientState& c, SessionLink& l,
          Clock::time_point acc, beast::flat_buffer& i)
      : stream(st),
        worker(w),
        slot(sl),
        client(c),
        link(l),
        accepted(acc),
        in(i),
        deadline(w.dispatcher(), [&st] { st.Cancel(); }) {
    head.fields.reserve(32);
  }

  // The session's clock: the worker's (a manual one in tests).
  Clock::time_point now() const { return worker.Now(); }

  AnyStream& stream;
  Worker& worker;
  const uint32_t slot;
  ClientState& client;  // the connection's (ServeConnection's frame)
  SessionLink& link;
  const Clock::time_point accepted;
  beast::flat_buffer& in;  // survives keep-alive and the upgrade hand-off
  Timer deadline;          // client I/O
  ExchangeBuffers bufs;
  RequestHead head;
  std::string log_method, log_target;
  std::string target_storage;           // a normalised request-target, when it differs
  bool first = true;                    // the connection's first request
  std::unique_ptr<WsHandoff> upgraded;  // set when an upgrade got its 101
};

// What the connection does after a step of the keep-alive loop.
enum class Next : uint8_t { kServe, kClose, kLingerClose };

// Answers a request that failed before it had a usable head, and logs it.
net::awaitable<void> ReplyWithoutHead(Session& s, Downstream& down, RequestRecord& record,
                                      const ProxyError& error) {
  co_await SendLocalReply(down, error, record, {}, s.bufs.response_head);
  FinishRequest(record, MakeAccessContext(s.worker, down, nullptr, s.log_method, s.log_target),
                s.now());
}

// Idle until the first byte (keep-alive), or header timeout from accept (first request).
net::awaitable<Next> AwaitRequest(Session& s, Downstream& down, RequestRecord& record) {
  if (s.in.size() != 0) co_return Next::kServe;
  if (s.worker.draining() && !s.first) co_return Next::kClose;
  const ListenerLimits& limits = down.listener.limits;
  s.link.idle = true;
  if (s.first) {
    s.deadline.ArmAt(s.accepted + limits.header_timeout);
    if (limits.header_timeout.count() <= 0) s.deadline.Disarm();
  } else {
    s.deadline.Arm(limits.idle_timeout);
  }
  const IoResult r = co_await s.stream.ReadSome(s.in.prepare(kInitialReadSize));
  const bool timed_out = s.deadline.fired();
  s.deadline.Disarm();
  s.link.idle = false;
  if (r.ec) {
    if (!(s.first && timed_out)) co_return Next::kClose;  // closed, idle timeout, or drain
    record.start = s.now();
    co_await ReplyWithoutHead(s, down, record, ProxyError{ProxyErrorKind::kHeaderTimeout});
    co_return Next::kClose;
  }
  s.in.commit(r.n);
  co_return Next::kServe;
}

// The head, under the header deadline (from accept for the first request, else from its
// first byte). Errors are answered here.
net::awaitable<Next> ReadHead(Session& s, Downstream& down, RequestRecord& record) {
  const ListenerLimits& limits = down.listener.limits;
  record.start = s.now();
  if (limits.header_timeout.count() > 0) {
    s.deadline.ArmAt((s.first ? s.accepted : record.start) + limits.header_timeout);
  }
  s.first = false;
  error_code parse_error;
  RequestHeadParser parser(s.head, limits.max_header_bytes);
  for (;;) {
    const std::string_view bytes(static_cast<const char*>(s.in.data().data()), s.in.size());
    if (parser.Feed(bytes, parse_error) || parse_error) break;
    const IoResult r = co_await s.stream.ReadSome(s.in.prepare(kInitialReadSize));
    if (r.ec) {
      const bool timed_out = s.deadline.fired();
      s.deadline.Disarm();
      if (!timed_out) co_return Next::kClose;  // the client went away mid-head
      co_await ReplyWithoutHead(s, down, record, ProxyError{ProxyErrorKind::kHeaderTimeout});
      co_return Next::kLingerClose;
    }
    s.in.commit(r.n);
  }
  s.deadline.Disarm();
  if (parse_error) {
    co_await ReplyWithoutHead(s, down, record, ClassifyRequestParseError(s.head, parse_error));
    co_return Next::kLingerClose;
  }
  s.worker.counters().bytes_received.Add(s.head.header_bytes);
  co_return Next::kServe;
}

// The request on `route` through the upstream exchange; the head's bytes leave `in` here
// (its views stay valid until the buffer is next read into, and the exchange reads them
// only before that).
net::awaitable<bool> ProxyRequest(Session& s, Downstream& down, RequestRecord& record,
                                  WorkerConfig& cfg, const CompiledRoute& route, ExchangeMode mode,
                                  uint64_t body_limit) {
  const RequestHead& head = s.head;
  Http1Client client(down, s.bufs.response_head, head.version);
  const ExchangeRequest req{head,
                            route,
                            *cfg.clusters[route.cluster_index],
                            record,
                            down.client_ip,
                            down.listener.forwarded_proto,
                            down.listener.limits.max_header_bytes,
                            body_limit,
                            head.framing.keep_alive && !s.worker.draining(),
                            head.version >= 11,
                            head.version >= 11,
                            mode,
                            s.client.replace_forwarded_for};
  s.in.consume(head.header_bytes);
  ExchangeResult result = co_await RunExchange(client, req, s.worker, s.bufs);
  // On a 101 the session ends here and ServeConnection runs the tunnel once this frame (and
  // its HTTP buffers) is gone.
  s.upgraded = std::move(result.upgraded);
  co_return result.keep_alive;
}

// The request phases after the head: checks, route, the upgrade branch, limits; then the
// exchange. Returns whether the connection may carry another request.
net::awaitable<bool> ServeRequest(Session& s, Downstream& down, RequestRecord& record,
                                  WorkerConfig& cfg) {
  RequestHead& head = s.head;
  const bool head_method = head.method == http::verb::head;
  const bool has_body = HasRequestBody(head);
  const bool keep_ok = head.framing.keep_alive && !s.worker.draining();
  std::string& out = s.bufs.response_head;
  std::optional<ProxyError> bad_request = NormalizeRequest(head, s.target_storage);
  if (!bad_request) bad_request = CheckRequest(head);
  if (bad_request) {
    co_return co_await SendLocalReply(down, *bad_request, record, {.head_request = head_method},
                                      out);
  }
  const CompiledRoute* route = cfg.routes().Match(head.host, PathOfTarget(head.target));
  if (route == nullptr) {
    if (!has_body) s.in.consume(head.header_bytes);
    co_return co_await SendLocalReply(down, ProxyError{ProxyErrorKind::kNoRoute}, record,
                                      {head_method, keep_ok, !has_body}, out);
  }
  record.route_counters = cfg.route_counters[route->index];
  record.route_name = route->name;
  const uint64_t limit = route->max_body_bytes.value_or(down.listener.limits.max_body_bytes);
  if (IsWebSocketUpgrade(head)) {
    // Policy first: a refused upgrade never opens an upstream connection.
    if (auto refusal = CheckUpgrade(head, *route, cfg.compiled->source->site().origins())) {
      record.route_counters->RecordUpgrade(refusal->result);
      if (!has_body) s.in.consume(head.header_bytes);
      co_return co_await SendLocalReply(down, refusal->error, record, {false, keep_ok, !has_body},
                                        out);
    }
    // Client limits next (429), still before any upstream connection.
    if (auto limited = CheckClientLimits(s.client, cfg, *route, head, true, s.worker,
                                         *record.route_counters)) {
      if (!has_body) s.in.consume(head.header_bytes);
      co_return co_await SendLocalReply(down, *limited, record, {false, keep_ok, !has_body}, out);
    }
    const bool keep =
        co_await ProxyRequest(s, down, record, cfg, *route, ExchangeMode::kUpgrade, limit);
    if (!s.upgraded) ReleaseWebSocketCounts(s.client);  // no tunnel: its counts go back
    co_return keep;
  }
  if (auto limited =
          CheckClientLimits(s.client, cfg, *route, head, false, s.worker, *record.route_counters)) {
    if (!has_body) s.in.consume(head.header_bytes);
    co_return co_await SendLocalReply(down, *limited, record, {head_method, keep_ok, !has_body},
                                      out);
  }
  if (auto too_large = CheckBodyLimit(head, limit)) {
    co_return co_await SendLocalReply(down, *too_large, record, {.head_request = head_method}, out);
  }
  if (auto body_error = co_await ReadRequestBodyStart(down, head, limit)) {
    co_return co_await SendLocalReply(down, *body_error, record, {.head_request = head_method},
                                      out);
  }
  co_return co_await ProxyRequest(s, down, record, cfg, *route, ExchangeMode::kHttp, limit);
}

// The keep-alive loop. Returns whether to linger before closing.
net::awaitable<bool> ServeRequests(Session& s) {
  for (;;) {
    // Pin the config for this request: a switch now affects only the next one.
    const Ref<WorkerConfig> cfg = s.worker.config();
    const CompiledListener* listener = cfg ? cfg->listener(s.slot) : nullptr;
    if (listener == nullptr) co_return false;  // the listener was removed: finish here
    Downstream down{s.stream, s.deadline, s.in, s.worker, s.client.text, *listener, &s.client};
    RequestRecord record;
    record.route_counters = &s.worker.no_route_counters();

    Next next = co_await AwaitRequest(s, down, record);
    if (next == Next::kServe) next = co_await ReadHead(s, down, record);
    if (next != Next::kServe) co_return next == Next::kLingerClose;
    if (!s.client.decided) {  // a trusted proxy's first request names the client
      if (!DecideClientFromForwardedFor(s.client, s.head, cfg->compiled->client_limits, s.worker)) {
        co_return false;
      }
      down.client_ip = s.client.text;
    }
    const AccessContext access =
        MakeAccessContext(s.worker, down, &s.head, s.log_method, s.log_target);
    const bool keep_alive = co_await ServeRequest(s, down, record, *cfg);
    FinishRequest(record, access, s.now());
    if (!keep_alive) co_return true;

    // A burst of large headers or bodies may have grown the buffers; do not keep that
    // memory on an idle keep-alive connection.
    if (s.in.size() == 0 && s.in.capacity() > 4 * kInitialReadSize) s.in.shrink_to_fit();
    if (s.bufs.upstream_in.capacity() > 4 * kInitialReadSize) s.bufs.upstream_in.shrink_to_fit();
  }
}

// The HTTP/1.1 codec on a connection. Its state lives on this frame, so that it is gone
// (buffers and all) before a tunnel starts. Returns whether to linger before closing; sets
// `upgraded` when an upgrade got its 101.
net::awaitable<bool> RunHttpSession(AnyStream& stream, Worker& worker, uint32_t slot,
                                    ClientState& client, SessionLink& link,
                                    Clock::time_point accepted, beast::flat_buffer& in,
                                    std::unique_ptr<WsHandoff>& upgraded) {
  Session s(stream, worker, slot, client, link, accepted, in);
  const bool linger = co_await ServeRequests(s);
  upgraded = std::move(s.upgraded);
  co_return linger;
}

// Answers plain HTTP sent to a TLS port with a readable 400, then closes.
net::awaitable<void> RefusePlainHttp(AnyStream& stream, Worker& worker,
                                     const CompiledListener& listener, std::string_view client_ip,
                                     SessionLink& link) {
  SessionScope scope(worker, link);
  link.stream = &stream;
  beast::flat_buffer in;
  Timer deadline(worker.dispatcher(), [&stream] { stream.Cancel(); });
  Downstream down{stream, deadline, in, worker, client_ip, listener};
  RequestRecord record;
  record.route_counters = &worker.no_route_counters();
  record.start = worker.Now();
  std::string out, method, target;
  co_await SendLocalReply(down, ProxyError{ProxyErrorKind::kPlainHttpOnTlsPort}, record, {}, out);
  FinishRequest(record, MakeAccessContext(worker, down, nullptr, method, target), worker.Now());
  co_await Linger(stream, deadline, in);
  stream.Close();
}

// On a TLS listener: peeks at the first byte and turns the stream TLS when it starts a
// ClientHello; answers plain HTTP itself. Returns whether the session goes on.
net::awaitable<bool> StartTlsIfListening(AnyStream& stream, Worker& worker, uint32_t slot,
                                         std::string_view client_ip, SessionLink& link) {
  const Ref<WorkerConfig> cfg = worker.config();
  const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
  if (listener == nullptr) co_return false;  // removed between accept and now
  if (!listener->tls) co_return true;
  // Plain HTTP to a TLS port gets a readable answer instead of a handshake failure:
  // a TLS ClientHello starts with 0x16 (handshake record).
  Timer peek_deadline(worker.dispatcher(), [&stream] { stream.Cancel(); });
  peek_deadline.Arm(listener->limits.header_timeout);
  char first = 0;
  for (;;) {
    error_code ec;
    const size_t n = stream.TryPeek(net::buffer(&first, 1), ec);
    if (n == 1) break;
    if (ec != net::error::would_block) co_return false;  // gone before saying anything
    const error_code wec = co_await stream.WaitReadable();
    if (wec || peek_deadline.fired()) co_return false;
  }
  peek_deadline.Disarm();
  if (first != 0x16) {
    co_await RefusePlainHttp(stream, worker, *listener, client_ip, link);
    co_return false;
  }
  if (const error_code ec = stream.StartTls(listener->tls->native_handle()); ec) {
    log::Warn("http", str::Cat("cannot start TLS with ", client_ip, ": ", ec.message()));
    co_return false;
  }
  co_return true;
}

// The HTTP/2 connection preface (RFC 9113 3.4).
constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// On a plain listener with http2.prior_knowledge: reads the client's first bytes into `in`
// until they are the HTTP/2 preface (true) or cannot be (false: they stay in `in` for the
// HTTP/1.1 codec, which reads on from there).
net::awaitable<bool> StartsWithHttp2Preface(AnyStream& stream, Worker& worker, uint32_t slot,
                                            Clock::time_point accepted, beast::flat_buffer& in) {
  {
    const Ref<WorkerConfig> cfg = worker.config();
    const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
    if (listener == nullptr || listener->tls || !listener->source.http2().prior_knowledge()) {
      co_return false;
    }
  }
  for (;;) {
    const std::string_view got(static_cast<const char*>(in.data().data()), in.size());
    const size_t n = std::min(got.size(), kHttp2Preface.size());
    if (got.substr(0, n) != kHttp2Preface.substr(0, n)) co_return false;
    if (n == kHttp2Preface.size()) co_return true;
    // The HTTP/1.1 codec's first read runs under the same header deadline from accept.
    const Ref<WorkerConfig> cfg = worker.config();
    const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
    if (listener == nullptr) co_return false;
    Timer deadline(worker.dispatcher(), [&stream] { stream.Cancel(); });
    deadline.ArmAt(accepted + listener->limits.header_timeout);
    const IoResult r = co_await stream.ReadSome(in.prepare(kInitialReadSize));
    deadline.Disarm();
    if (r.ec) co_return false;  // the HTTP/1.1 codec sees the end (or times out) itself
    in.commit(r.n);
  }
}

// Everything on a connection before a WebSocket tunnel: the TLS handshake, then HTTP/2 or
// HTTP/1.1 requests. A coroutine of its own so that its locals are gone while an upgraded
// connection idles in its tunnel: a coroutine's frame keeps a slot for every local of every
// scope, and ServeConnection's frame is part of what each idle WebSocket costs.
// `upgraded`: the handoff of a WebSocket upgrade, to run as a tunnel. False when the stream
// is already closed (no shutdown to wait for).
net::awaitable<bool> ServeRequests(AnyStream& stream, Worker& worker, uint32_t slot,
                                   Http2Codec http2, ClientState& client, SessionLink& link,
                                   Clock::time_point accepted, Timer& deadline,
                                   std::unique_ptr<WsHandoff>& upgraded) {
  if (stream.is_tls()) {
    const Ref<WorkerConfig> cfg = worker.config();
    const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
    if (listener == nullptr) co_return false;
    deadline.ArmAt(accepted + listener->limits.header_timeout);
    const error_code ec = co_await stream.Handshake();
    deadline.Disarm();
    if (ec) {
      log::Debug("http", str::Cat("TLS handshake with ", client.text, " failed: ", ec.message()));
      stream.Close();
      co_return false;
    }
  }
  beast::flat_buffer in;
  if (http2 != nullptr &&
      (stream.alpn() == "h2" ||
       (!stream.is_tls() && co_await StartsWithHttp2Preface(stream, worker, slot, accepted, in)))) {
    const std::string_view already(static_cast<const char*>(in.data().data()), in.size());
    if (const uint64_t linger = co_await http2(stream, worker, slot, client, link, already)) {
      co_await Linger(stream, deadline, in, linger);
    }
    co_return true;
  }
  const bool linger =
      co_await RunHttpSession(stream, worker, slot, client, link, accepted, in, upgraded);
  // The upgrade's leftover bytes are in the handoff.
  if (!upgraded && linger) co_await Linger(stream, deadline, in);
  co_return true;
}

net::awaitable<void> ServeConnection(UniqueFd socket, Worker& worker, uint32_t slot,
                                     Http2Codec http2) {
  const Clock::time_point accepted = worker.Now();
  SessionLink link;
  const int one = 1;  // Nagle off; failure only costs latency
  ::setsockopt(socket.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ClientState client;  // decided once: PROXY header, else the peer (or its X-Forwarded-For)
  if (!InitClientFromPeer(socket.get(), client)) co_return;  // already reset by the peer
  AnyStream stream(socket.release(), worker.dispatcher());
  if (stream.native_handle() < 0) {
    log::Warn("http", str::Cat("cannot watch the connection from ", client.text, ": ",
                               std::strerror(errno)));
    co_return;
  }
  if (!co_await DecideClientAtAccept(stream, worker, slot, accepted, client)) co_return;
  if (!co_await StartTlsIfListening(stream, worker, slot, client.text, link)) co_return;

  SessionScope scope(worker, link);
  link.stream = &stream;
  Timer deadline(worker.dispatcher(), [&stream] { stream.Cancel(); });
  std::unique_ptr<WsHandoff> upgraded;
  if (!co_await ServeRequests(stream, worker, slot, http2, client, link, accepted, deadline,
                              upgraded)) {
    co_return;
  }
  if (upgraded) co_await RunWsTunnel(stream, worker.ws_tunnels(), std::move(upgraded));
  deadline.Arm(kShutdownTime);
  co_await stream.Shutdown();
  deadline.Disarm();
}

}  // namespace

void SpawnConnection(Worker& worker, uint32_t listener_slot, UniqueFd socket, Http2Codec http2) {
  worker.ConnectionOpened();
  // Counted closed when the session ends, not when shutdown destroys its frame.
  worker.dispatcher().Spawn(ServeConnection(std::move(socket), worker, listener_slot, http2),
                            "connection", [&worker] { worker.ConnectionClosed(); });
}

}  // namespace onedomain::dataplane
