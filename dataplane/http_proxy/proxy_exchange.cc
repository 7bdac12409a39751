#include "dataplane/http_proxy/proxy_exchange.h"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <optional>

#include "dataplane/http_proxy/body_relay.h"
#include "dataplane/http_proxy/local_reply.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/worker/worker.h"
#include "dataplane/worker/worker_config.h"
#include "dataplane/upstream/cluster_runtime.h"
#include "dataplane/upstream/socket_probe.h"
#include "dataplane/upstream/upstream_connection.h"

namespace onedomain::dataplane {
namespace {

using namespace boost::asio::experimental::awaitable_operators;  // NOLINT: operator||

// Response heads may carry many Set-Cookie lines; never less than this, whatever the
// listener allows clients.
constexpr uint32_t kMinResponseHeaderLimit = 64 * 1024;

enum class HeadRead : uint8_t { kOk, kClosedEarly, kReset, kTimeout, kMalformed, kCancelled };

// State of one exchange; lives on ProxyExchange's frame, borrowed by its child coroutines.
struct Exchange {
  Exchange(Downstream& d, const RequestHead& h, const CompiledRoute& r, ClusterRuntime& c,
           RequestRecord& rec, ExchangeBuffers& b)
      : down(d),
        head(h),
        route(r),
        cluster(c),
        def(c.def()),
        record(rec),
        bufs(b),
        up_deadline(d.worker.dispatcher(), [] {}),
        request_deadline(d.worker.dispatcher(), [this] { CancelBoth(); }) {}

  void CancelBoth() {
    down.stream.Cancel();
    if (conn) conn->stream().Cancel();
  }

