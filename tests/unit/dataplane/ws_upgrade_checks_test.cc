#include "dataplane/http_proxy/ws_upgrade_checks.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "dataplane/http_proxy/phases.h"
#include "dataplane/routing/route_table.h"
#include "onedomain/v1/websocket_policy.pb.h"

namespace onedomain::dataplane {
namespace {

void Parse(const std::string& raw, RequestHead& head) {
  RequestHeadParser parser(head, 65536);
  boost::system::error_code ec;
  ASSERT_TRUE(parser.Feed(raw, ec)) << ec.message();
}

std::string Upgrade(std::string extra, std::string method = "GET",
                    std::string connection = "Upgrade", std::string version = "13",
                    std::string key = "dGhlIHNhbXBsZSBub25jZQ==") {
  return method + " /ws/chat/1 HTTP/1.1\r\nHost: a.example\r\nConnection: " + connection +
         "\r\nUpgrade: websocket\r\nSec-WebSocket-Version: " + version +
         "\r\nSec-WebSocket-Key: " + key + "\r\n" + extra + "\r\n";
}

struct Case {
  std::string raw;
  bool is_upgrade;
  bool well_formed;
};

TEST(UpgradeDetectionTest, Table) {
  const Case cases[] = {
      {Upgrade(""), true, true},
      {Upgrade("", "GET", "keep-alive, Upgrade"), true, true},
      {Upgrade("", "GET", "UPGRADE"), true, true},
      {Upgrade("", "GET", "keep-alive,upgrade"), true, true},
      {Upgrade("", "GET", "keep-alive"), false, true},
      {Upgrade("", "GET", "upgraded"), false, true},
      {Upgrade("", "POST"), true, false},
      {Upgrade("", "GET", "Upgrade", "8"), true, false},
      {Upgrade("", "GET", "Upgrade", "13", "short"), true, false},
      {Upgrade("", "GET", "Upgrade", "13", ""), true, false},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", false, false},
      {"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n"
       "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
       true, true},
  };
  for (const Case& c : cases) {
    RequestHead head;
    Parse(c.raw, head);
    EXPECT_EQ(IsWebSocketUpgrade(head), c.is_upgrade) << c.raw;
    if (c.is_upgrade) {
      EXPECT_EQ(!CheckUpgradeRequest(head).has_value(), c.well_formed) << c.raw;
    }
  }
}

OriginList Origins(std::initializer_list<const char*> list) {
  OriginList l;
  for (const char* o : list) l.Add(std::string(o));
  return l;
}

TEST(OriginTest, Matching) {
  const OriginList site = Origins({"https://amir.hirecj.ai", "http://127.0.0.1:8080"});
  EXPECT_TRUE(OriginAllowed("https://amir.hirecj.ai", site));
  EXPECT_TRUE(OriginAllowed("HTTPS://Amir.HireCJ.ai", site));
  EXPECT_TRUE(OriginAllowed("https://amir.hirecj.ai:443", site));
  EXPECT_TRUE(OriginAllowed("http://127.0.0.1:8080", site));
  EXPECT_FALSE(OriginAllowed("http://amir.hirecj.ai", site));  // scheme matters
  EXPECT_FALSE(OriginAllowed("https://amir.hirecj.ai:8443", site));
  EXPECT_FALSE(OriginAllowed("https://evil.example", site));
  EXPECT_FALSE(OriginAllowed("https://amir.hirecj.ai.evil.example", site));
  EXPECT_FALSE(OriginAllowed("null", site));
  EXPECT_FALSE(OriginAllowed("", site));
  EXPECT_FALSE(OriginAllowed("https://amir.hirecj.ai/path", site));
  EXPECT_TRUE(OriginAllowed("http://127.0.0.1", Origins({"http://127.0.0.1:80"})));
  EXPECT_TRUE(OriginAllowed("https://anything.example", Origins({"*"})));
  EXPECT_TRUE(OriginAllowed("null", Origins({"*"})));
  EXPECT_FALSE(OriginAllowed("https://a.example", Origins({})));
}

TEST(RequiredCookieTest, ExactAndPrefix) {
  RequestHead head;
  const std::string raw = Upgrade("Cookie: theme=dark; sess_abc=123\r\nCookie: other=1\r\n");
  Parse(raw, head);
  EXPECT_TRUE(HasRequiredCookie(head, ""));
  EXPECT_TRUE(HasRequiredCookie(head, "sess_*"));
  EXPECT_TRUE(HasRequiredCookie(head, "sess_abc"));
  EXPECT_TRUE(HasRequiredCookie(head, "other"));
  EXPECT_FALSE(HasRequiredCookie(head, "sess_"));
  EXPECT_FALSE(HasRequiredCookie(head, "session*"));
  RequestHead none;
  const std::string raw2 = Upgrade("Cookie: sess_x=\r\n");
  Parse(raw2, none);
  EXPECT_FALSE(HasRequiredCookie(none, "sess_*"));  // empty value does not count
}

TEST(CheckUpgradeTest, OrderAndResults) {
  CompiledRoute route;
  route.websocket = true;
  auto policy = std::make_shared<v1::WebSocketPolicy>();
  policy->set_required_cookie("sess_*");
  route.websocket_policy = policy;
  const OriginList site = Origins({"https://amir.hirecj.ai"});

  RequestHead ok;
  const std::string r1 = Upgrade("Origin: https://amir.hirecj.ai\r\nCookie: sess_1=a\r\n");
  Parse(r1, ok);
  EXPECT_FALSE(CheckUpgrade(ok, route, site).has_value());

  RequestHead foreign;
  const std::string r2 = Upgrade("Origin: https://evil.example\r\nCookie: sess_1=a\r\n");
  Parse(r2, foreign);
  auto refusal = CheckUpgrade(foreign, route, site);
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->result, stats::UpgradeResult::kOriginRefused);
  EXPECT_EQ(StatusOf(refusal->error.kind), 403);

