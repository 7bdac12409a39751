#include "controlplane/server/diff.h"

#include <gtest/gtest.h>

#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

v1::Snapshot Base() {
  v1::Snapshot s;
  auto* c = s.add_clusters();
  c->set_name("agents");
  auto* e = c->add_endpoints();
  e->set_host("a");
  e->set_port(1);
  s.add_routes()->set_name("api");
  s.add_routes()->set_name("ws");
  return s;
}

TEST(Diff, NoChange) {
  EXPECT_EQ(DiffSnapshots(Base(), Base()), (std::vector<std::string>{"no change"}));
}

TEST(Diff, EndpointsChangeIsSpelledOut) {
  auto after = Base();
  after.mutable_clusters(0)->mutable_endpoints(0)->set_host("b");
  after.mutable_clusters(0)->mutable_endpoints(0)->set_port(2);
  EXPECT_EQ(DiffSnapshots(Base(), after),
            (std::vector<std::string>{"clusters[agents].endpoints: a:1 -> b:2"}));
}

TEST(Diff, AddedRemovedReorderedAndPolicies) {
  auto after = Base();
  after.mutable_routes()->SwapElements(0, 1);
  EXPECT_EQ(DiffSnapshots(Base(), after), (std::vector<std::string>{"routes: reordered"}));
  after = Base();
  after.mutable_routes()->RemoveLast();
  after.add_clusters()->set_name("frontend");
  after.mutable_cookie_policy()->add_domain_rewrites()->set_from("x");
  auto diff = DiffSnapshots(Base(), after);
  EXPECT_EQ(diff, (std::vector<std::string>{"clusters[frontend]: added", "routes[ws]: removed",
                                            "cookie_policy: changed"}));
}

}  // namespace
}  // namespace onedomain::controlplane
