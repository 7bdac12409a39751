// Table-driven tests of the cookie policy: Set-Cookie rewriting (domain, path, forced
// attributes, SameSite=None without Secure, malformed input passed through untouched) and
// request Cookie filtering. Each row is one case; the name says what it proves.

#include <gtest/gtest.h>

#include "common/config/yaml_loader.h"
#include "dataplane/cookie/cookie_policy.h"
#include "onedomain/v1/cookie_policy.pb.h"

namespace onedomain::dataplane {
namespace {

// The policy every Set-Cookie row runs against, written as an operator would.
constexpr char kPolicy[] = R"(
domain_rewrites:
  - {from: agents-service, to: .hirecj.ai}
  - {from: localhost, to: .hirecj.ai}
path_rewrites:
  - {from: /api/v1, to: /}
attribute_rules:
  - {name: "sess_*", secure: true, http_only: true, same_site: lax}
  - {name: "cap", max_age_cap: 3600s}
  - {name: "cross", secure: true, same_site: none}
)";

CompiledCookiePolicy Compile(const char* yaml) {
  v1::CookiePolicy p;
  const auto env = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  EXPECT_TRUE(config::YamlToMessage(yaml, "policy.yaml", p, nullptr, env).ok());
  return CompiledCookiePolicy(p);
}

struct SetCookieCase {
  const char* name;
  const char* upstream_host;
  const char* in;
  const char* out;
  uint64_t rules;  // expected rule bits
  bool unparsed;
};

constexpr uint64_t D0 = 1ull << 0, D1 = 1ull << 1, P0 = 1ull << 16, A0 = 1ull << 32,
                   A1 = 1ull << 33, A2 = 1ull << 34;

const SetCookieCase kSetCookie[] = {
    {"domain_rewritten", "x", "sess_abc=1; Domain=agents-service; Path=/",
     "sess_abc=1; Domain=.hirecj.ai; Path=/; Secure; HttpOnly; SameSite=Lax", D0 | A0, false},
    {"domain_with_leading_dot", "x", "id=1; Domain=.agents-service", "id=1; Domain=.hirecj.ai", D0,
     false},
    {"domain_case_insensitive", "x", "id=1; Domain=AGENTS-Service", "id=1; Domain=.hirecj.ai", D0,
     false},
    {"second_rule_matches", "x", "id=1; Domain=localhost", "id=1; Domain=.hirecj.ai", D1, false},
    {"no_domain_uses_upstream_host", "localhost", "id=1", "id=1; Domain=.hirecj.ai", D1, false},
    {"no_domain_other_host_untouched", "10.0.0.7", "id=1", "id=1", 0, false},
    {"foreign_domain_untouched", "x", "id=1; Domain=example.com", "id=1; Domain=example.com", 0,
     false},
    {"attribute_name_any_case", "x", "id=1; domain=agents-service", "id=1; domain=.hirecj.ai", D0,
     false},
    {"path_rewritten", "x", "id=1; Path=/api/v1/users", "id=1; Path=/users", P0, false},
    {"path_exact_prefix", "x", "id=1; Path=/api/v1", "id=1; Path=/", P0, false},
    {"path_other_untouched", "x", "id=1; Path=/static", "id=1; Path=/static", 0, false},
    {"secure_httponly_samesite_added", "x", "sess_x=v", "sess_x=v; Secure; HttpOnly; SameSite=Lax",
     A0, false},
    {"already_compliant_byte_for_byte", "x", "sess_x=v; Secure; HttpOnly; SameSite=Lax",
     "sess_x=v; Secure; HttpOnly; SameSite=Lax", 0, false},
    {"samesite_replaced", "x", "sess_x=v; Secure; HttpOnly; SameSite=Strict",
     "sess_x=v; Secure; HttpOnly; SameSite=Lax", A0, false},
    {"pattern_does_not_match_other_names", "x", "session=v", "session=v", 0, false},
    {"max_age_capped", "x", "cap=1; Max-Age=86400", "cap=1; Max-Age=3600", A1, false},
    {"max_age_below_cap_untouched", "x", "cap=1; Max-Age=60", "cap=1; Max-Age=60", 0, false},
    {"max_age_added_when_only_expires", "x", "cap=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
     "cap=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=3600", A1, false},
    {"expires_comma_kept_whole", "x", "sess_e=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/",
     "sess_e=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/; Secure; HttpOnly; SameSite=Lax", A0,
     false},
    {"max_age_garbage_capped", "x", "cap=1; Max-Age=abc", "cap=1; Max-Age=3600", A1, false},
    {"samesite_none_gets_secure_by_rule", "x", "cross=1; SameSite=Lax",
     "cross=1; SameSite=None; Secure", A2, false},
    {"upstream_samesite_none_without_secure_fixed", "x", "other=1; SameSite=None",
     "other=1; SameSite=None; Secure", 0, false},
    {"upstream_samesite_none_lowercase_fixed", "x", "other=1; samesite=none",
     "other=1; samesite=none; Secure", 0, false},
    {"samesite_none_with_secure_untouched", "x", "other=1; SameSite=None; Secure",
     "other=1; SameSite=None; Secure", 0, false},
    {"equals_inside_value", "x", "sess_b=a=b=c", "sess_b=a=b=c; Secure; HttpOnly; SameSite=Lax", A0,
     false},
    {"empty_value", "x", "sess_e=; Path=/", "sess_e=; Path=/; Secure; HttpOnly; SameSite=Lax", A0,
     false},
    {"quoted_value", "x", "sess_q=\"a b\"", "sess_q=\"a b\"; Secure; HttpOnly; SameSite=Lax", A0,
     false},
    {"quoted_value_with_semicolon_kept", "x", "sess_q=\"a;b\"; Path=/",
     "sess_q=\"a;b\"; Path=/; Secure; HttpOnly; SameSite=Lax", A0, false},
    {"non_ascii_value_kept", "x", "sess_u=caf\xc3\xa9",
     "sess_u=caf\xc3\xa9; Secure; HttpOnly; SameSite=Lax", A0, false},
    {"unknown_attribute_kept", "x", "sess_p=1; Partitioned; Priority=High",
     "sess_p=1; Partitioned; Priority=High; Secure; HttpOnly; SameSite=Lax", A0, false},
    {"extra_spaces_normalised_when_rewritten", "x", "sess_s=1 ;  Path=/ ",
     "sess_s=1; Path=/; Secure; HttpOnly; SameSite=Lax", A0, false},
    {"extra_spaces_kept_when_untouched", "x", "other=1 ;  Path=/ ", "other=1 ;  Path=/ ", 0, false},
    {"trailing_semicolon", "x", "sess_t=1;", "sess_t=1; Secure; HttpOnly; SameSite=Lax", A0, false},
    {"several_rules_at_once", "x", "sess_m=1; Domain=localhost; Path=/api/v1/x",
     "sess_m=1; Domain=.hirecj.ai; Path=/x; Secure; HttpOnly; SameSite=Lax", D1 | P0 | A0, false},
    // Malformed: passed through untouched and counted.
    {"no_equals_is_unparsed", "x", "garbage", "garbage", 0, true},
    {"empty_name_is_unparsed", "x", "=v; Domain=localhost", "=v; Domain=localhost", 0, true},
    {"space_in_name_is_unparsed", "x", "a b=1; Domain=localhost", "a b=1; Domain=localhost", 0,
     true},
    {"control_char_in_name_is_unparsed", "x", "a\x01=1", "a\x01=1", 0, true},
    {"empty_header_is_unparsed", "x", "", "", 0, true},
    {"only_attributes_is_unparsed", "x", "; Secure", "; Secure", 0, true},
    {"non_ascii_name_is_unparsed", "x", "caf\xc3\xa9=1", "caf\xc3\xa9=1", 0, true},
    {"separator_in_name_is_unparsed", "x", "a(b)=1", "a(b)=1", 0, true},
};

class SetCookieTable : public ::testing::TestWithParam<SetCookieCase> {};

TEST_P(SetCookieTable, Rewrites) {
  static const CompiledCookiePolicy policy = Compile(kPolicy);
  const SetCookieCase& c = GetParam();
  std::string out;
  const auto r = policy.AppendRewrittenSetCookie(c.in, c.upstream_host, out);
  EXPECT_EQ(out, c.out);
  EXPECT_EQ(r.rules, c.rules);
  EXPECT_EQ(r.unparsed, c.unparsed);
}

INSTANTIATE_TEST_SUITE_P(Cases, SetCookieTable, ::testing::ValuesIn(kSetCookie),
                         [](const auto& info) { return std::string(info.param.name); });

struct RequestCase {
  const char* name;
  const char* policy;
  const char* in;
  const char* out;  // nullptr: nothing left, the header is dropped
};

const RequestCase kRequest[] = {
    {"forward_all_byte_for_byte", "{}", "a=1;b=2;  c=3", "a=1;b=2;  c=3"},
    {"allow_list_keeps_listed", "request_cookies: {mode: allow_list, names: [sess_*]}",
     "theme=dark; sess_a=1; x=2; sess_b=3", "sess_a=1; sess_b=3"},
    {"allow_list_nothing_left", "request_cookies: {mode: allow_list, names: [sess_*]}",
     "theme=dark", nullptr},
    {"strip_removes_named", "request_cookies: {mode: strip, names: [theme, tracking_*]}",
     "theme=dark; sess_a=1; tracking_id=9", "sess_a=1"},
    {"strip_keeps_quoted_value_with_semicolon", "request_cookies: {mode: strip, names: [x]}",
     "q=\"a;b\"; x=1", "q=\"a;b\""},
    {"strip_keeps_value_with_equals", "request_cookies: {mode: strip, names: [x]}", "tok=a=b=; x=1",
     "tok=a=b="},
    {"allow_list_exact_name_only", "request_cookies: {mode: allow_list, names: [sess]}",
     "sess=1; session=2", "sess=1"},
    {"strip_everything", "request_cookies: {mode: strip, names: [\"*\"]}", "a=1; b=2", nullptr},
    {"empty_pieces_ignored", "request_cookies: {mode: strip, names: [x]}", ";; a=1 ;;", "a=1"},
    {"nameless_piece_kept_by_strip", "request_cookies: {mode: strip, names: [x]}", "lonely; a=1",
     "lonely; a=1"},
};

class RequestCookieTable : public ::testing::TestWithParam<RequestCase> {};

TEST_P(RequestCookieTable, Filters) {
  const RequestCase& c = GetParam();
  const CompiledCookiePolicy policy = Compile(c.policy);
  std::string out;
  const bool any = policy.AppendFilteredCookie(c.in, out);
  if (c.out == nullptr) {
    EXPECT_FALSE(any);
    EXPECT_EQ(out, "");
  } else {
    EXPECT_TRUE(any);
    EXPECT_EQ(out, c.out);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, RequestCookieTable, ::testing::ValuesIn(kRequest),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(CookieRuleLabels, NameTheRuleByIndex) {
  EXPECT_EQ(CompiledCookiePolicy::RuleLabel(0), "domain_rewrites[0]");
  EXPECT_EQ(CompiledCookiePolicy::RuleLabel(17), "path_rewrites[1]");
  EXPECT_EQ(CompiledCookiePolicy::RuleLabel(34), "attribute_rules[2]");
}

}  // namespace
}  // namespace onedomain::dataplane
