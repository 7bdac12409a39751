// The config client against the real ConfigDiscovery service and Fleet, in process, over
// loopback gRPC.

#include "dataplane/config_client/config_client.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/config/snapshot_hash.h"
#include "controlplane/auth/tokens.h"
#include "controlplane/discovery/discovery_service.h"
#include "controlplane/fleet/fleet.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::dataplane {
namespace {

using controlplane::DiscoveryService;
using controlplane::Fleet;

constexpr char kNodeToken[] = "node-token-0123456789abcdef";

// Polls `condition` until true or 10 s pass.
template <typename F>
bool WaitFor(F condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

std::shared_ptr<const v1::Snapshot> Snap(uint64_t v, const std::string& cluster = "agents") {
  auto s = std::make_shared<v1::Snapshot>();
  s->set_version(v);
  s->add_clusters()->set_name(cluster);
  return s;
}

class FakeControlPlane {
 public:
  // Node streams need a `node` token for ids matching `node_pattern`.
  explicit FakeControlPlane(int port = 0, const std::string& node_pattern = "node-*")
      : tokens_(MakeTokens(node_pattern)),
        service_(fleet, tokens_, {false, [this](std::string_view code) {
                                    std::lock_guard lock(refused_mu_);
                                    refused_.emplace_back(code);
                                  }}) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~FakeControlPlane() { Stop(); }
  void Stop() {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now());
      server_->Wait();
      server_.reset();
    }
  }
  int port() const { return port_; }
  v1::NodeStatus Node(size_t i = 0) {
    auto list = fleet.List();
    return static_cast<int>(i) < list.nodes_size() ? list.nodes(static_cast<int>(i))
                                                   : v1::NodeStatus();
  }

  std::vector<std::string> Refused() {
    std::lock_guard lock(refused_mu_);
    return refused_;
  }

  Fleet fleet;

 private:
  static controlplane::TokenSet MakeTokens(const std::string& node_pattern) {
    controlplane::TokenSet tokens;
    tokens.Add(node_pattern, controlplane::Role::kNode, kNodeToken);
    tokens.Add("ops", controlplane::Role::kAdmin, "admin-token-0123456789abcdef");
    return tokens;
  }

  std::mutex refused_mu_;
  std::vector<std::string> refused_;
  controlplane::TokenSet tokens_;
  DiscoveryService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

class ConfigClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/od-cc-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<ConfigClient> MakeClient(int port, uint64_t serving = 0,
                                           std::string serving_hash = "",
                                           std::string token = kNodeToken) {
    v1::ControlPlaneSource source;
    source.set_address("127.0.0.1:" + std::to_string(port));
    if (!token.empty()) {
      std::ofstream(dir_ + "/node.token") << token << "\n";
      source.set_token_file(dir_ + "/node.token");
    }
    source.set_cache_path(dir_ + "/snapshot.pb");
    source.mutable_backoff_initial()->set_nanos(20 * 1000 * 1000);
    source.mutable_backoff_max()->set_nanos(200 * 1000 * 1000);
    source.mutable_report_interval()->set_nanos(50 * 1000 * 1000);
    v1::Node node;
    node.set_id("node-1");
    node.set_zone("z1");
    ConfigClient::Callbacks callbacks;
    callbacks.apply = [this](std::shared_ptr<const v1::Snapshot> s) -> absl::Status {
      std::lock_guard lock(mu_);
      applied_.push_back(s->version());
      if (s->clusters_size() > 0 && s->clusters(0).name() == "broken") {
        return absl::InvalidArgumentError("clusters[0]: cannot apply here");
      }
      return absl::OkStatus();
    };
    callbacks.report = [] {
      v1::MetricsReport r;
      r.set_downstream_connections_active(7);
      return r;
    };
    callbacks.connected = [this](bool c) { connected_events_ += c ? 1 : 0; };
    auto client =
        std::make_unique<ConfigClient>(source, node, serving, callbacks, std::move(serving_hash));
    client->Start();
    return client;
  }

  std::vector<uint64_t> Applied() {
    std::lock_guard lock(mu_);
    return applied_;
  }

  std::string dir_;
  std::mutex mu_;
  std::vector<uint64_t> applied_;
  std::atomic<int> connected_events_{0};
};