  RequestHead no_cookie;
  const std::string r3 = Upgrade("Origin: https://amir.hirecj.ai\r\n");
  Parse(r3, no_cookie);
  refusal = CheckUpgrade(no_cookie, route, site);
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->result, stats::UpgradeResult::kCookieRefused);
  EXPECT_EQ(StatusOf(refusal->error.kind), 401);

  // Origin is checked before the cookie.
  RequestHead both;
  const std::string r4 = Upgrade("Origin: https://evil.example\r\n");
  Parse(r4, both);
  EXPECT_EQ(CheckUpgrade(both, route, site)->result, stats::UpgradeResult::kOriginRefused);

  // No Origin: allowed unless required.
  RequestHead no_origin;
  const std::string r5 = Upgrade("Cookie: sess_1=a\r\n");
  Parse(r5, no_origin);
  EXPECT_FALSE(CheckUpgrade(no_origin, route, site).has_value());
  policy->set_require_origin(true);
  EXPECT_EQ(CheckUpgrade(no_origin, route, site)->result, stats::UpgradeResult::kOriginRefused);

  // A route's own list replaces the site's.
  policy->add_allowed_origins("https://evil.example");
  const std::string r6 = Upgrade("Origin: https://evil.example\r\nCookie: sess_1=a\r\n");
  RequestHead listed;
  Parse(r6, listed);
  EXPECT_FALSE(CheckUpgrade(listed, route, site).has_value());
  EXPECT_EQ(CheckUpgrade(ok, route, site)->result, stats::UpgradeResult::kOriginRefused);

  route.websocket = false;
  refusal = CheckUpgrade(ok, route, site);
  EXPECT_EQ(refusal->result, stats::UpgradeResult::kNotAllowed);
  EXPECT_EQ(StatusOf(refusal->error.kind), 403);
}

}  // namespace
}  // namespace onedomain::dataplane
