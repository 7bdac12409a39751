#pragma once

// A cookie policy compiled for the request path: which request cookies go upstream, and how
// Set-Cookie is rewritten on the way back (Domain and Path rewrites, forced attributes).
// Immutable, shared by every worker. When a snapshot sets no policy the route holds null and
// Cookie / Set-Cookie pass byte for byte; a policy that changes nothing for a given header
// also leaves it byte for byte.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace onedomain::v1 {
class CookiePolicy;
}  // namespace onedomain::v1

namespace onedomain::dataplane {

class CompiledCookiePolicy {
 public:
  explicit CompiledCookiePolicy(const v1::CookiePolicy& policy);

  // True when the policy can change nothing (all defaults): callers then skip it.
  bool IsNoop() const;

  // Appends the Cookie value to forward (only the allowed cookies, "; "-joined, each pair
  // byte for byte). Returns false, appending nothing, when no cookie is left.
  bool AppendFilteredCookie(std::string_view cookie_value, std::string& out) const;

  // What AppendRewrittenSetCookie did, for metrics.
  struct RewriteResult {
    // Bit i set: rule i changed this cookie. Bits 0..15 are domain_rewrites[i], 16..31
    // path_rewrites[i - 16], 32..63 attribute_rules[i - 32] (validation caps the counts).
    uint64_t rules = 0;
    // The value could not be parsed as a cookie and was passed through untouched.
    bool unparsed = false;
  };
  static constexpr int kPathRuleBit = 16;
  static constexpr int kAttributeRuleBit = 32;

  // Appends the Set-Cookie value to send to the client. `upstream_host` is the endpoint's
  // configured host name (for Domain rewrites of cookies that carry no Domain). A value that
  // is not a cookie (no '=' before the first ';', an empty or invalid name) is appended
  // untouched. A rewritten cookie never carries SameSite=None without Secure.
  RewriteResult AppendRewrittenSetCookie(std::string_view set_cookie_value,
                                         std::string_view upstream_host, std::string& out) const;

  // Label of rule bit `bit`: "domain_rewrites[0]", "path_rewrites[1]", "attribute_rules[2]".
  static std::string RuleLabel(int bit);

  // "sess_*" style patterns: exact, trailing '*' prefix, or "*".
  static bool NameMatches(std::string_view pattern, std::string_view name);

 private:
  enum class Mode { kForwardAll, kAllowList, kStrip };
  struct DomainRule {
    std::string from;  // lower case, no leading dot; "*" for any
    std::string to;
  };
  struct PathRule {
    std::string from;
    std::string to;
  };
  struct AttributeRule {
    std::string name;
    bool secure = false;
    bool http_only = false;
    std::string same_site;  // "", "Lax", "Strict", "None"
    std::optional<int64_t> max_age_cap_seconds;
  };

  // The attributes of one Set-Cookie being rewritten (cookie_policy.cc).
  class Editor;

  bool CookieAllowed(std::string_view name) const;
  void ApplyDomainRules(Editor& e, std::string_view upstream_host) const;
  void ApplyPathRules(Editor& e) const;
  void ApplyAttributeRules(Editor& e, std::string_view cookie_name) const;

  Mode mode_ = Mode::kForwardAll;
  std::vector<std::string> names_;
  std::vector<DomainRule> domain_rules_;
  std::vector<PathRule> path_rules_;
  std::vector<AttributeRule> attribute_rules_;
};

}  // namespace onedomain::dataplane
