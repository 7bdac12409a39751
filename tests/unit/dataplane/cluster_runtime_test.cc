#include "dataplane/upstream/cluster_runtime.h"

#include <gtest/gtest.h>

#include "dataplane/runtime/dispatcher.h"
#include "dataplane/upstream/upstream_connection.h"

namespace onedomain::dataplane {
namespace {

using boost::asio::ip::make_address;
using tcp = boost::asio::ip::tcp;

std::shared_ptr<CompiledCluster> Def(size_t endpoints) {
  auto def = std::make_shared<CompiledCluster>();
  def->name = "agents";
  for (size_t i = 0; i < endpoints; ++i) {
    CompiledEndpoint e;
    e.host = "agents-service";
    e.port = 8000;
    e.authority = "agents-service:8000";
    e.addresses.emplace_back(make_address("10.0.0." + std::to_string(i + 1)), 8000);
    def->endpoints.push_back(e);
  }
  return def;
}

TEST(ClusterRuntimeTest, DnsRefreshKeepsHostsThatStayAndRetiresTheRest) {
  stats::ClusterCounters counters;
  Ref<ClusterRuntime> cluster(new ClusterRuntime(Def(1), &counters));
  ASSERT_EQ(cluster->hosts().size(), 1u);
  Ref<Host> kept(cluster->hosts()[0]);
  kept->outlier().RecordFailure(OutlierConfig{5, std::chrono::seconds(1)}, Clock::now());

  cluster->SetAddresses(0, {tcp::endpoint(make_address("10.0.0.1"), 8000),
                            tcp::endpoint(make_address("10.0.0.9"), 8000)});
  ASSERT_EQ(cluster->hosts().size(), 2u);
  EXPECT_EQ(cluster->hosts()[0], kept.get());  // same object: pool and outlier state survive
  EXPECT_EQ(kept->outlier().consecutive_failures(), 1u);
  EXPECT_EQ(cluster->hosts()[1]->authority(), "agents-service:8000");

  cluster->SetAddresses(0, {tcp::endpoint(make_address("10.0.0.9"), 8000)});
  ASSERT_EQ(cluster->hosts().size(), 1u);
  EXPECT_TRUE(kept->retired);  // requests still holding it finish, nothing is pooled on it
  EXPECT_NE(cluster->hosts()[0], kept.get());
}

TEST(ClusterRuntimeTest, EmptyAnswerMeansNoHost) {
  stats::ClusterCounters counters;
  Ref<ClusterRuntime> cluster(new ClusterRuntime(Def(2), &counters));
  EXPECT_EQ(cluster->hosts().size(), 2u);
  cluster->SetAddresses(1, {});
  EXPECT_EQ(cluster->hosts().size(), 1u);
  EXPECT_NE(cluster->Pick(Clock::now()), nullptr);
  cluster->SetAddresses(0, {});
  EXPECT_EQ(cluster->Pick(Clock::now()), nullptr);
}

TEST(ClusterRuntimeTest, ConnectionsCountAndPoolOnTheirHost) {
  Dispatcher dispatcher;
  stats::ClusterCounters counters;
  Ref<ClusterRuntime> cluster(new ClusterRuntime(Def(1), &counters));
  Host* host = cluster->hosts()[0];
  {
    auto conn = std::make_unique<UpstreamConnection>(AnyStream(dispatcher), Ref<Host>(host));
    EXPECT_EQ(host->open_connections, 1u);
    EXPECT_EQ(counters.connections_active.Get(), 1);
    EXPECT_EQ(host->pool().Put(std::move(conn), Clock::now(), 4), nullptr);
  }
  EXPECT_EQ(host->open_connections, 1u);                     // idle in the pool
  cluster->SweepIdle(Clock::now() + std::chrono::hours(1));  // past idle_timeout
  EXPECT_EQ(host->open_connections, 0u);
  EXPECT_EQ(counters.connections_active.Get(), 0);
}

}  // namespace
}  // namespace onedomain::dataplane