TEST_F(ConfigClientTest, ConnectsAppliesAcksAndCaches) {
  FakeControlPlane cp;
  cp.fleet.Publish(Snap(1));
  auto client = MakeClient(cp.port());
  ASSERT_TRUE(WaitFor([&] { return cp.Node().version_acked() == 1; }));
  EXPECT_TRUE(client->connected());
  EXPECT_EQ(client->serving_version(), 1u);
  EXPECT_EQ(Applied(), (std::vector<uint64_t>{1}));
  EXPECT_EQ(cp.Node().zone(), "z1");
  auto cached = ConfigClient::LoadCache(dir_ + "/snapshot.pb");
  ASSERT_TRUE(cached.ok());
  EXPECT_EQ(cached->version(), 1u);
  // Reports arrive on the stream.
  ASSERT_TRUE(WaitFor([&] { return cp.Node().downstream_connections_active() == 7; }));

  cp.fleet.Publish(Snap(2));
  ASSERT_TRUE(WaitFor([&] { return cp.Node().version_acked() == 2; }));
  EXPECT_EQ(cp.fleet.LastKnownGood(), 2u);
}

TEST_F(ConfigClientTest, NackKeepsServingVersionAndIsNotRepushed) {
  FakeControlPlane cp;
  cp.fleet.Publish(Snap(1));
  auto client = MakeClient(cp.port());
  ASSERT_TRUE(WaitFor([&] { return cp.Node().version_acked() == 1; }));
  cp.fleet.Publish(Snap(2, "broken"));
  ASSERT_TRUE(WaitFor([&] { return cp.Node().version_nacked() == 2; }));
  EXPECT_EQ(cp.Node().nack_error(), "clusters[0]: cannot apply here");
  EXPECT_EQ(client->serving_version(), 1u);
  EXPECT_EQ(ConfigClient::LoadCache(dir_ + "/snapshot.pb")->version(), 1u);
  EXPECT_EQ(Applied(), (std::vector<uint64_t>{1, 2}));
}

TEST_F(ConfigClientTest, NoPushWhenAlreadyServingLatestButConnected) {
  FakeControlPlane cp;
  cp.fleet.Publish(Snap(4));
  auto client = MakeClient(cp.port(), /*serving=*/4, config::SnapshotHash(*Snap(4)));
  ASSERT_TRUE(WaitFor([&] { return client->connected(); }));
  EXPECT_TRUE(Applied().empty());
  EXPECT_EQ(cp.fleet.LastKnownGood(), 4u);
  EXPECT_EQ(cp.Node().content_hash(), config::SnapshotHash(*Snap(4)));
  EXPECT_EQ(cp.Node().divergence(), "");
}

// A store restored from a backup gave version 4 other content: the node that serves the old
// version 4 says so in its Hello and gets the control plane's version 4 again.
TEST_F(ConfigClientTest, SameVersionOtherContentIsPushedAgain) {
  FakeControlPlane cp;
  cp.fleet.Publish(Snap(4, "new-content"));
  auto client = MakeClient(cp.port(), /*serving=*/4, config::SnapshotHash(*Snap(4, "old")));
  ASSERT_TRUE(WaitFor([&] { return Applied() == std::vector<uint64_t>{4}; }));
  ASSERT_TRUE(WaitFor([&] {
    return cp.Node().version_acked() == 4 &&
           cp.Node().content_hash() == config::SnapshotHash(*Snap(4, "new-content"));
  }));
  EXPECT_EQ(cp.Node().divergence(), "");
  EXPECT_EQ(ConfigClient::LoadCache(dir_ + "/snapshot.pb")->clusters(0).name(), "new-content");
}

TEST_F(ConfigClientTest, StreamWithoutTokenIsRefused) {
  FakeControlPlane cp;
  cp.fleet.Publish(Snap(1));
  auto client = MakeClient(cp.port(), 0, "", /*token=*/"");
  ASSERT_TRUE(WaitFor([&] { return cp.Refused().size() >= 2; }));  // and it keeps trying
  EXPECT_EQ(cp.Refused()[0], "UNAUTHENTICATED");
  EXPECT_FALSE(client->connected());
  EXPECT_EQ(cp.fleet.List().nodes_size(), 0);
  EXPECT_TRUE(Applied().empty());
}

