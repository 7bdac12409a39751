#include "dataplane/http_proxy/upstream_exchange.h"

#include <algorithm>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <optional>

#include "dataplane/http_proxy/ws_upgrade.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/upstream/cluster_runtime.h"
#include "dataplane/upstream/socket_probe.h"
#include "dataplane/upstream/upstream_connection.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"

namespace onedomain::dataplane {
namespace {

using namespace boost::asio::experimental::awaitable_operators;  // NOLINT: operator||

// Response heads may carry many Set-Cookie lines; never less than this, whatever the
// listener allows clients.
constexpr uint32_t kMinResponseHeaderLimit = 64 * 1024;

enum class HeadRead : uint8_t { kOk, kClosedEarly, kReset, kTimeout, kMalformed, kCancelled };

// How far the request got toward the upstream.
enum class RequestState : uint8_t {
  kSending,  // not all of it written upstream (yet, or ever)
  kSent,     // all of it read from the client and written upstream
};

// How far the response got toward the client.
enum class ResponseState : uint8_t {
  kAwaitingHead,
  kHeadReceived,  // a final response head arrived (for outlier detection)
  kStarted,       // bytes of it went to the client: no local reply any more
  kComplete,
  kUpgraded,  // a 101 went to the client: both connections go to the tunnel
};

// State of one exchange; lives on RunExchange's frame, borrowed by its child coroutines.
struct Exchange {
  Exchange(ExchangeClient& c, const ExchangeRequest& r, Worker& w, ExchangeBuffers& b)
      : client(c),
        req(r),
        head(r.head),
        worker(w),
        bufs(b),
        def(r.cluster.def()),
        up_deadline(w.dispatcher(), [] {}),
        request_deadline(w.dispatcher(), [this] { CancelBoth(); }) {}

  void CancelBoth() {
    client.CancelIo();
    if (conn) conn->stream().Cancel();
  }

  // The exchange's clock: the worker's (a manual one in tests).
  Clock::time_point now() const { return worker.Now(); }
  bool upgrade() const { return req.mode == ExchangeMode::kUpgrade; }
  bool head_method() const { return head.method == http::verb::head; }
  bool response_started() const { return response >= ResponseState::kStarted; }

  void SetHeadError(HeadRead hr) {
    switch (hr) {
      case HeadRead::kOk:
      case HeadRead::kCancelled:
        return;
      case HeadRead::kTimeout:
        error = request_deadline.fired() ? ProxyError{ProxyErrorKind::kRequestTimeout}
                                         : ProxyError{ProxyErrorKind::kUpstreamResponseTimeout};
        break;
      case HeadRead::kClosedEarly:
      case HeadRead::kReset:
        error = ProxyError{ProxyErrorKind::kUpstreamReset};
        break;
      case HeadRead::kMalformed:
        error = ProxyError{ProxyErrorKind::kUpstreamBadResponse};
        break;
    }
    upstream_failed = true;
  }

  // The counters of bytes to and from the client: the request's record and the worker's.
  void CountSent(uint64_t n) {
    req.record.bytes_sent += n;
    worker.counters().bytes_sent.Add(n);
  }
  void CountReceived(uint64_t n) {
    req.record.bytes_received += n;
    worker.counters().bytes_received.Add(n);
  }

