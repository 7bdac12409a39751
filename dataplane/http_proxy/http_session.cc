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
#include "dataplane/http_proxy/local_reply.h"
#include "dataplane/http_proxy/message_head.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/http_proxy/proxy_exchange.h"
#include "dataplane/http_proxy/request_record.h"
#include "dataplane/http_proxy/session_context.h"
#include "dataplane/net/tls_context.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/worker/worker.h"
#include "dataplane/ws_tunnel/ws_tunnel.h"
#include "dataplane/ws_tunnel/ws_upgrade.h"

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
net::awaitable<void> Linger(AnyStream& stream, Timer& deadline, beast::flat_buffer& scratch) {
  // Tell the client the answer is complete first (FIN, and close_notify on TLS): it must not
  // wait for the linger to end.
  stream.ShutdownSend();
  deadline.Arm(kLingerTime);
  uint64_t dropped = 0;
  while (dropped < kLingerBytes) {
    scratch.clear();
    const IoResult r = co_await stream.ReadSome(scratch.prepare(kInitialReadSize));
    if (r.ec) break;
    dropped += r.n;
  }
  deadline.Disarm();
}

// The keep-alive loop. Returns whether to linger before closing.
net::awaitable<bool> RunHttpSession(AnyStream& stream, Worker& worker, uint32_t slot,
                                    std::string_view client_ip, SessionLink& link,
                                    Clock::time_point accepted, beast::flat_buffer& in,
                                    std::unique_ptr<WsHandoff>& upgraded) {
  ExchangeBuffers bufs;
  RequestHead head;
  head.fields.reserve(32);
  bufs.response.fields.reserve(32);
  bufs.request_head.reserve(1024);
  bufs.response_head.reserve(1024);
  std::string log_method, log_target;
  std::string target_storage;  // a normalised request-target, when it differs
  Timer deadline(worker.dispatcher(), [&stream] { stream.Cancel(); });
  bool first = true;

  for (;;) {
    // Pin the config for this request: a switch now affects only the next one.
    const Ref<WorkerConfig> cfg = worker.config();
    const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
    if (listener == nullptr) co_return false;  // the listener was removed: finish here
    const ListenerLimits& limits = listener->limits;
    Downstream down{stream, deadline, in, worker, client_ip, *listener};
    RequestRecord record;
    record.route_counters = &worker.no_route_counters();

    // Idle until the first byte (keep-alive), or header timeout from accept (first request).
    if (in.size() == 0) {
      if (worker.draining() && !first) co_return false;
      link.idle = true;
      if (first) {
        deadline.ArmAt(accepted + limits.header_timeout);
        if (limits.header_timeout.count() <= 0) deadline.Disarm();
      } else {
        deadline.Arm(limits.idle_timeout);
      }
      const IoResult r = co_await stream.ReadSome(in.prepare(kInitialReadSize));
      const bool timed_out = deadline.fired();
      deadline.Disarm();
      link.idle = false;
      if (r.ec) {
        if (!(first && timed_out)) co_return false;  // closed, idle timeout, or drain
        record.start = worker.Now();
        co_await SendLocalReply(down, ProxyError{ProxyErrorKind::kHeaderTimeout}, record, false,
                                false, false, bufs.response_head);
        FinishRequest(record, MakeAccessContext(worker, down, nullptr, log_method, log_target));
        co_return false;
      }
      in.commit(r.n);
    }
    record.start = worker.Now();

    // The head, under the header deadline (from accept for the first request, else from
    // its first byte).
    if (limits.header_timeout.count() > 0) {
      deadline.ArmAt((first ? accepted : record.start) + limits.header_timeout);
    }
    first = false;
    error_code parse_error;
    {
      RequestHeadParser parser(head, limits.max_header_bytes);
      for (;;) {
        const std::string_view bytes(static_cast<const char*>(in.data().data()), in.size());
        if (parser.Feed(bytes, parse_error) || parse_error) break;
        const IoResult r = co_await stream.ReadSome(in.prepare(kInitialReadSize));
        if (r.ec) {
          const bool timed_out = deadline.fired();
          deadline.Disarm();
          if (!timed_out) co_return false;  // the client went away mid-head
          co_await SendLocalReply(down, ProxyError{ProxyErrorKind::kHeaderTimeout}, record,
                                  false, false, false, bufs.response_head);
          FinishRequest(record, MakeAccessContext(worker, down, nullptr, log_method, log_target));
          co_return true;
        }
        in.commit(r.n);
      }
    }
    deadline.Disarm();
    const AccessContext access =
        MakeAccessContext(worker, down, parse_error ? nullptr : &head, log_method, log_target);
    if (parse_error) {
      co_await SendLocalReply(down, ClassifyRequestParseError(head, parse_error), record, false,
                              false, false, bufs.response_head);
      FinishRequest(record, access);
      co_return true;
    }
    worker.counters().bytes_received.Add(head.header_bytes);
    const bool head_method = head.method == http::verb::head;
    const bool has_body = HasRequestBody(head);
    const bool keep_ok = head.framing.keep_alive && !worker.draining();

    // Phases: checks, route, upgrade branch, limits; then the exchange.
    bool keep_alive = false;
    const CompiledRoute* route = nullptr;
    std::optional<ProxyError> bad_request = NormalizeRequest(head, target_storage);
    if (!bad_request) bad_request = CheckRequest(head);
    if (const auto& err = bad_request) {
      keep_alive = co_await SendLocalReply(down, *err, record, head_method, false, false,
                                           bufs.response_head);
    } else if ((route = cfg->routes().Match(head.host, PathOfTarget(head.target))) == nullptr) {
      if (!has_body) in.consume(head.header_bytes);
      keep_alive = co_await SendLocalReply(down, ProxyError{ProxyErrorKind::kNoRoute}, record,
                                           head_method, keep_ok, !has_body, bufs.response_head);
    } else {
      record.route_counters = cfg->route_counters[route->index];
      record.route_name = route->name;
      const uint64_t limit = route->max_body_bytes.value_or(limits.max_body_bytes);
      if (IsWebSocketUpgrade(head)) {
        // The WebSocket branch; on a 101 the session ends here and ServeConnection runs the
        // tunnel once this frame (and its HTTP buffers) is gone.
        keep_alive =
            co_await ServeWebSocketUpgrade(down, head, *route, *cfg, record, bufs, upgraded);
      } else if (auto too_large = CheckBodyLimit(head, limit)) {
        keep_alive = co_await SendLocalReply(down, *too_large, record, head_method, false, false,
                                             bufs.response_head);
      } else if (auto body_error = co_await ReadRequestBodyStart(down, head, limit)) {
        keep_alive = co_await SendLocalReply(down, *body_error, record, head_method, false,
                                             false, bufs.response_head);
      } else {
        keep_alive = co_await ProxyExchange(down, head, *route, *cfg, record, bufs);
      }
    }
    FinishRequest(record, access);
    if (!keep_alive) co_return true;

    // A burst of large headers or bodies may have grown the buffers; do not keep that
    // memory on an idle keep-alive connection.
    if (in.size() == 0 && in.capacity() > 4 * kInitialReadSize) in.shrink_to_fit();
    if (bufs.upstream_in.capacity() > 4 * kInitialReadSize) bufs.upstream_in.shrink_to_fit();
  }
}