TEST_F(ConfigClientTest, AdminTokenCannotOpenANodeStream) {
  FakeControlPlane cp;
  cp.fleet.Publish(Snap(1));
  auto client = MakeClient(cp.port(), 0, "", "admin-token-0123456789abcdef");
  ASSERT_TRUE(WaitFor([&] { return !cp.Refused().empty(); }));
  EXPECT_EQ(cp.Refused()[0], "PERMISSION_DENIED");
  EXPECT_EQ(cp.fleet.List().nodes_size(), 0);
}

TEST_F(ConfigClientTest, TokenBoundToOtherNodeIdsIsRefused) {
  FakeControlPlane cp(0, "web-*");
  cp.fleet.Publish(Snap(1));
  auto client = MakeClient(cp.port());  // node id "node-1"
  ASSERT_TRUE(WaitFor([&] { return !cp.Refused().empty(); }));
  EXPECT_EQ(cp.Refused()[0], "PERMISSION_DENIED");
  EXPECT_EQ(cp.fleet.List().nodes_size(), 0);
  EXPECT_TRUE(Applied().empty());
}

TEST_F(ConfigClientTest, ReconnectsAfterControlPlaneRestart) {
  auto cp = std::make_unique<FakeControlPlane>();
  const int port = cp->port();
  cp->fleet.Publish(Snap(1));
  auto client = MakeClient(port);
  ASSERT_TRUE(WaitFor([&] { return cp->Node().version_acked() == 1; }));
  cp.reset();  // the control plane goes away
  ASSERT_TRUE(WaitFor([&] { return !client->connected(); }));
  EXPECT_EQ(client->serving_version(), 1u);  // keeps serving what it had

  auto again = std::make_unique<FakeControlPlane>(port);
  again->fleet.Publish(Snap(2));
  ASSERT_TRUE(WaitFor([&] { return again->Node().version_acked() == 2; }));
  EXPECT_TRUE(client->connected());
  EXPECT_GE(connected_events_.load(), 2);
}

TEST_F(ConfigClientTest, StopIsPromptWithoutControlPlane) {
  auto client = MakeClient(1);  // nothing listens on port 1
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto start = std::chrono::steady_clock::now();
  client->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_FALSE(client->connected());
}

TEST(ConfigClientCache, MissingAndCorrupt) {
  EXPECT_EQ(ConfigClient::LoadCache("/nonexistent/x.pb").status().code(),
            absl::StatusCode::kNotFound);
  v1::ControlPlaneSource none;
  none.set_cache_path("none");
  EXPECT_EQ(ConfigClient::CachePath(none), "");
  v1::ControlPlaneSource defaulted;
  EXPECT_EQ(ConfigClient::CachePath(defaulted), "/var/lib/onedomain/snapshot.pb");

  char tmpl[] = "/tmp/od-cache-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string path = dir + "/snapshot.pb";
  const auto write = [&](const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };
  const auto expect_unreadable = [&](const char* what) {
    const auto loaded = ConfigClient::LoadCache(path);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << what;
    EXPECT_EQ(loaded.status().message(), "cached snapshot " + path + " is unreadable") << what;
  };
  // The intact cache first, so the failures below come from the corruption alone.
  std::string intact;
  ASSERT_TRUE(Snap(7, "a-cluster-name-long-enough-to-cut")->SerializeToString(&intact));
  write(intact);
  ASSERT_TRUE(ConfigClient::LoadCache(path).ok());
  EXPECT_EQ(ConfigClient::LoadCache(path)->version(), 7u);

  // Cut short inside the cluster's name, as a torn write would leave it.
  write(intact.substr(0, intact.size() - 5));
  expect_unreadable("truncated");
  // Not a snapshot at all: 'n' (0x6e) is field 13 with wire type 6, which does not exist.
  write("not a snapshot\n");
  expect_unreadable("text");
  std::filesystem::remove_all(dir);
}

// A 0-byte cache parses as an empty "version 0" snapshot; it must be reported as lost.
TEST(ConfigClientCache, EmptyFileIsDataLoss) {
  char tmpl[] = "/tmp/od-cache-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::ofstream(dir + "/snapshot.pb").flush();
  const auto loaded = ConfigClient::LoadCache(dir + "/snapshot.pb");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("empty (0 bytes)"), absl::string_view::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace onedomain::dataplane
