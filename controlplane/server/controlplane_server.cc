#include "controlplane/server/controlplane_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <prometheus/registry.h>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <sstream>

#include "common/config/defaults.h"
#include "common/config/duration.h"
#include "common/http/admin_server.h"
#include "common/log/log.h"
#include "common/metrics/exposition.h"
#include "common/strings/strings.h"
#include "controlplane/admin/admin_service.h"
#include "controlplane/auth/tokens.h"
#include "controlplane/console/console.h"
#include "controlplane/discovery/discovery_service.h"
#include "controlplane/fleet/fleet.h"
#include "controlplane/fleet/fleet_collector.h"
#include "controlplane/rollout/rollout_controller.h"
#include "controlplane/server/config_manager.h"
#include "controlplane/server/metrics.h"
#include "controlplane/server/serial_executor.h"
#include "controlplane/store/open_store.h"

namespace onedomain::controlplane {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(str::Cat("cannot read ", what, " ", path));
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const v1::GrpcEndpoint& endpoint) {
  if (endpoint.cert_file().empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options;
  auto cert = ReadFile(endpoint.cert_file(), "grpc.cert_file");
  if (!cert.ok()) return cert.status();
  auto key = ReadFile(endpoint.key_file(), "grpc.key_file");
  if (!key.ok()) return key.status();
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!endpoint.client_ca_file().empty()) {
    auto ca = ReadFile(endpoint.client_ca_file(), "grpc.client_ca_file");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    // A certificate, when presented, must verify; clients without one (the admin CLI, nodes
    // with a token) still connect, and DiscoveryService decides who may open a node stream.
    options.client_certificate_request = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace

namespace {
v1::ListNodesResponse ClusterNodes(ControlplaneServer::State& s);
ConsoleView MakeConsoleView(ControlplaneServer::State& s);
}  // namespace

struct ControlplaneServer::State {
  explicit State(v1::ControlplaneConfig c)
      : config(std::move(c)),
        metrics(*registry),
        fleet(std::chrono::duration_cast<std::chrono::seconds>(onedomain::config::DurationOr(
                  config.nodes().has_forget_after(), config.nodes().forget_after(),
                  onedomain::config::defaults::kForgetNodesAfter)),
              std::chrono::steady_clock::now,
              config.nodes().has_max_nodes() ? config.nodes().max_nodes()
                                             : onedomain::config::defaults::kMaxNodes) {}

  v1::ControlplaneConfig config;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  ControlplaneMetrics metrics;
  std::unique_ptr<Store> store;
  TokenSet tokens;
  Fleet fleet;
  std::shared_ptr<FleetCollector> collector;
  std::unique_ptr<SerialExecutor> executor;
  std::unique_ptr<ConfigManager> manager;
  std::unique_ptr<RolloutController> rollouts;
  std::unique_ptr<Console> console;
  std::unique_ptr<DiscoveryService> discovery;
  std::unique_ptr<AdminService> admin;
  std::unique_ptr<grpc::Server> grpc_server;
  int grpc_port = 0;
  http::AdminServer http;
  std::atomic<bool> ready{false};
  std::string replica_id;  // set before the store's membership starts
};

namespace {

// This replica's nodes plus the other live replicas' (their lease-bound summaries in etcd):
// the same list on every replica, give or take one refresh (TTL/3). A node listed by two
// replicas (it just moved) is shown once, connected wins. The file store has no peers.
v1::ListNodesResponse ClusterNodes(ControlplaneServer::State& s) {
  v1::ListNodesResponse out = s.fleet.List();
  const std::vector<PeerReplica> peers = s.store ? s.store->Peers() : std::vector<PeerReplica>{};
  if (s.replica_id.empty()) return out;
  out.add_replicas(s.replica_id);
  std::map<std::string, int> index;
  for (int i = 0; i < out.nodes_size(); ++i) {
    out.mutable_nodes(i)->set_replica(s.replica_id);
    index[out.nodes(i).node_id()] = i;
  }
  for (const PeerReplica& peer : peers) {
    v1::ListNodesResponse theirs;
    if (!theirs.ParseFromString(peer.summary)) continue;
    out.add_replicas(peer.id);
    for (v1::NodeStatus& n : *theirs.mutable_nodes()) {
      n.set_replica(peer.id);
      auto it = index.find(n.node_id());
      if (it == index.end()) {
        index[n.node_id()] = out.nodes_size();
        *out.add_nodes() = std::move(n);
      } else if (n.connected() && !out.nodes(it->second).connected()) {
        *out.mutable_nodes(it->second) = std::move(n);
      }
    }
  }
  uint64_t good = 0;
  bool any = false;
  for (const v1::NodeStatus& n : out.nodes()) {
    if (!n.connected()) continue;
    good = any ? std::min(good, n.version_acked()) : n.version_acked();
    any = true;
  }
  out.set_last_known_good_version(good);
  return out;
}

}  // namespace

namespace {

// What the fleet console shows; called on the HTTP thread. History is read on the admin
// executor (the store's thread), waiting at most a second (then shown without it).
ConsoleView MakeConsoleView(ControlplaneServer::State& s) {
  ConsoleView view;
  const v1::ListNodesResponse listed = s.fleet.List();
  view.latest_version = listed.latest_version();
  view.last_known_good = listed.last_known_good_version();
  if (s.rollouts) view.rollout = s.rollouts->Status();
  const bool rolling = view.rollout.state() == v1::ROLLOUT_STATE_RUNNING ||
                       view.rollout.state() == v1::ROLLOUT_STATE_PAUSED;
  const std::set<std::string> canaries(view.rollout.canary_nodes().begin(),
                                       view.rollout.canary_nodes().end());
  const auto now = std::chrono::steady_clock::now();
  const auto wall = std::chrono::system_clock::now();
  for (const NodeRecord& n : s.fleet.Nodes()) {
    ConsoleNode c;
    c.id = n.hello.node_id();
    c.zone = n.hello.zone();
    c.connected = n.connection != nullptr;
    c.version = n.version_acked;
    c.last_report_age = std::chrono::duration<double>(wall - n.last_seen).count();
    c.websockets = n.report.websocket_connections_active();
    c.canary = rolling && canaries.count(c.id) != 0;
    // Rates between the last two reports, while they are recent.
    if (n.has_prev_report && c.connected && now - n.report_at < std::chrono::seconds(30)) {
      const double dt = std::chrono::duration<double>(n.report_at - n.prev_report_at).count();
      const rollout::Counters a = rollout::CountersOf(n.prev_report);
      const rollout::Counters b = rollout::CountersOf(n.report);
      if (dt > 0 && b.requests >= a.requests && b.http_5xx >= a.http_5xx) {
        c.requests_per_second = (b.requests - a.requests) / dt;
        c.errors_5xx_per_second = (b.http_5xx - a.http_5xx) / dt;
      }
    }
    view.nodes.push_back(std::move(c));
  }
  auto history = std::make_shared<std::promise<std::vector<v1::AuditRecord>>>();
  std::future<std::vector<v1::AuditRecord>> got = history->get_future();
  s.executor->Post([&s, history] {
    v1::HistoryRequest request;
    request.set_limit(20);
    auto h = s.manager->History(request);
    std::vector<v1::AuditRecord> out;
    if (h.ok()) out.assign(h->entries().begin(), h->entries().end());
    history->set_value(std::move(out));
  });
  if (got.wait_for(std::chrono::seconds(1)) == std::future_status::ready) view.history = got.get();
  return view;
}

}  // namespace

ControlplaneServer::ControlplaneServer(v1::ControlplaneConfig config)
    : state_(std::make_unique<State>(std::move(config))) {}

ControlplaneServer::~ControlplaneServer() { Shutdown(); }

absl::Status ControlplaneServer::Start() {
  State& s = *state_;
  const v1::ControlplaneConfig& c = s.config;

  StoreObserver store_observer;
  store_observer.set_up = [&s](bool up) { s.metrics.SetStoreUp(up); };
  store_observer.observe_request = [&s](std::string_view op, double seconds) {
    s.metrics.ObserveStoreRequest(op, seconds);
  };
  store_observer.set_leader = [&s](bool leader) {
    s.metrics.SetLeader(leader);
    // Rollouts are judged by the leader only; the controller lives on the executor.
    if (s.executor && s.rollouts) {
      s.executor->Post([&s, leader] { s.rollouts->SetLeader(leader); });
    }
  };
  auto store = OpenStore(c.store(), std::move(store_observer));
  if (!store.ok()) return store.status();
  s.store = std::move(*store);
  for (const auto& [kind, n] : s.store->StateLoss()) {
    s.metrics.CountStateLoss(kind, static_cast<double>(n));
  }

  const std::string token_env =
      c.auth().token_env().empty() ? config::defaults::kTokenEnv : c.auth().token_env();
  auto tokens = TokenSet::Load(c.auth().tokens_file(), token_env, c.auth().node_token_env());
  if (!tokens.ok()) return tokens.status();
  s.tokens = std::move(*tokens);
  if (s.tokens.size() == s.tokens.node_tokens()) {
    log::Warn("controlplane", str::Cat("no admin tokens configured (auth.tokens_file or $",
                                       token_env, "): every Admin call will be refused"));
  }
  if (c.nodes().allow_unauthenticated()) {
    log::Warn("controlplane",
              "nodes.allow_unauthenticated: anyone who reaches the gRPC port "
              "can read the config and pose as a node");
  } else if (s.tokens.node_tokens() == 0 && c.grpc().client_ca_file().empty()) {
    log::Warn("controlplane",
              "no node credentials configured (a `node` token in "
              "auth.tokens_file, or grpc.client_ca_file): every node stream "
              "will be refused");
  }

  s.fleet.SetPushObserver([&s](double seconds) { s.metrics.ObservePush(seconds); });
  s.collector = std::make_shared<FleetCollector>(s.fleet);
  s.executor = std::make_unique<SerialExecutor>();
  s.manager = std::make_unique<ConfigManager>(
      *s.store, s.fleet, [&s](uint64_t version) { s.metrics.SetLatestVersion(version); });
  if (absl::Status st = rollout::Validate(c.rollout(), "rollout"); !st.ok()) return st;
  s.rollouts =
      std::make_unique<RolloutController>(*s.store, s.fleet, *s.executor, *s.registry, c.rollout());
  s.rollouts->SetManager(s.manager.get());
  if (s.store->Shared()) {
    // The leader judges every replica's nodes (their summaries carry the counters).
    s.rollouts->SetNodeSource([&s] { return ClusterNodes(s); });
  }
  s.manager->SetRollouts(s.rollouts.get());
  if (absl::Status st = s.manager->Start(c.has_seed() ? &c.seed() : nullptr); !st.ok()) {
    return st;
  }
  // Rollouts are judged every 200 ms: reports arrive every report_interval (5s by default,
  // 200ms in tests), and a NACK or a failing gate should act within a tick of arriving.
  s.rollouts->StartTicker(std::chrono::milliseconds(200));
  // Versions other replicas commit (etcd): published to this replica's nodes from the admin
  // executor, where every store and fleet change of this process happens.
  s.store->Watch([&s](std::shared_ptr<const v1::Snapshot> snapshot) {
    s.executor->Post([&s, snapshot = std::move(snapshot)] { s.manager->OnStoreChange(snapshot); });
  });

  // A node serving a version above the store's (restored from an older backup) raises the
  // floor; the store is only touched on the executor, and the fleet must not block.
  s.fleet.SetAheadObserver([&s](const std::string& node_id, uint64_t version) {
    s.executor->Post([&s, node_id, version] {
      if (s.manager->RaiseFloor(version, node_id)) s.metrics.CountStateLoss("node_ahead_of_store");
    });
  });
  DiscoveryService::Options discovery_options;
  discovery_options.allow_unauthenticated = c.nodes().allow_unauthenticated();
  discovery_options.on_refused = [&s](std::string_view code) {
    s.metrics.CountNodeStreamRefused(code);
  };
  s.discovery = std::make_unique<DiscoveryService>(s.fleet, s.tokens, discovery_options);
  s.admin = std::make_unique<AdminService>(
      s.tokens, *s.manager, s.fleet, *s.executor, s.metrics, [&s] { return ClusterNodes(s); },
      s.rollouts.get());
  auto creds = Credentials(c.grpc());
  if (!creds.ok()) return creds.status();
  const std::string grpc_address =
      str::Cat(c.grpc().address().empty() ? "0.0.0.0" : c.grpc().address(), ":",
               c.grpc().has_port() ? c.grpc().port() : config::defaults::kControlplaneGrpcPort);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(grpc_address, *creds, &s.grpc_port);
  builder.RegisterService(s.discovery.get());
  builder.RegisterService(s.admin.get());
  // Find dead node streams (a node that vanished without a FIN) within about a minute, and
  // accept the nodes' own keepalive pings.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  s.grpc_server = builder.BuildAndStart();
  if (s.grpc_server == nullptr || s.grpc_port == 0) {
    return absl::UnavailableError(str::Cat("cannot serve gRPC on ", grpc_address));
  }

  s.http.Handle("/healthz", [](std::string_view, std::string_view) {
    return http::AdminReply{200, "text/plain; charset=utf-8", "ok\n"};
  });
  s.http.Handle("/readyz", [&s](std::string_view, std::string_view) {
    return s.ready.load() ? http::AdminReply{200, "text/plain; charset=utf-8", "ready\n"}
                          : http::AdminReply{503, "text/plain; charset=utf-8", "not ready\n"};
  });
  s.http.Handle("/metrics", [&s](std::string_view, std::string_view) {
    const v1::ListNodesResponse all = ClusterNodes(s);
    double connected = 0;
    double on_latest = 0;
    for (const v1::NodeStatus& n : all.nodes()) {
      if (!n.connected()) continue;
      ++connected;
      if (n.version_acked() >= all.latest_version()) ++on_latest;
    }
    s.metrics.SetClusterView(std::max(1, all.replicas_size()), connected, on_latest);
    std::string body = metrics::Serialize(*s.registry);
    body += metrics::Serialize(*s.collector);
    return http::AdminReply{200, metrics::kContentType, std::move(body)};
  });
  s.console = std::make_unique<Console>(s.tokens, [&s] { return MakeConsoleView(s); });
  s.console->Register(s.http);
  const std::string http_address = c.http().address().empty() ? "127.0.0.1" : c.http().address();
  const uint16_t http_port = static_cast<uint16_t>(
      c.http().has_port() ? c.http().port() : config::defaults::kControlplaneHttpPort);
  if (absl::Status st = s.http.Start(http_address, http_port); !st.ok()) return st;
  // Shared store: register this replica and its nodes' summary under a lease, and campaign
  // for the leadership of singleton work. The id is what other replicas and `admin nodes`
  // show: the host name and the gRPC port.
  if (s.store->Shared()) {
    char host[256] = {};
    if (::gethostname(host, sizeof(host) - 1) != 0) std::snprintf(host, sizeof(host), "unknown");
    s.replica_id = str::Cat(host, ":", s.grpc_port);
    s.store->StartMembership(s.replica_id, [&s] {
      v1::ListNodesResponse own = s.fleet.List();
      std::string out;
      own.SerializeToString(&out);
      return out;
    });
  }
  s.ready.store(true);
  log::Info("controlplane",
            str::Cat("serving gRPC on ", grpc_address.substr(0, grpc_address.rfind(':')), ":",
                     s.grpc_port, " (", c.grpc().cert_file().empty() ? "plaintext" : "TLS",
                     "), HTTP on ", http_address, ":", s.http.port(), ", ", s.store->Describe(),
                     " at version ", s.store->latest_version()));
  return absl::OkStatus();
}

uint16_t ControlplaneServer::grpc_port() const { return static_cast<uint16_t>(state_->grpc_port); }

uint16_t ControlplaneServer::http_port() const { return state_->http.port(); }

void ControlplaneServer::Shutdown() {
  State& s = *state_;
  s.ready.store(false);
  if (s.grpc_server) {
    // Give admin calls in progress a moment; node streams are cancelled and reconnect to the
    // next control plane.
    s.grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    s.grpc_server->Wait();
    s.grpc_server.reset();
  }
  if (s.store) s.store->Stop();              // no more watch events posted after this
  if (s.rollouts) s.rollouts->StopTicker();  // no more ticks posted after this
  s.http.Stop();                             // the console posts to the executor: stopped before it
  s.executor.reset();                        // runs what was posted, then joins
}

}  // namespace onedomain::controlplane
