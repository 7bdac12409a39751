#include "dataplane/routing/route_table.h"

#include <gtest/gtest.h>

namespace onedomain::dataplane {
namespace {

CompiledRoute Route(std::string name, std::string path, bool exact = false, std::string host = "",
                    bool wildcard = false) {
  CompiledRoute r;
  r.name = std::move(name);
  r.path = std::move(path);
  r.exact = exact;
  r.host = std::move(host);
  r.host_wildcard = wildcard;
  return r;
}

TEST(RoutingTest, FirstMatchWinsPrefixAndExact) {
  const RouteTable table({Route("health", "/healthz", true), Route("api", "/api/v1/"),
                          Route("ws", "/ws/"), Route("frontend", "/")});
  auto name = [&](std::string_view host, std::string_view path) {
    const CompiledRoute* r = table.Match(host, path);
    return r == nullptr ? std::string("none") : r->name;
  };
  EXPECT_EQ(name("h", "/healthz"), "health");
  EXPECT_EQ(name("h", "/healthz/x"), "frontend");
  EXPECT_EQ(name("h", "/api/v1/echo"), "api");
  EXPECT_EQ(name("h", "/api/v1"), "frontend");
  EXPECT_EQ(name("h", "/ws/chat/1"), "ws");
  EXPECT_EQ(name("h", "/index.html"), "frontend");
  const RouteTable no_default({Route("api", "/api/")});
  EXPECT_EQ(no_default.Match("h", "/other"), nullptr);
}

TEST(RoutingTest, HostMatchIgnoresCaseAndPortAndSupportsWildcards) {
  const RouteTable table(
      {Route("exact", "/", false, "amir.hirecj.ai"), Route("sub", "/", false, "hirecj.ai", true)});
  EXPECT_EQ(table.Match("AMIR.hirecj.ai:443", "/")->name, "exact");
  EXPECT_EQ(table.Match("amir.hirecj.ai.", "/")->name, "exact");
  EXPECT_EQ(table.Match("x.hirecj.ai", "/")->name, "sub");
  EXPECT_EQ(table.Match("a.b.hirecj.ai", "/")->name, "sub");
  EXPECT_EQ(table.Match("hirecj.ai", "/"), nullptr);
  EXPECT_EQ(table.Match("evilhirecj.ai", "/"), nullptr);
}

TEST(RoutingTest, TargetsAndHosts) {
  EXPECT_EQ(PathOfTarget("/a/b?c=d"), "/a/b");
  EXPECT_EQ(PathOfTarget("/"), "/");
  EXPECT_EQ(PathOfTarget("http://h:80/p?q"), "/p");
  EXPECT_EQ(PathOfTarget("https://h"), "/");
  EXPECT_EQ(PathOfTarget("*"), "");
  EXPECT_EQ(PathOfTarget("h:443"), "");
  EXPECT_EQ(HostWithoutPort("a.b:8080"), "a.b");
  EXPECT_EQ(HostWithoutPort("[::1]:80"), "::1");
  EXPECT_EQ(HostWithoutPort("a.b"), "a.b");
}

}  // namespace
}  // namespace onedomain::dataplane