// The client's address as text (IPv4-mapped IPv6 shown as IPv4); empty when it is gone.
std::string PeerAddress(int fd) {
  tcp::endpoint peer;
  socklen_t len = static_cast<socklen_t>(peer.capacity());
  if (::getpeername(fd, peer.data(), &len) != 0) return {};
  peer.resize(len);
  const net::ip::address addr = peer.address();
  return addr.is_v6() && addr.to_v6().is_v4_mapped()
             ? net::ip::make_address_v4(net::ip::v4_mapped, addr.to_v6()).to_string()
             : addr.to_string();
}

net::awaitable<void> ServeConnection(UniqueFd socket, Worker& worker, uint32_t slot) {
  const Clock::time_point accepted = worker.Now();
  SessionLink link;
  const int one = 1;  // Nagle off; failure only costs latency
  ::setsockopt(socket.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const std::string client_ip = PeerAddress(socket.get());
  if (client_ip.empty()) co_return;  // already reset by the peer
  AnyStream stream(socket.release(), worker.dispatcher());
  if (stream.native_handle() < 0) {
    log::Warn("http", str::Cat("cannot watch the connection from ", client_ip, ": ",
                               std::strerror(errno)));
    co_return;
  }
  {
    const Ref<WorkerConfig> cfg = worker.config();
    const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
    if (listener == nullptr) co_return;  // removed between accept and now
    if (listener->tls) {
      // Plain HTTP to a TLS port gets a readable answer instead of a handshake failure:
      // a TLS ClientHello starts with 0x16 (handshake record).
      Timer peek_deadline(worker.dispatcher(), [&stream] { stream.Cancel(); });
      peek_deadline.Arm(listener->limits.header_timeout);
      char first = 0;
      for (;;) {
        error_code ec;
        const size_t n = stream.TryPeek(net::buffer(&first, 1), ec);
        if (n == 1) break;
        if (ec != net::error::would_block) co_return;  // gone before saying anything
        const error_code wec = co_await stream.WaitReadable();
        if (wec || peek_deadline.fired()) co_return;
      }
      peek_deadline.Disarm();
      if (first != 0x16) {
        SessionScope scope(worker, link);
        link.stream = &stream;
        beast::flat_buffer in;
        Timer deadline(worker.dispatcher(), [&stream] { stream.Cancel(); });
        Downstream down{stream, deadline, in, worker, client_ip, *listener};
        RequestRecord record;
        record.route_counters = &worker.no_route_counters();
        record.start = worker.Now();
        std::string out, method, target;
        co_await SendLocalReply(down, ProxyError{ProxyErrorKind::kPlainHttpOnTlsPort}, record,
                                false, false, false, out);
        FinishRequest(record, MakeAccessContext(worker, down, nullptr, method, target));
        co_await Linger(stream, deadline, in);
        stream.Close();
        co_return;
      }
      if (const error_code ec = stream.StartTls(listener->tls->native_handle()); ec) {
        log::Warn("http", str::Cat("cannot start TLS with ", client_ip, ": ", ec.message()));
        co_return;
      }
    }
  }

  SessionScope scope(worker, link);
  link.stream = &stream;
  Timer deadline(worker.dispatcher(), [&stream] { stream.Cancel(); });
  if (stream.is_tls()) {
    const Ref<WorkerConfig> cfg = worker.config();
    const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
    if (listener == nullptr) co_return;
    deadline.ArmAt(accepted + listener->limits.header_timeout);
    const error_code ec = co_await stream.Handshake();
    deadline.Disarm();
    if (ec) {
      log::Debug("http", str::Cat("TLS handshake with ", client_ip, " failed: ", ec.message()));
      stream.Close();
      co_return;
    }
  }
  beast::flat_buffer in;
  std::unique_ptr<WsHandoff> upgraded;
  const bool linger =
      co_await RunHttpSession(stream, worker, slot, client_ip, link, accepted, in, upgraded);
  if (upgraded) {
    // The upgrade's leftover bytes are in the handoff; an idle tunnel keeps no read buffer.
    in.clear();
    in.shrink_to_fit();
    co_await RunWsTunnel(stream, worker.ws_tunnels(), std::move(upgraded));
  } else if (linger) {
    co_await Linger(stream, deadline, in);
  }
  deadline.Arm(kShutdownTime);
  co_await stream.Shutdown();
  deadline.Disarm();
}

}  // namespace

void SpawnConnection(Worker& worker, uint32_t listener_slot, UniqueFd socket) {
  worker.ConnectionOpened();
  // Counted closed when the session ends, not when shutdown destroys its frame.
  worker.dispatcher().Spawn(ServeConnection(std::move(socket), worker, listener_slot),
                            "connection", [&worker] { worker.ConnectionClosed(); });
}

}  // namespace onedomain::dataplane
