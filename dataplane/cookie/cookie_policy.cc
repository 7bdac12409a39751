#include "dataplane/cookie/cookie_policy.h"

#include "common/strings/strings.h"
#include "onedomain/v1/cookie_policy.pb.h"

namespace onedomain::dataplane {
namespace {

// One "name[=value]" piece of a Set-Cookie attribute list.
struct Attribute {
  std::string_view name;
  std::string value;  // owned: rewrites replace it
  bool has_value = false;
  bool changed = false;
};

std::string_view Trim(std::string_view s) { return str::StripWhitespace(s); }

// The position of the first ';' not inside a double-quoted value, or npos. RFC 6265 forbids
// ';' in a quoted cookie-value, but servers send it; splitting inside the quotes would mangle
// the cookie.
size_t FindSeparator(std::string_view s) {
  bool quoted = false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '"') quoted = !quoted;
    if (s[i] == ';' && !quoted) return i;
  }
  return std::string_view::npos;
}

// RFC 6265 cookie-name: an RFC 7230 token (no CTLs, spaces or separators).
bool IsCookieName(std::string_view name) {
  if (name.empty()) return false;
  static constexpr std::string_view kSeparators = "()<>@,;:\\\"/[]?={} \t";
  for (const char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || kSeparators.find(c) != std::string_view::npos) return false;
  }
  return true;
}

}  // namespace

CompiledCookiePolicy::CompiledCookiePolicy(const v1::CookiePolicy& p) {
  switch (p.request_cookies().mode()) {
    case v1::RequestCookies::MODE_ALLOW_LIST:
      mode_ = Mode::kAllowList;
      break;
    case v1::RequestCookies::MODE_STRIP:
      mode_ = Mode::kStrip;
      break;
    default:
      mode_ = Mode::kForwardAll;
      break;
  }
  names_.assign(p.request_cookies().names().begin(), p.request_cookies().names().end());
  for (const v1::DomainRewrite& r : p.domain_rewrites()) {
    domain_rules_.push_back({str::ToLower(str::StripPrefix(r.from(), ".")), r.to()});
  }
  for (const v1::PathRewrite& r : p.path_rewrites()) path_rules_.push_back({r.from(), r.to()});
  for (const v1::AttributeRule& r : p.attribute_rules()) {
    AttributeRule a;
    a.name = r.name();
    a.secure = r.secure();
    a.http_only = r.http_only();
    switch (r.same_site()) {
      case v1::SAME_SITE_LAX:
        a.same_site = "Lax";
        break;
      case v1::SAME_SITE_STRICT:
        a.same_site = "Strict";
        break;
      case v1::SAME_SITE_NONE:
        a.same_site = "None";
        break;
      default:
        break;
    }
    if (r.has_max_age_cap()) a.max_age_cap_seconds = r.max_age_cap().seconds();
    attribute_rules_.push_back(std::move(a));
  }
}

bool CompiledCookiePolicy::IsNoop() const {
  return mode_ == Mode::kForwardAll && domain_rules_.empty() && path_rules_.empty() &&
         attribute_rules_.empty();
}

bool CompiledCookiePolicy::NameMatches(std::string_view pattern, std::string_view name) {
  if (pattern == "*") return true;
  if (!pattern.empty() && pattern.back() == '*') {
    return name.starts_with(pattern.substr(0, pattern.size() - 1));
  }
  return pattern == name;
}

bool CompiledCookiePolicy::CookieAllowed(std::string_view name) const {
  bool listed = false;
  for (const std::string& p : names_) {
    if (NameMatches(p, name)) {
      listed = true;
      break;
    }
  }
  return mode_ == Mode::kAllowList ? listed : !listed;
}

bool CompiledCookiePolicy::AppendFilteredCookie(std::string_view value, std::string& out) const {
  if (mode_ == Mode::kForwardAll) {
    out.append(value);
    return true;
  }
  bool any = false;
  while (!value.empty()) {
    const size_t semi = FindSeparator(value);
    const std::string_view pair = Trim(value.substr(0, semi));
    if (!pair.empty()) {
      const std::string_view name = Trim(pair.substr(0, pair.find('=')));
      if (CookieAllowed(name)) {
        if (any) out.append("; ");
        out.append(pair);
        any = true;
      }
    }
    if (semi == std::string_view::npos) break;
    value.remove_prefix(semi + 1);
  }
  return any;
}

std::string CompiledCookiePolicy::RuleLabel(int bit) {
  if (bit < kPathRuleBit) return str::Cat("domain_rewrites[", bit, "]");
  if (bit < kAttributeRuleBit) return str::Cat("path_rewrites[", bit - kPathRuleBit, "]");
  return str::Cat("attribute_rules[", bit - kAttributeRuleBit, "]");
}

// The attributes of one Set-Cookie (after its name=value), edited by the rules: each change
// is credited to the rule being applied (rule_bit), for metrics.
class CompiledCookiePolicy::Editor {
 public:
  Editor(std::string_view attributes, RewriteResult& result) : result_(result) {
    while (!attributes.empty()) {
      const size_t semi = FindSeparator(attributes);
      const std::string_view piece = Trim(attributes.substr(0, semi));
      if (!piece.empty()) {
        Attribute a;
        const size_t aeq = piece.find('=');
        a.name = Trim(piece.substr(0, aeq));
        if (aeq != std::string_view::npos) {
          a.has_value = true;
          a.value = std::string(Trim(piece.substr(aeq + 1)));
        }
        attrs_.push_back(std::move(a));
      }
      if (semi == std::string_view::npos) break;
      attributes.remove_prefix(semi + 1);
    }
  }

