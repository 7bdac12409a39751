// Hello validation and node-token patterns of the ConfigDiscovery service (pure functions).

#include <gtest/gtest.h>

#include "common/strings/strings.h"
#include "controlplane/discovery/discovery_service.h"

namespace onedomain::controlplane {
namespace {

v1::Hello Hello(const std::string& id) {
  v1::Hello h;
  h.set_node_id(id);
  return h;
}

TEST(ValidateHello, NodeIdCharsetAndLength) {
  EXPECT_TRUE(ValidateHello(Hello("web-1.zone_a")).ok());
  EXPECT_TRUE(ValidateHello(Hello(std::string(63, 'a'))).ok());
  for (const std::string& bad :
       {std::string(""), std::string(64, 'a'), std::string("a b"), std::string("a\nINFO forged"),
        std::string("a/b"), std::string("n\x1b[31m"), std::string("caf\xc3\xa9")}) {
    const absl::Status s = ValidateHello(Hello(bad));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("hello.node_id"), absl::string_view::npos) << s;
  }
  v1::Hello big = Hello("a");
  big.set_pod(std::string(257, 'p'));
  EXPECT_NE(ValidateHello(big).message().find("hello.pod"), absl::string_view::npos);
}

TEST(NodeIdMatches, ExactAndStar) {
  EXPECT_TRUE(NodeIdMatches("*", "anything"));
  EXPECT_TRUE(NodeIdMatches("web-1", "web-1"));
  EXPECT_FALSE(NodeIdMatches("web-1", "web-12"));
  EXPECT_TRUE(NodeIdMatches("web-*", "web-12"));
  EXPECT_FALSE(NodeIdMatches("web-*", "db-1"));
  EXPECT_TRUE(NodeIdMatches("*-dataplane-*", "rel-onedomain-dataplane-5d9f-x2"));
  EXPECT_FALSE(NodeIdMatches("a*b", "acbd"));
}

TEST(EscapeForLog, PeerTextCannotForgeLines) {
  EXPECT_EQ(str::EscapeForLog("ok-1"), "ok-1");
  EXPECT_EQ(str::EscapeForLog("a\nb\\c\x1b"), "a\\x0ab\\\\c\\x1b");
  EXPECT_EQ(str::EscapeForLog(std::string(300, 'x'), 4), "xxxx...(300 bytes)");
}

}  // namespace
}  // namespace onedomain::controlplane
