#include "dataplane/cookie/cookie_policy.h"

#include <gtest/gtest.h>

#include "onedomain/v1/cookie_policy.pb.h"

namespace onedomain::dataplane {
namespace {

std::string Rewrite(const CompiledCookiePolicy& p, std::string_view set_cookie,
                    std::string_view host = "agents-service") {
  std::string out;
  p.AppendRewrittenSetCookie(set_cookie, host, out);
  return out;
}

TEST(CookiePolicyTest, EmptyPolicyIsANoopAndByteForByte) {
  const CompiledCookiePolicy p{v1::CookiePolicy()};
  EXPECT_TRUE(p.IsNoop());
  EXPECT_EQ(Rewrite(p, "a=1;  Path=/ ;HttpOnly"), "a=1;  Path=/ ;HttpOnly");
  std::string out;
  EXPECT_TRUE(p.AppendFilteredCookie("x=1;y=2", out));
  EXPECT_EQ(out, "x=1;y=2");
}

TEST(CookiePolicyTest, FiltersRequestCookies) {
  v1::CookiePolicy strip;
  strip.mutable_request_cookies()->set_mode(v1::RequestCookies::MODE_STRIP);
  strip.mutable_request_cookies()->add_names("_ga*");
  const CompiledCookiePolicy p(strip);
  std::string out;
  EXPECT_TRUE(p.AppendFilteredCookie("_ga=1; sess=2; _gat=3; theme=x", out));
  EXPECT_EQ(out, "sess=2; theme=x");
  out.clear();
  EXPECT_FALSE(p.AppendFilteredCookie("_ga=1", out));
  EXPECT_TRUE(out.empty());
}

TEST(CookiePolicyTest, RewritesDomainAndPath) {
  v1::CookiePolicy policy;
  auto* d = policy.add_domain_rewrites();
  d->set_from("agents-service");
  d->set_to(".hirecj.ai");
  auto* path = policy.add_path_rewrites();
  path->set_from("/api/");
  path->set_to("/");
  const CompiledCookiePolicy p(policy);
  EXPECT_EQ(Rewrite(p, "sess_1=abc; Domain=Agents-Service; Path=/api/v1"),
            "sess_1=abc; Domain=.hirecj.ai; Path=/v1");
  // No Domain: matched by the upstream host name.
  EXPECT_EQ(Rewrite(p, "sess_1=abc; Path=/x"), "sess_1=abc; Path=/x; Domain=.hirecj.ai");
  // Another upstream host: untouched, byte for byte.
  EXPECT_EQ(Rewrite(p, "sess_1=abc;Path=/x", "frontend"), "sess_1=abc;Path=/x");
}

TEST(CookiePolicyTest, ForcesAttributesOnMatchingNames) {
  v1::CookiePolicy policy;
  auto* r = policy.add_attribute_rules();
  r->set_name("sess_*");
  r->set_secure(true);
  r->set_http_only(true);
  r->set_same_site(v1::SAME_SITE_LAX);
  r->mutable_max_age_cap()->set_seconds(3600);
  const CompiledCookiePolicy p(policy);
  EXPECT_EQ(Rewrite(p, "sess_1=abc; Max-Age=86400; SameSite=None"),
            "sess_1=abc; Max-Age=3600; SameSite=Lax; Secure; HttpOnly");
  EXPECT_EQ(Rewrite(p, "theme=dark; Max-Age=86400"), "theme=dark; Max-Age=86400");
  EXPECT_EQ(
      Rewrite(p, "sess_2=x; Expires=Wed, 21 Oct 2099 07:28:00 GMT; Secure; HttpOnly; SameSite=Lax"),
      "sess_2=x; Expires=Wed, 21 Oct 2099 07:28:00 GMT; Secure; HttpOnly; SameSite=Lax; "
      "Max-Age=3600");
}

TEST(CookiePolicyTest, NamePatterns) {
  EXPECT_TRUE(CompiledCookiePolicy::NameMatches("*", "x"));
  EXPECT_TRUE(CompiledCookiePolicy::NameMatches("sess_*", "sess_"));
  EXPECT_TRUE(CompiledCookiePolicy::NameMatches("sess", "sess"));
  EXPECT_FALSE(CompiledCookiePolicy::NameMatches("sess", "sess_1"));
  EXPECT_FALSE(CompiledCookiePolicy::NameMatches("sess_*", "ses"));
}

}  // namespace
}  // namespace onedomain::dataplane