  Attribute* Find(std::string_view name) {
    for (Attribute& a : attrs_) {
      if (str::EqualsIgnoreCase(a.name, name)) return &a;
    }
    return nullptr;
  }

  void Set(std::string_view name, std::string_view v, bool has_value) {
    if (Attribute* a = Find(name)) {
      if (a->has_value == has_value && a->value == v) return;
      a->value = std::string(v);
      a->has_value = has_value;
      a->changed = true;
    } else {
      attrs_.push_back(Attribute{name, std::string(v), has_value, true});
    }
    changed_ = true;
    if (rule_bit_ >= 0 && rule_bit_ < 64) result_.rules |= uint64_t{1} << rule_bit_;
  }

  // The rule whose changes follow (-1: none, a fix of our own).
  void set_rule(int bit) { rule_bit_ = bit; }
  bool changed() const { return changed_; }

  void AppendTo(std::string_view name_value, std::string& out) const {
    out.append(Trim(name_value));
    for (const Attribute& a : attrs_) {
      out.append("; ");
      out.append(a.name);
      if (a.has_value) {
        out.push_back('=');
        out.append(a.value);
      }
    }
  }

 private:
  std::vector<Attribute> attrs_;
  RewriteResult& result_;
  int rule_bit_ = -1;
  bool changed_ = false;
};

// Domain: first matching rule wins.
void CompiledCookiePolicy::ApplyDomainRules(Editor& e, std::string_view upstream_host) const {
  const Attribute* domain = e.Find("Domain");
  const std::string current =
      domain != nullptr ? str::ToLower(str::StripPrefix(domain->value, ".")) : std::string();
  for (size_t i = 0; i < domain_rules_.size(); ++i) {
    const DomainRule& r = domain_rules_[i];
    const bool match =
        r.from == "*" ||
        (domain != nullptr ? current == r.from : str::EqualsIgnoreCase(upstream_host, r.from));
    if (match) {
      e.set_rule(static_cast<int>(i));
      e.Set("Domain", r.to, true);
      return;
    }
  }
}

// Path: first matching prefix wins.
void CompiledCookiePolicy::ApplyPathRules(Editor& e) const {
  const Attribute* path = e.Find("Path");
  if (path == nullptr) return;
  for (size_t i = 0; i < path_rules_.size(); ++i) {
    const PathRule& r = path_rules_[i];
    if (std::string_view(path->value).starts_with(r.from)) {
      std::string next = r.to;
      std::string_view tail = std::string_view(path->value).substr(r.from.size());
      if (!next.empty() && next.back() == '/' && tail.starts_with('/')) tail.remove_prefix(1);
      next.append(tail);
      e.set_rule(kPathRuleBit + static_cast<int>(i));
      e.Set("Path", next, true);
      return;
    }
  }
}

// Attribute rules: every matching one, in order.
void CompiledCookiePolicy::ApplyAttributeRules(Editor& e, std::string_view cookie_name) const {
  for (size_t i = 0; i < attribute_rules_.size(); ++i) {
    const AttributeRule& r = attribute_rules_[i];
    if (!NameMatches(r.name, cookie_name)) continue;
    e.set_rule(kAttributeRuleBit + static_cast<int>(i));
    if (r.secure) e.Set("Secure", "", false);
    if (r.http_only) e.Set("HttpOnly", "", false);
    if (!r.same_site.empty()) e.Set("SameSite", r.same_site, true);
    if (r.max_age_cap_seconds) {
      const std::string cap = str::Cat(*r.max_age_cap_seconds);
      if (const Attribute* m = e.Find("Max-Age")) {
        int64_t v = 0;
        if (!str::ParseInt(m->value, v) || v > *r.max_age_cap_seconds) e.Set("Max-Age", cap, true);
      } else if (e.Find("Expires") != nullptr) {
        e.Set("Max-Age", cap, true);  // Max-Age takes precedence over Expires in browsers
      }
    }
  }
}

CompiledCookiePolicy::RewriteResult CompiledCookiePolicy::AppendRewrittenSetCookie(
    std::string_view value, std::string_view upstream_host, std::string& out) const {
  RewriteResult result;
  if (domain_rules_.empty() && path_rules_.empty() && attribute_rules_.empty()) {
    out.append(value);
    return result;
  }
  const size_t first_semi = FindSeparator(value);
  const std::string_view name_value = value.substr(0, first_semi);
  const size_t eq = name_value.find('=');
  const std::string_view cookie_name = Trim(name_value.substr(0, eq));
  if (eq == std::string_view::npos || !IsCookieName(cookie_name)) {
    // Not a cookie we understand: never mangle it.
    out.append(value);
    result.unparsed = true;
    return result;
  }
  Editor e(first_semi == std::string_view::npos ? std::string_view() : value.substr(first_semi + 1),
           result);
  ApplyDomainRules(e, upstream_host);
  ApplyPathRules(e);
  ApplyAttributeRules(e, cookie_name);
  // Browsers drop SameSite=None without Secure: never emit that pair.
  e.set_rule(-1);
  if (const Attribute* same_site = e.Find("SameSite");
      same_site != nullptr && str::EqualsIgnoreCase(same_site->value, "None") &&
      e.Find("Secure") == nullptr) {
    e.Set("Secure", "", false);
  }
  if (!e.changed()) {
    out.append(value);
  } else {
    e.AppendTo(name_value, out);
  }
  return result;
}

}  // namespace onedomain::dataplane