  ExchangeClient& client;
  const ExchangeRequest& req;
  const RequestHead& head;
  Worker& worker;
  ExchangeBuffers& bufs;
  const CompiledCluster& def;
  std::unique_ptr<UpstreamConnection> conn;
  Timer up_deadline;       // upstream I/O; cancels conn's stream
  Timer request_deadline;  // the route's request_timeout; cancels both sides
  std::optional<ProxyError> error;
  // When the whole request has been sent: the final response head must arrive by then, 1xx
  // interim answers included (cluster.response_timeout). Unset while the body streams.
  std::optional<Clock::time_point> head_until;
  RequestState request = RequestState::kSending;
  ResponseState response = ResponseState::kAwaitingHead;
  // Facts independent of the two states:
  bool upstream_failed = false;  // reset/timeout/garbage: counts against the host
  bool close_client = false;     // the client connection closes after this exchange
  bool client_gone = false;      // the client cannot be answered any more
};

struct InflightGuard {
  explicit InflightGuard(Host& h) : host(h) { ++host.inflight; }
  ~InflightGuard() { --host.inflight; }
  Host& host;
};

struct ParkedWaiter final : SlotWaiter {
  explicit ParkedWaiter(Parked& p) : parked(p) {}
  void OnSlotFree() override {
    woken = true;
    parked.Post({});
  }
  Parked& parked;
  bool woken = false;
};

// Waits until `host` frees a connection slot or `until` passes. True when woken.
net::awaitable<bool> WaitForSlot(Host& host, Worker& worker, Clock::time_point until) {
  Parked parked(worker.dispatcher());
  ParkedWaiter w(parked);
  host.AddWaiter(w);
  // Expiry and cancellation both just end the wait; `woken` tells them apart.
  (void)co_await WaitUntil(parked, worker.dispatcher(), until);
  co_return w.woken;
}

// The warmest pooled connection of `host` that the upstream has not closed while it idled and
// that holds no bytes nobody asked for; the others are closed (and counted) on the way.
std::unique_ptr<UpstreamConnection> TakePooled(Host& host, const CompiledCluster& def,
                                               stats::ClusterCounters& counters,
                                               Clock::time_point now) {
  for (;;) {
    std::unique_ptr<UpstreamConnection> conn = host.pool().Take(now, def.pool.idle_timeout);
    // No poller edge since its last read drained it: untouched, no syscall needed. With
    // ring reads an edge means bytes or the end arrived: stale, nothing to probe.
    if (!conn || !conn->stream().maybe_readable() ||
        (!conn->stream().reads_through_ring() &&
         ProbeIdleSocket(conn->stream().native_handle()) == IdleSocketState::kUsable)) {
      return conn;
    }
    counters.pool_stale.Add();
  }
}

// Connects a new connection to `host` into x.conn. Returns false with x.error set on failure.
net::awaitable<bool> Connect(Exchange& x, Host& host) {
  x.conn = std::make_unique<UpstreamConnection>(AnyStream(x.worker.dispatcher()), Ref<Host>(&host));
  x.up_deadline.set_action([s = &x.conn->stream()] { s->Cancel(); });
  x.up_deadline.Arm(x.def.connect_timeout);
  const error_code ec = co_await x.conn->stream().Connect(host.address());
  x.up_deadline.Disarm();
  if (ec) {
    x.error = x.request_deadline.fired() ? ProxyError{ProxyErrorKind::kRequestTimeout}
              : x.up_deadline.fired()    ? ProxyError{ProxyErrorKind::kUpstreamConnectTimeout}
                                         : ProxyError{ProxyErrorKind::kUpstreamConnectFailed};
    x.conn.reset();
    co_return false;
  }
  co_return true;
}

// Reads a complete response head into x.bufs.response.
net::awaitable<HeadRead> ReadResponseHead(Exchange& x) {
  beast::flat_buffer& buf = x.bufs.upstream_in;
  const uint32_t limit = std::max(kMinResponseHeaderLimit, x.req.max_header_bytes);
  ResponseHeadParser parser(x.bufs.response, limit, x.head_method());
  bool any_byte = buf.size() > 0;
  for (;;) {
    if (buf.size() > 0) {
      error_code ec;
      const std::string_view view(static_cast<const char*>(buf.data().data()), buf.size());
      if (parser.Feed(view, ec)) co_return HeadRead::kOk;
      if (ec) co_return HeadRead::kMalformed;
    }
    if (x.head_until) {
      x.up_deadline.ArmAt(*x.head_until);
    } else {
      x.up_deadline.Arm(x.def.response_timeout);
    }
    const IoResult r = co_await x.conn->stream().ReadSome(buf.prepare(kInitialReadSize));
    x.up_deadline.Disarm();
    if (r.ec) {
      if (x.request_deadline.fired() || x.up_deadline.fired()) co_return HeadRead::kTimeout;
      if (r.ec == net::error::operation_aborted) co_return HeadRead::kCancelled;
      co_return any_byte ? HeadRead::kReset : HeadRead::kClosedEarly;
    }
    any_byte = true;
    buf.commit(r.n);
  }
}

// The parameters of the client's response head: close, de-chunking, the cookie policy.
DownstreamHeadParams ClientHeadParams(Exchange& x, bool dechunk) {
  DownstreamHeadParams params;
  params.close = x.close_client;
  params.dechunk = dechunk;
  params.cookies = x.req.route.cookie_policy.get();
  if (x.req.record.route_counters != nullptr) {
    params.cookie_counters = &x.req.record.route_counters->cookies;
  }
  if (params.cookies != nullptr) {
    // The configured host name of the endpoint, for cookies that carry no Domain.
    params.upstream_host = HostWithoutPort(x.conn->host().authority());
  }
  return params;
}

// Passes interim answers (100, 103) on to clients that take them and reads on to the final
// head, or to the 101 of an upgrade. False when the exchange ended here (x.error or
// x.client_gone says why).
net::awaitable<bool> SkipInterimResponses(Exchange& x) {
  ResponseHead& resp = x.bufs.response;
  while (resp.status / 100 == 1) {
    if (resp.status == 101) {
      if (x.upgrade()) co_return true;
      x.error =
          ProxyError{ProxyErrorKind::kUpstreamBadResponse, "101 to a request without upgrade"};
      x.upstream_failed = true;
      co_return false;
    }
    if (x.req.client_takes_interim) {
      x.bufs.response_head.clear();
      x.client.RenderResponseHead(resp, DownstreamHeadParams{}, x.bufs.response_head);
      uint64_t written = 0;
      if (co_await x.client.response_out().Write(net::buffer(x.bufs.response_head), {}, written) !=
          RelayStatus::kOk) {
        x.client_gone = true;
        co_return false;
      }
      x.worker.counters().bytes_sent.Add(written);
    }
    x.bufs.upstream_in.consume(resp.header_bytes);
    const HeadRead hr = co_await ReadResponseHead(x);
    if (hr != HeadRead::kOk) {
      x.SetHeadError(hr);
      co_return false;
    }
  }
  co_return true;
}

// The mode switch of an upgrade: the 101 goes to the client; RunExchange hands both
// connections to the tunnel.
net::awaitable<void> SwitchProtocols(Exchange& x) {
  ResponseHead& resp = x.bufs.response;
  DownstreamHeadParams params = ClientHeadParams(x, false);
  params.keep_upgrade = true;
  x.bufs.response_head.clear();
  x.client.RenderResponseHead(resp, params, x.bufs.response_head);
  x.bufs.upstream_in.consume(resp.header_bytes);
  x.req.record.status = resp.status;
  // The backend accepted, whether or not the client is still there to hear it.
  x.req.record.route_counters->RecordUpgrade(stats::UpgradeResult::kAccepted, x.req.record.http2);
  uint64_t written = 0;
  if (co_await x.client.response_out().Write(net::buffer(x.bufs.response_head), {}, written) !=
      RelayStatus::kOk) {
    x.client_gone = true;
    co_return;
  }
  x.CountSent(written);
  x.response = ResponseState::kUpgraded;
}

// After a body relay failed: an upstream-side failure counts against the host, and when not
// a byte reached the client (the head travels with the first body bytes) it can still get a
// precise answer instead of an empty reply.
void BodyRelayFailed(Exchange& x, const RelayResult& rr) {
  x.close_client = true;
  const bool upstream_side =
      rr.status == RelayStatus::kSrcClosed || rr.status == RelayStatus::kSrcError ||
      rr.status == RelayStatus::kSrcTimeout || rr.status == RelayStatus::kBadFraming;
  if (!upstream_side) return;
  x.upstream_failed = true;
  if (rr.wire_bytes != 0) return;
  x.response = ResponseState::kHeadReceived;
  x.req.record.status = 0;
  x.error = rr.status == RelayStatus::kSrcTimeout
                ? ProxyError{ProxyErrorKind::kUpstreamResponseTimeout}
            : rr.status == RelayStatus::kBadFraming
                ? ProxyError{ProxyErrorKind::kUpstreamBadResponse, "malformed chunked body"}
                : ProxyError{ProxyErrorKind::kUpstreamReset};
}

// Sends the response whose head is in x.bufs.response to the client, body included; or,
// for an upgrade, the 101 (the mode switch) or the refusal.
net::awaitable<void> RelayResponse(Exchange& x) {
  ResponseHead& resp = x.bufs.response;
  if (resp.status / 100 == 1 && !co_await SkipInterimResponses(x)) co_return;
  x.response = ResponseState::kHeadReceived;
  if (x.upgrade()) {
    if (resp.status == 101) {
      co_await SwitchProtocols(x);
      co_return;
    }
    // The backend said no (401, 403, 404, ...): relay its answer as is, then close.
    x.req.record.route_counters->RecordUpgrade(stats::UpgradeResult::kUpstreamRefused,
                                               x.req.record.http2);
    x.close_client = true;
  }
  const bool dechunk = resp.framing.chunked && !resp.no_body && !x.req.client_takes_chunked;
  x.close_client = x.close_client || !x.head.framing.keep_alive || x.worker.draining() ||
                   resp.need_eof || dechunk;
  x.bufs.response_head.clear();
  x.client.RenderResponseHead(resp, ClientHeadParams(x, dechunk), x.bufs.response_head);
  beast::flat_buffer& buf = x.bufs.upstream_in;
  buf.consume(resp.header_bytes);
  x.response = ResponseState::kStarted;
  x.req.record.status = resp.status;

  StreamSource upstream(x.conn->stream(), x.up_deadline, x.def.response_timeout, buf);
  const RelayIo io{upstream, x.client.response_out()};
  // Most small responses came whole with their head: written without a coroutine.
  net::const_buffer prefix = net::buffer(x.bufs.response_head);
  const BufferedRelay fast = TryRelayBuffered(io, resp, prefix);
  RelayResult rr = fast.result;
  if (!fast.settled) {
    RelayResult more;
    if (fast.result.wire_bytes > 0) {  // part went: the rest of the same body
      more = co_await RelayFixed(io, fast.remaining, prefix);
    } else {
      more = co_await RelayResponseBody(io, resp, prefix, dechunk);
    }
    rr.status = more.status;
    rr.body_bytes += more.body_bytes;
    rr.wire_bytes += more.wire_bytes;
  }
  x.CountSent(rr.wire_bytes);
  if (!rr.ok()) {
    BodyRelayFailed(x, rr);
    co_return;
  }
  x.response = ResponseState::kComplete;
}

// The request body from the client while the response is awaited (the body was not all
// here yet). Runs alongside AwaitResponse; never returns on success (it waits to be
// cancelled) so that `||` waits for the response.
net::awaitable<void> UploadBody(Exchange& x) {
  co_await net::this_coro::throw_if_cancelled(false);
  StreamSink upstream(x.conn->stream(), x.up_deadline, x.def.response_timeout);
  const RelayIo io{x.client.request_body(), upstream};
  const net::const_buffer prefix = net::buffer(x.bufs.request_head);
  RelayResult rr;
  if (x.head.framing.chunked) {
    ChunkedScanner scanner;
    rr = co_await RelayChunked(io, scanner, prefix, x.req.body_limit, false);
  } else {
    rr = co_await RelayFixed(io, x.head.framing.content_length.value_or(0), prefix);
  }
  x.CountReceived(rr.body_bytes);
  switch (rr.status) {
    case RelayStatus::kOk:
      x.request = RequestState::kSent;
      // response_timeout runs from the request's last byte (cluster.proto).
      x.head_until = x.now() + x.def.response_timeout;
      x.up_deadline.ArmAt(*x.head_until);
      break;
    case RelayStatus::kTooLarge:
      x.error = ProxyError{ProxyErrorKind::kBodyTooLarge, "chunked body exceeds the limit"};
      co_return;
    case RelayStatus::kBadFraming:
      x.error = ProxyError{ProxyErrorKind::kMalformedRequest, "malformed chunked body"};
      co_return;
    case RelayStatus::kSrcTimeout:
      x.error = ProxyError{ProxyErrorKind::kBodyTimeout};
      co_return;
    case RelayStatus::kSrcClosed:
    case RelayStatus::kSrcError:
      x.client_gone = true;
      co_return;
    case RelayStatus::kCancelled:
      co_return;
    case RelayStatus::kDstError:
    case RelayStatus::kDstTimeout:
      // The upstream stopped reading: it may have answered early (say, 413). Let the
      // response side find out; the client connection closes either way.
      x.close_client = true;
      break;
  }
  Parked hold(x.worker.dispatcher());
  (void)co_await hold.Wait();  // only cancellation ends the hold, which is its purpose
}

net::awaitable<void> AwaitResponse(Exchange& x) {
  co_await net::this_coro::throw_if_cancelled(false);
  const HeadRead hr = co_await ReadResponseHead(x);
  if (hr != HeadRead::kOk) {
    x.SetHeadError(hr);
    co_return;
  }
  co_await RelayResponse(x);
}

// The streaming request: 100 Continue when the client still waits for it, then the body
// upstream while the response comes back.
net::awaitable<void> StreamRequest(Exchange& x) {
  if (x.head.expect_continue && x.req.client_takes_interim && !x.head.continue_sent) {
    if (!co_await x.client.SendContinue()) {
      x.client_gone = true;
      co_return;
    }
  }
  // Built first, awaited apart: GCC 12 mishandles the temporaries of a co_await whose
  // operand builds them (the frame of one was destroyed twice).
  auto both = UploadBody(x) || AwaitResponse(x);
  co_await std::move(both);
  if (!x.error && !x.response_started() && !x.client_gone && x.request_deadline.fired()) {
    x.error = ProxyError{ProxyErrorKind::kRequestTimeout};
  }
}

// The attempts of one exchange: which host, and whether a retry is still allowed.
struct Attempts {
  const Host* exclude = nullptr;
  bool fresh_only = false;  // the pooled connection was stale: a new one this time
  bool retried = false;
  bool can_resend = false;               // the whole request is buffered and idempotent
  Clock::time_point wait_until{};        // for a max_connections slot
  Ref<Host> host;                        // the host of the latest attempt
  bool reused = false;                   // this attempt's connection came from the pool
  std::optional<uint64_t> acked_before;  // of a reused connection, before this request
};

enum class Step : uint8_t { kGo, kRetry, kFailed };

// Getting a connection into x.conn, in two parts. This one never waits (no coroutine frame
// for the common case): it picks the host (into a.host) and takes a pooled connection when
// there is one; settled (kGo or kFailed) unless a new connection must be opened or waited
// for, which AcquireConnection does. An upgrade always takes a new connection, outside
// max_connections (a tunnel is not a pooled connection).
std::optional<Step> TryPooledConnection(Exchange& x, Attempts& a) {
  stats::ClusterCounters& counters = *x.req.cluster.counters();
  Host* host = x.req.cluster.Pick(x.now(), a.exclude);
  if (host == nullptr && a.exclude != nullptr && a.fresh_only) {
    host = x.req.cluster.Pick(x.now());  // a stale pooled connection: its host may be fine
  }
  if (host == nullptr) {
    if (!x.error) x.error = ProxyError{ProxyErrorKind::kNoHealthyUpstream};
    return Step::kFailed;
  }
  a.host = Ref<Host>(host);
  x.req.record.upstream = host;
  x.error.reset();
  a.reused = false;
  a.acked_before.reset();
  if (!a.fresh_only && !x.upgrade()) x.conn = TakePooled(*host, x.def, counters, x.now());
  if (x.conn) {
    a.reused = true;
    x.up_deadline.set_action([s = &x.conn->stream()] { s->Cancel(); });
    // Only a non-idempotent request needs the proof of SendBuffered (one getsockopt).
    if (!a.can_resend) a.acked_before = BytesAckedByPeer(x.conn->stream().native_handle());
    return Step::kGo;
  }
  return std::nullopt;
}

// The rest, for the host TryPooledConnection picked: a new connection (waiting for a slot
// under max_connections; after a connect failure, kRetry once on another host).
net::awaitable<Step> AcquireConnection(Exchange& x, Attempts& a) {
  stats::ClusterCounters& counters = *x.req.cluster.counters();
  Host* host = a.host.get();
  if (!x.upgrade() && x.def.pool.max_connections != 0 &&
      host->open_connections >= x.def.pool.max_connections) {
    if (x.now() >= a.wait_until || !co_await WaitForSlot(*host, x.worker, a.wait_until)) {
      x.error = ProxyError{ProxyErrorKind::kUpstreamPoolFull};
      co_return Step::kFailed;
    }
    co_return Step::kRetry;
  }
  if (co_await Connect(x, *host)) co_return Step::kGo;
  counters.connect_failures.Add();
  if (host->outlier().RecordFailure(x.def.outlier, x.now())) counters.ejections.Add();
  if (a.retried || x.request_deadline.fired()) co_return Step::kFailed;
  // Nothing was sent: try another host once (any method).
  a.retried = true;
  a.exclude = host;
  counters.retries.Add();
  co_return Step::kRetry;
}

// The whole request is buffered: one write, then the response head. The request stays in
// the client's buffer until the attempts are over, so a retry can send it again. kRetry when
// a pooled connection turned out closed before a single response byte.
net::awaitable<Step> SendBuffered(Exchange& x, Attempts& a, const BufferedBody& body) {
  beast::flat_buffer& in = x.client.request_body().buffer();
  const net::const_buffer body_bytes(in.data().data(), body.bytes);
  // Written at once when the socket takes it all (nearly always: a fresh or idle connection's
  // send buffer is empty), else awaited under the response timeout.
  StreamSink upstream(x.conn->stream(), x.up_deadline, x.def.response_timeout);
  net::const_buffer head = net::buffer(x.bufs.request_head), rest = body_bytes;
  uint64_t written = 0;
  RelayStatus sent = RelayStatus::kOk;
  if (!upstream.TryWriteNow(head, rest, written, sent)) {
    sent = co_await upstream.Write(head, rest, written);
  }
  HeadRead hr = HeadRead::kOk;
  if (sent != RelayStatus::kOk) {
    hr = x.request_deadline.fired() || x.up_deadline.fired() ? HeadRead::kTimeout
                                                             : HeadRead::kClosedEarly;
  } else {
    x.request = RequestState::kSent;
    x.head_until = x.now() + x.def.response_timeout;
    hr = co_await ReadResponseHead(x);
  }
  // A pooled connection the upstream closed just as we reused it (an idle timeout racing
  // our request): send again on a fresh connection, as browsers do. Idempotent requests
  // always; others only when the peer's TCP acknowledged none of the request's bytes, which
  // proves no application saw it.
  const auto undelivered = [&] {
    return a.acked_before && BytesAckedByPeer(x.conn->stream().native_handle()) == a.acked_before;
  };
  if (hr == HeadRead::kClosedEarly && a.reused && !a.retried && (a.can_resend || undelivered())) {
    // Prefer another host (this one may have just died), else this one again.
    a.retried = true;
    a.fresh_only = true;
    a.exclude = &x.conn->host();
    x.req.cluster.counters()->retries.Add();
    x.request = RequestState::kSending;
    x.conn.reset();
    co_return Step::kRetry;
  }
  if (hr != HeadRead::kOk) {
    x.SetHeadError(hr);
    co_return Step::kFailed;
  }
  x.CountReceived(body.bytes);
  co_return Step::kGo;
}

// The upstream head of the request, for the host the connection goes to.
void RenderUpstreamHead(Exchange& x) {
  x.bufs.request_head.clear();
  UpstreamHeadParams params;
  params.route = &x.req.route;
  params.client_ip = x.req.client_ip;
  params.replace_forwarded_for = x.req.replace_forwarded_for;
  params.forwarded_proto = x.req.forwarded_proto;
  params.default_host = x.conn->host().authority();
  params.keep_upgrade = x.upgrade();
  params.strip_expect = x.head.expect_continue;
  params.cookies = x.req.route.cookie_policy.get();
  AppendUpstreamRequestHead(x.head, params, x.bufs.request_head);
}

// Attempts until one gets a response (or fails for good). Returns the host of the last
// attempt (null when none was picked).
net::awaitable<Ref<Host>> Attempt(Exchange& x, const BufferedBody& body) {
  Attempts a;
  a.can_resend = body.complete && IsIdempotent(x.head.method);
  a.wait_until = x.now() + x.def.connect_timeout;
  for (;;) {
    Step got;
    if (const std::optional<Step> pooled = TryPooledConnection(x, a)) {
      got = *pooled;
    } else {
      got = co_await AcquireConnection(x, a);
    }
    if (got == Step::kRetry) continue;
    if (got == Step::kFailed) break;
    InflightGuard inflight(x.conn->host());
    RenderUpstreamHead(x);
    if (!body.complete) {
      co_await StreamRequest(x);
      break;
    }
    const Step sent = co_await SendBuffered(x, a, body);
    if (sent == Step::kRetry) continue;
    if (sent == Step::kGo) co_await RelayResponse(x);
    break;
  }
  co_return std::move(a.host);
}

// Passive health: connect failures (counted where they happen), resets, timeouts and
// malformed answers count against the host; 5xx answers only when the cluster says so (any
// client can ask for a URL that fails), and never for an upgrade's answer.
void RecordHostHealth(Exchange& x, Host& host) {
  const bool head_seen = x.response >= ResponseState::kHeadReceived;
  const bool failed = x.upstream_failed || (x.def.outlier.count_5xx && !x.upgrade() && head_seen &&
                                            x.bufs.response.status >= 500);
  if (failed) {
    if (host.outlier().RecordFailure(x.def.outlier, x.now())) {
      x.req.cluster.counters()->ejections.Add();
    }
  } else if (head_seen) {
    host.outlier().RecordSuccess();
  }
}

// The local reply when the exchange failed before its response started (x.error set):
// whether the client connection may go on.
net::awaitable<bool> AnswerClient(Exchange& x, const BufferedBody& body) {
  if (x.upgrade()) {
    x.req.record.route_counters->RecordUpgrade(stats::UpgradeResult::kUpstreamFailed,
                                               x.req.record.http2);
  }
  if (x.client_gone) co_return false;
  co_return co_await x.client.SendLocalReply(
      *x.error, x.req.record,
      {.head_request = x.head_method(),
       .keep_alive_ok = x.req.keep_alive_ok,
       .request_fully_read = body.complete || x.request == RequestState::kSent});
}

// Back to the pool when the exchange left the connection clean; else it closes here.
void ReleaseConnection(Exchange& x) {
  if (!x.conn) return;
  Host& host = x.conn->host();
  const ResponseHead& resp = x.bufs.response;
  const bool clean = !x.upgrade() && x.response == ResponseState::kComplete &&
                     x.request == RequestState::kSent && resp.framing.keep_alive &&
                     !resp.need_eof && x.bufs.upstream_in.size() == 0;
  if (clean && !host.retired) {
    ++x.conn->requests;
    std::unique_ptr<UpstreamConnection> rejected =
        host.pool().Put(std::move(x.conn), x.now(), x.def.pool.max_idle);
    if (!rejected) host.WakeOne();  // a waiter for max_connections can take it
  }
  x.conn.reset();
}

}  // namespace

net::awaitable<ExchangeResult> RunExchange(ExchangeClient& client, ExchangeRequest req,
                                           Worker& worker, ExchangeBuffers& bufs) {
  Exchange x(client, req, worker, bufs);
  bufs.upstream_in.clear();
  // An upgrade's handshake has no request_timeout: the tunnel it starts has its own.
  if (!x.upgrade()) x.request_deadline.Arm(req.route.request_timeout);

  beast::flat_buffer& in = client.request_body().buffer();
  const BufferedBody body = ProbeBufferedBody(
      req.head.framing, {static_cast<const char*>(in.data().data()), in.size()}, req.body_limit);
  ExchangeResult result;
  if (body.error) {
    result.keep_alive =
        co_await client.SendLocalReply(*body.error, req.record, {.head_request = x.head_method()});
    co_return result;
  }
  const Ref<Host> host = co_await Attempt(x, body);
  // A buffered request leaves the client's buffer now that no retry can send it again.
  if (body.complete) in.consume(body.bytes);
  x.request_deadline.Disarm();
  x.up_deadline.Disarm();
  if (host) RecordHostHealth(x, *host);
  if (x.error && !x.response_started()) {
    result.keep_alive = co_await AnswerClient(x, body);
  } else {
    result.keep_alive = x.response == ResponseState::kComplete &&
                        x.request == RequestState::kSent && !x.close_client;
  }
  if (x.response == ResponseState::kUpgraded) {
    result.upgraded = MakeWsHandoff(req.route, req.record.route_counters, std::move(x.conn), in,
                                    bufs.upstream_in);
    result.keep_alive = false;
  }
  ReleaseConnection(x);
  co_return result;
}

}  // namespace onedomain::dataplane