  void SetHeadError(HeadRead hr) {
    switch (hr) {
      case HeadRead::kOk:
      case HeadRead::kCancelled:
        return;
      case HeadRead::kTimeout:
        error = request_deadline.fired()
                    ? ProxyError{ProxyErrorKind::kRequestTimeout}
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

  Downstream& down;
  const RequestHead& head;
  const CompiledRoute& route;
  ClusterRuntime& cluster;
  const CompiledCluster& def;
  RequestRecord& record;
  ExchangeBuffers& bufs;
  std::unique_ptr<UpstreamConnection> conn;
  Timer up_deadline;       // upstream I/O; cancels conn's stream
  Timer request_deadline;  // the route's request_timeout; cancels both sides
  std::optional<ProxyError> error;
  // When the whole request has been sent: the final response head must arrive by then, 1xx
  // interim answers included (cluster.response_timeout). Unset while the body streams.
  std::optional<Clock::time_point> head_until;
  int client_version = 11;
  bool head_method = false;
  bool response_head_seen = false;  // a final response head arrived (for outlier detection)
  bool response_started = false;    // bytes of the final response went to the client
  bool response_complete = false;
  bool request_read = false;        // the whole request body was read from the client
  bool request_sent = false;        // ... and written upstream
  bool upstream_reusable = false;
  bool upstream_failed = false;     // reset/timeout/garbage: counts against the host
  bool close_client = false;
  bool client_gone = false;
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
    // No poller edge since its last read drained it: untouched, no syscall needed.
    if (!conn || !conn->stream().maybe_readable() ||
        ProbeIdleSocket(conn->stream().native_handle()) == IdleSocketState::kUsable) {
      return conn;
    }
    counters.pool_stale.Add();
  }
}

// Connects a new connection to `host` into x.conn. Returns false with x.error set on failure.
net::awaitable<bool> Connect(Exchange& x, Host& host) {
  x.conn = std::make_unique<UpstreamConnection>(AnyStream(x.down.worker.dispatcher()),
                                                Ref<Host>(&host));
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
  const uint32_t limit =
      std::max(kMinResponseHeaderLimit, x.down.listener.limits.max_header_bytes);
  ResponseHeadParser parser(x.bufs.response, limit, x.head_method);
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

// Sends the response whose head is in x.bufs.response to the client, body included.
net::awaitable<void> RelayResponse(Exchange& x) {
  ResponseHead& resp = x.bufs.response;
  beast::flat_buffer& buf = x.bufs.upstream_in;
  Worker& worker = x.down.worker;
  // Interim responses (100, 103): pass them on to HTTP/1.1 clients, then read the final one.
  while (resp.status / 100 == 1) {
    if (resp.status == 101) {
      x.error = ProxyError{ProxyErrorKind::kUpstreamBadResponse, "101 to a request without upgrade"};
      x.upstream_failed = true;
      co_return;
    }
    if (x.client_version >= 11) {
      x.bufs.response_head.clear();
      AppendDownstreamResponseHead(resp, DownstreamHeadParams{}, x.bufs.response_head);
      x.down.deadline.Arm(x.down.listener.limits.idle_timeout);
      const IoResult w = co_await x.down.stream.Write(net::buffer(x.bufs.response_head));
      x.down.deadline.Disarm();
      if (w.ec) {
        x.client_gone = true;
        co_return;
      }
      worker.counters().bytes_sent.Add(w.n);
    }
    buf.consume(resp.header_bytes);
    const HeadRead hr = co_await ReadResponseHead(x);
    if (hr != HeadRead::kOk) {
      x.SetHeadError(hr);
      co_return;
    }
  }
  x.response_head_seen = true;

  const bool dechunk = resp.framing.chunked && !resp.no_body && x.client_version == 10;
  x.close_client = x.close_client || !x.head.framing.keep_alive || worker.draining() ||
                   resp.need_eof || dechunk;
  DownstreamHeadParams params;
  params.client_version = x.client_version;
  params.close = x.close_client;
  params.dechunk = dechunk;
  params.cookies = x.route.cookie_policy.get();
  if (x.record.route_counters != nullptr) {
    params.cookie_counters = &x.record.route_counters->cookies;
  }
  if (params.cookies != nullptr) {
    // The configured host name of the endpoint, for cookies that carry no Domain.
    params.upstream_host = HostWithoutPort(x.conn->host().authority());
  }
  x.bufs.response_head.clear();
  AppendDownstreamResponseHead(resp, params, x.bufs.response_head);
  buf.consume(resp.header_bytes);
  x.response_started = true;
  x.record.status = resp.status;

  RelayIo io{x.conn->stream(), x.up_deadline, x.def.response_timeout,
             x.down.stream,    x.down.deadline, x.down.listener.limits.idle_timeout,
             buf};
  const net::const_buffer head_bytes = net::buffer(x.bufs.response_head);
  RelayResult rr;
  if (resp.no_body) {
    rr = co_await RelayFixed(io, 0, head_bytes);
  } else if (resp.framing.chunked) {
    ChunkedScanner scanner;
    rr = co_await RelayChunked(io, scanner, head_bytes, 0, dechunk);
  } else if (resp.framing.content_length) {
    rr = co_await RelayFixed(io, *resp.framing.content_length, head_bytes);
  } else {
    rr = co_await RelayUntilEof(io, head_bytes);
  }
  x.record.bytes_sent += rr.wire_bytes;
  worker.counters().bytes_sent.Add(rr.wire_bytes);
  if (!rr.ok()) {
    x.close_client = true;
    const bool upstream_side =
        rr.status == RelayStatus::kSrcClosed || rr.status == RelayStatus::kSrcError ||
        rr.status == RelayStatus::kSrcTimeout || rr.status == RelayStatus::kBadFraming;
    if (upstream_side) x.upstream_failed = true;
    if (upstream_side && rr.wire_bytes == 0) {
      // The body failed before the head went out (the head travels with the first body
      // bytes): the client can still get a precise answer instead of an empty reply.
      x.response_started = false;
      x.record.status = 0;
      x.error = rr.status == RelayStatus::kSrcTimeout
                    ? ProxyError{ProxyErrorKind::kUpstreamResponseTimeout}
                : rr.status == RelayStatus::kBadFraming
                    ? ProxyError{ProxyErrorKind::kUpstreamBadResponse, "malformed chunked body"}
                    : ProxyError{ProxyErrorKind::kUpstreamReset};
    }
    co_return;
  }
  x.response_complete = true;
  x.upstream_reusable = resp.framing.keep_alive && !resp.need_eof && buf.size() == 0;
}

// Streaming upload (the body was not all here yet). Runs alongside Download; never returns
// on success (it waits to be cancelled) so that `||` waits for the response.
net::awaitable<void> Upload(Exchange& x, uint64_t limit) {
  co_await net::this_coro::throw_if_cancelled(false);
  RelayIo io{x.down.stream,       x.down.deadline, x.down.listener.limits.body_timeout,
             x.conn->stream(),    x.up_deadline,   x.def.response_timeout,
             x.down.in};
  const net::const_buffer prefix = net::buffer(x.bufs.request_head);
  RelayResult rr;
  if (x.head.framing.chunked) {
    ChunkedScanner scanner;
    rr = co_await RelayChunked(io, scanner, prefix, limit, false);
  } else {
    rr = co_await RelayFixed(io, x.head.framing.content_length.value_or(0), prefix);
  }
  x.record.bytes_received += rr.body_bytes;
  x.down.worker.counters().bytes_received.Add(rr.body_bytes);
  switch (rr.status) {
    case RelayStatus::kOk:
      x.request_read = true;
      x.request_sent = true;
      // response_timeout runs from the request's last byte (cluster.proto).
      x.head_until = x.down.worker.Now() + x.def.response_timeout;
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
  Parked hold(x.down.worker.dispatcher());
  (void)co_await hold.Wait();  // only cancellation ends the hold, which is its purpose
}

net::awaitable<void> Download(Exchange& x) {
  co_await net::this_coro::throw_if_cancelled(false);
  const HeadRead hr = co_await ReadResponseHead(x);
  if (hr != HeadRead::kOk) {
    x.SetHeadError(hr);
    co_return;
  }
  co_await RelayResponse(x);
}

// Bytes of the request (head + body) when the whole of it is already in `in`.
struct BufferedRequest {
  bool complete = false;
  size_t bytes = 0;
  std::optional<ProxyError> error;
};

BufferedRequest ProbeBufferedRequest(const RequestHead& head, const beast::flat_buffer& in,
                                     uint64_t limit) {
  BufferedRequest b;
  const std::string_view all(static_cast<const char*>(in.data().data()), in.size());
  const std::string_view body = all.substr(head.header_bytes);
  b.bytes = head.header_bytes;
  if (head.framing.chunked) {
    ChunkedScanner probe;
    const ChunkedScanner::Result r = probe.Feed(body);
    if (r.error) {
      b.error = ProxyError{ProxyErrorKind::kMalformedRequest, "malformed chunked body"};
    } else if (limit != 0 && probe.data_bytes() > limit) {
      b.error = ProxyError{ProxyErrorKind::kBodyTooLarge, "chunked body exceeds the limit"};
    }
    b.complete = r.done;
    b.bytes += r.consumed;
  } else if (head.framing.content_length) {
    const uint64_t cl = *head.framing.content_length;
    b.complete = body.size() >= cl;
    b.bytes += static_cast<size_t>(std::min<uint64_t>(cl, body.size()));
  } else {
    b.complete = true;
  }
  return b;
}

}  // namespace

net::awaitable<std::optional<ProxyError>> ReadRequestBodyStart(Downstream& down, RequestHead& head,
                                                              uint64_t body_limit) {
  const ListenerLimits& limits = down.listener.limits;
  if (limits.request_buffer_bytes == 0 || !HasRequestBody(head)) co_return std::nullopt;
  BufferedRequest b = ProbeBufferedRequest(head, down.in, body_limit);
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
    b = ProbeBufferedRequest(head, down.in, body_limit);
  }
  down.deadline.Disarm();
  co_return b.error;
}

net::awaitable<bool> ProxyExchange(Downstream& down, const RequestHead& head,
                                   const CompiledRoute& route, WorkerConfig& cfg,
                                   RequestRecord& record, ExchangeBuffers& bufs) {
  ClusterRuntime& cluster = *cfg.clusters[route.cluster_index];
  Exchange x(down, head, route, cluster, record, bufs);
  x.client_version = head.version;
  x.head_method = head.method == http::verb::head;
  bufs.upstream_in.clear();
  const uint64_t limit = route.max_body_bytes.value_or(down.listener.limits.max_body_bytes);
  x.request_deadline.Arm(route.request_timeout);

  const BufferedRequest buffered = ProbeBufferedRequest(head, down.in, limit);
  if (buffered.error) {
    co_return co_await SendLocalReply(down, *buffered.error, record, x.head_method, false, false,
                                      bufs.response_head);
  }
  const bool can_resend = buffered.complete && IsIdempotent(head.method);
  stats::ClusterCounters* counters = cluster.counters();

  Ref<Host> host_ref;
  const Host* exclude = nullptr;
  bool fresh_only = false;
  bool retried = false;
  bool consumed = false;
  const Clock::time_point wait_until = x.down.worker.Now() + cluster.def().connect_timeout;
  for (;;) {
    Host* host = cluster.Pick(x.down.worker.Now(), exclude);
    if (host == nullptr && exclude != nullptr && fresh_only) {
      host = cluster.Pick(x.down.worker.Now());  // a stale pooled connection: its host may be fine
    }
    if (host == nullptr) {
      if (!x.error) {
        x.error = ProxyError{ProxyErrorKind::kNoHealthyUpstream};
      }
      break;
    }
    host_ref = Ref<Host>(host);
    record.upstream = host;
    x.error.reset();
    bool reused = false;
    std::optional<uint64_t> acked_before;  // of a reused connection, before this request
    if (!fresh_only) x.conn = TakePooled(*host, x.def, *counters, x.down.worker.Now());
    if (x.conn) {
      reused = true;
      x.up_deadline.set_action([s = &x.conn->stream()] { s->Cancel(); });
      // Only a non-idempotent request needs the proof below (one getsockopt).
      if (!can_resend) acked_before = BytesAckedByPeer(x.conn->stream().native_handle());
    } else {
      if (x.def.pool.max_connections != 0 &&
          host->open_connections >= x.def.pool.max_connections) {
        if (x.down.worker.Now() >= wait_until || !co_await WaitForSlot(*host, x.down.worker, wait_until)) {
          x.error = ProxyError{ProxyErrorKind::kUpstreamPoolFull};
          break;
        }
        continue;
      }
      if (!co_await Connect(x, *host)) {
        counters->connect_failures.Add();
        if (host->outlier().RecordFailure(x.def.outlier, x.down.worker.Now())) counters->ejections.Add();
        if (!retried && !x.request_deadline.fired()) {
          // Nothing was sent: try another host once (any method).
          retried = true;
          exclude = host;
          counters->retries.Add();
          continue;
        }
        break;
      }
    }
    InflightGuard inflight(*host);
    bufs.request_head.clear();
    UpstreamHeadParams params;
    params.route = &route;
    params.client_ip = down.client_ip;
    params.forwarded_proto = down.listener.forwarded_proto;
    params.default_host = host->authority();
    params.strip_expect = head.expect_continue;
    params.cookies = route.cookie_policy.get();
    AppendUpstreamRequestHead(head, params, bufs.request_head);

    if (buffered.complete) {
      // The whole request is here: one write, then the response. The request stays in
      // `down.in` until the response starts, so a retry can send it again.
      const auto* data = static_cast<const char*>(down.in.data().data());
      const net::const_buffer body(data + head.header_bytes, buffered.bytes - head.header_bytes);
      x.up_deadline.Arm(x.def.response_timeout);
      const IoResult w = co_await x.conn->stream().Write(net::buffer(bufs.request_head), body);
      x.up_deadline.Disarm();
      HeadRead hr = HeadRead::kOk;
      if (w.ec) {
        hr = x.request_deadline.fired() || x.up_deadline.fired() ? HeadRead::kTimeout
                                                                 : HeadRead::kClosedEarly;
      } else {
        x.request_sent = true;
        x.head_until = x.down.worker.Now() + x.def.response_timeout;
        hr = co_await ReadResponseHead(x);
      }
      // A pooled connection the upstream closed just as we reused it (an idle timeout
      // racing our request), before a single response byte: send again on a fresh
      // connection, as browsers do. Idempotent requests always; others only when the
      // peer's TCP acknowledged none of the request's bytes, which proves no application
      // saw it.
      const auto undelivered = [&] {
        return acked_before &&
               BytesAckedByPeer(x.conn->stream().native_handle()) == acked_before;
      };
      if (hr == HeadRead::kClosedEarly && reused && buffered.complete && !retried &&
          (can_resend || undelivered())) {
        // Prefer another host (this one may have just died), else this one again.
        retried = true;
        fresh_only = true;
        exclude = host;
        counters->retries.Add();
        x.conn.reset();
        continue;
      }
      if (hr != HeadRead::kOk) {
        x.SetHeadError(hr);
        break;
      }
      x.request_read = true;
      record.bytes_received += body.size();
      down.worker.counters().bytes_received.Add(body.size());
      down.in.consume(buffered.bytes);
      consumed = true;
      co_await RelayResponse(x);
    } else {
      if (head.expect_continue && head.version >= 11 && !head.continue_sent) {
        down.deadline.Arm(down.listener.limits.idle_timeout);
        const IoResult w = co_await down.stream.Write(net::buffer(kContinueResponse));
        down.deadline.Disarm();
        if (w.ec) {
          x.client_gone = true;
          break;
        }
      }
      down.in.consume(head.header_bytes);  // `head`'s views die here; Upload sends the rest
      consumed = true;
      co_await (Upload(x, limit) || Download(x));
      if (!x.error && !x.response_started && !x.client_gone && x.request_deadline.fired()) {
        x.error = ProxyError{ProxyErrorKind::kRequestTimeout};
      }
    }
    break;
  }
  x.request_deadline.Disarm();
  x.up_deadline.Disarm();

  // Passive health: connect failures (counted above), resets, timeouts and malformed
  // answers count against the host; 5xx answers only when the cluster says so (any client
  // can ask for a URL that fails).
  if (host_ref) {
    const bool failed = x.upstream_failed || (x.def.outlier.count_5xx && x.response_head_seen &&
                                              bufs.response.status >= 500);
    if (failed) {
      if (host_ref->outlier().RecordFailure(x.def.outlier, x.down.worker.Now())) counters->ejections.Add();
    } else if (x.response_head_seen) {
      host_ref->outlier().RecordSuccess();
    }
  }

  bool keep_alive = false;
  if (x.error && !x.response_started) {
    if (!x.client_gone) {
      const bool fully_read = buffered.complete || x.request_read;
      if (buffered.complete && !consumed) down.in.consume(buffered.bytes);
      keep_alive = co_await SendLocalReply(down, *x.error, record, x.head_method,
                                           head.framing.keep_alive && !down.worker.draining(),
                                           fully_read, bufs.response_head);
    }
  } else if (x.response_started) {
    keep_alive = x.response_complete && x.request_read && !x.close_client;
  }

  if (x.conn) {
    Host& host = x.conn->host();
    if (x.upstream_reusable && x.request_sent && x.response_complete && !host.retired) {
      ++x.conn->requests;
      std::unique_ptr<UpstreamConnection> rejected =
          host.pool().Put(std::move(x.conn), x.down.worker.Now(), x.def.pool.max_idle);
      if (!rejected) host.WakeOne();  // a waiter for max_connections can take it
    } else {
      x.conn.reset();
    }
  }
  co_return keep_alive;
}

}  // namespace onedomain::dataplane
