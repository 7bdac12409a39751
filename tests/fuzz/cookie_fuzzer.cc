// libFuzzer target over the cookie policy: Set-Cookie rewriting and request Cookie filtering
// with a policy that exercises every rule kind. Properties checked beyond "no crash": a value
// the rewriter calls unparsed comes out byte for byte, and filtering keeps only pieces of the
// input.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "dataplane/cookie/cookie_policy.h"
#include "onedomain/v1/cookie_policy.pb.h"

namespace {

const onedomain::dataplane::CompiledCookiePolicy& Policy() {
  static const auto* policy = [] {
    onedomain::v1::CookiePolicy p;
    auto* d = p.add_domain_rewrites();
    d->set_from("agents-service");
    d->set_to(".hirecj.ai");
    auto* any = p.add_domain_rewrites();
    any->set_from("localhost");
    any->set_to(".hirecj.ai");
    auto* path = p.add_path_rewrites();
    path->set_from("/api");
    path->set_to("/");
    auto* a = p.add_attribute_rules();
    a->set_name("sess_*");
    a->set_secure(true);
    a->set_http_only(true);
    a->set_same_site(onedomain::v1::SAME_SITE_LAX);
    auto* cap = p.add_attribute_rules();
    cap->set_name("*");
    cap->mutable_max_age_cap()->set_seconds(3600);
    p.mutable_request_cookies()->set_mode(onedomain::v1::RequestCookies::MODE_STRIP);
    p.mutable_request_cookies()->add_names("tracking_*");
    return new onedomain::dataplane::CompiledCookiePolicy(p);
  }();
  return *policy;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string out;
  const auto result = Policy().AppendRewrittenSetCookie(input, "localhost", out);
  if (result.unparsed && out != input) __builtin_trap();
  std::string filtered;
  if (Policy().AppendFilteredCookie(input, filtered)) {
    // Filtering only drops cookies: every piece it keeps stands in the input as it was.
    std::string_view rest = filtered;
    while (!rest.empty()) {
      const size_t sep = rest.find("; ");
      if (input.find(rest.substr(0, sep)) == std::string_view::npos) __builtin_trap();
      if (sep == std::string_view::npos) break;
      rest.remove_prefix(sep + 2);
    }
  }
  return 0;
}
