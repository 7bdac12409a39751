#include "dataplane/ws_tunnel/ws_upgrade.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>

#include "common/config/defaults.h"
#include "common/config/duration.h"
#include "dataplane/http_proxy/body_relay.h"
#include "dataplane/http_proxy/chunked_scanner.h"
#include "dataplane/http_proxy/local_reply.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"
#include "dataplane/worker/worker_config.h"
#include "dataplane/upstream/cluster_runtime.h"
#include "dataplane/ws_tunnel/ws_upgrade_checks.h"
#include "onedomain/v1/snapshot.pb.h"
#include "onedomain/v1/websocket_policy.pb.h"

namespace onedomain::dataplane {
namespace {

constexpr uint32_t kMinResponseHeaderLimit = 64 * 1024;

std::chrono::nanoseconds PolicyDuration(bool has, const google::protobuf::Duration& d,
                                        std::chrono::nanoseconds fallback) {
  return has ? config::ToChrono(d) : fallback;
}

// Connects to a host picked by the cluster's balancer; one retry on another host.
net::awaitable<std::unique_ptr<UpstreamConnection>> ConnectUpstream(Downstream& down,
                                                                     ClusterRuntime& cluster,
                                                                     std::optional<ProxyError>& error) {
  const CompiledCluster& def = cluster.def();
  const Host* exclude = nullptr;
  for (int attempt = 0; attempt < 2; ++attempt) {
    Host* host = cluster.Pick(down.worker.Now(), exclude);
    if (host == nullptr) {
      if (!error) error = ProxyError{ProxyErrorKind::kNoHealthyUpstream};
      co_return nullptr;
    }
    auto conn = std::make_unique<UpstreamConnection>(AnyStream(down.worker.dispatcher()),
                                                     Ref<Host>(host));
    Timer deadline(down.worker.dispatcher(), [s = &conn->stream()] { s->Cancel(); });
    deadline.Arm(def.connect_timeout);
    const error_code ec = co_await conn->stream().Connect(host->address());
    deadline.Disarm();
    if (!ec) co_return conn;
    error = deadline.fired() ? ProxyError{ProxyErrorKind::kUpstreamConnectTimeout}
                             : ProxyError{ProxyErrorKind::kUpstreamConnectFailed};
    cluster.counters()->connect_failures.Add();
    if (host->outlier().RecordFailure(def.outlier, down.worker.Now())) cluster.counters()->ejections.Add();
    exclude = host;
    if (attempt == 0) cluster.counters()->retries.Add();
  }
  co_return nullptr;
}

}  // namespace

net::awaitable<bool> ServeWebSocketUpgrade(Downstream& down, const RequestHead& head,
                                           const CompiledRoute& route, WorkerConfig& cfg,
                                           RequestRecord& record, ExchangeBuffers& bufs,
                                           std::unique_ptr<WsHandoff>& handoff) {
  using R = stats::UpgradeResult;
  const bool has_body = HasRequestBody(head);
  const bool keep_ok = head.framing.keep_alive && !down.worker.draining();

  // Policy first: a refused upgrade never opens an upstream connection.
  if (auto refusal = CheckUpgrade(head, route, cfg.compiled->source->site().origins())) {
    record.route_counters->RecordUpgrade(refusal->result);
    if (!has_body) down.in.consume(head.header_bytes);
    co_return co_await SendLocalReply(down, refusal->error, record, false, keep_ok, !has_body,
                                      bufs.response_head);
  }

  ClusterRuntime& cluster = *cfg.clusters[route.cluster_index];
  const CompiledCluster& def = cluster.def();
  std::optional<ProxyError> error;
  std::unique_ptr<UpstreamConnection> conn = co_await ConnectUpstream(down, cluster, error);
  if (!conn) {
    record.route_counters->RecordUpgrade(R::kUpstreamFailed);
    down.in.consume(head.header_bytes);
    co_return co_await SendLocalReply(down, *error, record, false, keep_ok, true,
                                      bufs.response_head);
  }
  record.upstream = &conn->host();

  // The upgrade request, rewritten like any request but keeping Upgrade/Connection.
  bufs.request_head.clear();
  UpstreamHeadParams params;
  params.route = &route;
  params.client_ip = down.client_ip;
  params.forwarded_proto = down.listener.forwarded_proto;
  params.default_host = conn->host().authority();
  params.keep_upgrade = true;
  params.cookies = route.cookie_policy.get();
  AppendUpstreamRequestHead(head, params, bufs.request_head);
  down.in.consume(head.header_bytes);  // `head`'s views die here

  Timer up_deadline(down.worker.dispatcher(), [s = &conn->stream()] { s->Cancel(); });
  up_deadline.Arm(def.response_timeout);
  const IoResult w = co_await conn->stream().Write(net::buffer(bufs.request_head));
  bool ok = !w.ec;
  beast::flat_buffer& buf = bufs.upstream_in;
  buf.clear();
  ResponseHead& resp = bufs.response;
  if (ok) {
    ResponseHeadParser parser(resp, std::max(kMinResponseHeaderLimit,
                                             down.listener.limits.max_header_bytes), false);
    for (;;) {
      if (buf.size() > 0) {
        error_code ec;
        const std::string_view view(static_cast<const char*>(buf.data().data()), buf.size());
        if (parser.Feed(view, ec)) break;
        if (ec) {
          ok = false;
          error = ProxyError{ProxyErrorKind::kUpstreamBadResponse};
          break;
        }
      }
      const IoResult r = co_await conn->stream().ReadSome(buf.prepare(kInitialReadSize));
      if (r.ec) {
        ok = false;
        break;
      }
      buf.commit(r.n);
    }
  }
  up_deadline.Disarm();
  if (!ok) {
    if (!error) {
      error = up_deadline.fired() ? ProxyError{ProxyErrorKind::kUpstreamResponseTimeout}
                                  : ProxyError{ProxyErrorKind::kUpstreamReset};
    }
    if (conn->host().outlier().RecordFailure(def.outlier, down.worker.Now())) {
      cluster.counters()->ejections.Add();
    }
    record.route_counters->RecordUpgrade(R::kUpstreamFailed);
    co_return co_await SendLocalReply(down, *error, record, false, keep_ok, true,
                                      bufs.response_head);
  }
  conn->host().outlier().RecordSuccess();

  DownstreamHeadParams dparams;
  dparams.client_version = 11;
  dparams.cookies = route.cookie_policy.get();
  if (dparams.cookies != nullptr) dparams.upstream_host = HostWithoutPort(conn->host().authority());
  record.status = resp.status;
  bufs.response_head.clear();

  if (resp.status != 101) {
    // The backend said no (401, 403, 404, ...): relay its answer as is, then close.
    record.route_counters->RecordUpgrade(R::kUpstreamRefused);
    dparams.close = true;
    AppendDownstreamResponseHead(resp, dparams, bufs.response_head);
    buf.consume(resp.header_bytes);
    RelayIo io{conn->stream(), up_deadline, def.response_timeout,
               down.stream,    down.deadline, down.listener.limits.idle_timeout,
               buf};
    const net::const_buffer head_bytes = net::buffer(bufs.response_head);
    RelayResult rr;
    if (resp.no_body) {
      rr = co_await RelayFixed(io, 0, head_bytes);
    } else if (resp.framing.chunked) {
      ChunkedScanner scanner;
      rr = co_await RelayChunked(io, scanner, head_bytes, 0, false);
    } else if (resp.framing.content_length) {
      rr = co_await RelayFixed(io, *resp.framing.content_length, head_bytes);
    } else {
      rr = co_await RelayUntilEof(io, head_bytes);
    }
    record.bytes_sent += rr.wire_bytes;
    down.worker.counters().bytes_sent.Add(rr.wire_bytes);
    co_return false;
  }

  dparams.keep_upgrade = true;
  AppendDownstreamResponseHead(resp, dparams, bufs.response_head);
  buf.consume(resp.header_bytes);
  down.deadline.Arm(down.listener.limits.idle_timeout);
  const IoResult cw = co_await down.stream.Write(net::buffer(bufs.response_head));
  down.deadline.Disarm();
  if (cw.ec) {
    record.route_counters->RecordUpgrade(R::kAccepted);  // the backend accepted; the client left
    co_return false;
  }
  record.bytes_sent += cw.n;
  down.worker.counters().bytes_sent.Add(cw.n);
  record.route_counters->RecordUpgrade(R::kAccepted);

  auto h = std::make_unique<WsHandoff>();
  h->upstream = std::move(conn);
  h->from_client.assign(static_cast<const char*>(down.in.data().data()), down.in.size());
  down.in.consume(down.in.size());
  h->from_upstream.assign(static_cast<const char*>(buf.data().data()), buf.size());
  buf.consume(buf.size());
  h->counters = record.route_counters;
  h->route_slot = route.stats_slot;
  const v1::WebSocketPolicy* p = route.websocket_policy.get();
  if (p != nullptr) {
    h->idle_timeout = PolicyDuration(p->has_idle_timeout(), p->idle_timeout(), {});
    h->keepalive_interval = PolicyDuration(p->has_keepalive_interval(), p->keepalive_interval(), {});
    h->drain_grace = PolicyDuration(p->has_drain_grace(), p->drain_grace(),
                                    config::defaults::kWsDrainGrace);
    h->drain_spread = PolicyDuration(p->has_drain_spread(), p->drain_spread(),
                                     config::defaults::kWsDrainSpread);
  } else {
    h->drain_grace = config::defaults::kWsDrainGrace;
    h->drain_spread = config::defaults::kWsDrainSpread;
  }
  handoff = std::move(h);
  co_return false;
}

}  // namespace onedomain::dataplane
