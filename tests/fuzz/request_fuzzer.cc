// Fuzzes the request-reading path: the head parser fed incrementally (as the session does),
// the request checks, routing, the upstream head rewrite (with and without a cookie policy),
// the chunked body scanner over whatever follows the head, and the response-head path on the
// same bytes. Checks the invariants the proxy relies on: views stay inside the input, the
// rewritten head is one well-formed head (no injected line breaks), scanners never consume
// past their input.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "dataplane/cookie/cookie_policy.h"
#include "dataplane/http_proxy/chunked_scanner.h"
#include "dataplane/http_proxy/message_head.h"
#include "dataplane/http_proxy/phases.h"
#include "dataplane/routing/route_table.h"
#include "onedomain/v1/cookie_policy.pb.h"

namespace od = onedomain::dataplane;

namespace {

#define FUZZ_CHECK(cond)       \
  do {                         \
    if (!(cond)) std::abort(); \
  } while (false)

const od::RouteTable& Routes() {
  static const od::RouteTable* table = [] {
    std::vector<od::CompiledRoute> routes(3);
    routes[0].name = "api";
    routes[0].path = "/api/";
    routes[0].prefix_rewrite = "/";
    routes[1].name = "host";
    routes[1].path = "/";
    routes[1].host = "example.com";
    routes[1].host_wildcard = true;
    routes[1].host_rewrite = "internal:8080";
    routes[2].name = "all";
    routes[2].path = "/";
    return new od::RouteTable(std::move(routes));
  }();
  return *table;
}

const od::CompiledCookiePolicy& Cookies() {
  static const od::CompiledCookiePolicy* policy = [] {
    onedomain::v1::CookiePolicy p;
    p.mutable_request_cookies()->set_mode(onedomain::v1::RequestCookies::MODE_STRIP);
    p.mutable_request_cookies()->add_names("_ga*");
    auto* r = p.add_attribute_rules();
    r->set_name("sess_*");
    r->set_secure(true);
    r->mutable_max_age_cap()->set_seconds(60);
    auto* d = p.add_domain_rewrites();
    d->set_from("*");
    d->set_to(".example.com");
    return new od::CompiledCookiePolicy(p);
  }();
  return *policy;
}

bool Inside(std::string_view outer, std::string_view inner) {
  return inner.empty() || (inner.data() >= outer.data() &&
                           inner.data() + inner.size() <= outer.data() + outer.size());
}

// One complete head: request line, then "name: value" lines, each CRLF-terminated, and only
// the final empty line.
void CheckHead(std::string_view head) {
  FUZZ_CHECK(head.size() >= 4 && head.substr(head.size() - 4) == "\r\n\r\n");
  FUZZ_CHECK(head.find("\r\n\r\n") == head.size() - 4);
  for (size_t i = 0; i < head.size(); ++i) {
    if (head[i] == '\n') FUZZ_CHECK(i > 0 && head[i - 1] == '\r');
    if (head[i] == '\r') FUZZ_CHECK(i + 1 < head.size() && head[i + 1] == '\n');
  }
}

void FuzzRequest(std::string_view input, size_t split) {
  od::RequestHead head;
  od::RequestHeadParser parser(head, 8192);
  boost::system::error_code ec;
  // The session feeds what it has so far, from the message start, until complete.
  bool complete = parser.Feed(input.substr(0, split), ec);
  if (!complete && !ec) complete = parser.Feed(input, ec);
  if (!complete) {
    if (ec) {
      const od::ProxyError e = od::ClassifyRequestParseError(head, ec);
      const int status = od::StatusOf(e.kind);
      FUZZ_CHECK(status == 400 || status == 431);
    }
    return;
  }
  FUZZ_CHECK(head.header_bytes <= input.size());
  const std::string_view head_bytes = input.substr(0, head.header_bytes);
  FUZZ_CHECK(Inside(head_bytes, head.target));
  for (const od::HeaderField& f : head.fields) {
    FUZZ_CHECK(Inside(head_bytes, f.name));
    FUZZ_CHECK(Inside(head_bytes, f.value));
  }
  FUZZ_CHECK(!(head.framing.chunked && head.framing.content_length));

  std::string normalized;
  if (od::NormalizeRequest(head, normalized)) return;
  // A normalised target is visible ASCII and starts with '/' when it is a path.
  for (char c : head.target) FUZZ_CHECK(c > 0x20 && c < 0x7f);
  if (od::CheckRequest(head)) return;
  FUZZ_CHECK(od::PathOfTarget(head.target).find("/../") == std::string_view::npos);
  const od::CompiledRoute* route = Routes().Match(head.host, od::PathOfTarget(head.target));
  (void)od::IsWebSocketUpgrade(head);
  (void)od::CheckBodyLimit(head, 1000);

  for (const od::CompiledCookiePolicy* cookies :
       {static_cast<const od::CompiledCookiePolicy*>(nullptr), &Cookies()}) {
    od::UpstreamHeadParams p;
    p.route = route;
    p.client_ip = "192.0.2.1";
    p.forwarded_proto = "https";
    p.default_host = "backend:80";
    p.strip_expect = head.expect_continue;
    p.cookies = cookies;
    std::string out;
    od::AppendUpstreamRequestHead(head, p, out);
    CheckHead(out);
  }

  // The body: a chunked scan over the rest, in two pieces, never past the input.
  if (head.framing.chunked) {
    const std::string_view rest = input.substr(head.header_bytes);
    od::ChunkedScanner scanner;
    const size_t cut = rest.empty() ? 0 : split % (rest.size() + 1);
    size_t used = 0;
    std::string plain;
    auto sink = [&plain](const char* d, size_t n) { plain.append(d, n); };
    const auto a = scanner.Feed(rest.substr(0, cut), sink);
    FUZZ_CHECK(a.consumed <= cut);
    used += a.consumed;
    if (!a.done && !a.error && a.consumed == cut) {
      const auto b = scanner.Feed(rest.substr(cut), sink);
      FUZZ_CHECK(b.consumed <= rest.size() - cut);
      used += b.consumed;
    }
    FUZZ_CHECK(used <= rest.size());
    FUZZ_CHECK(plain.size() == scanner.data_bytes());
  }
}

void FuzzResponse(std::string_view input, bool head_request) {
  od::ResponseHead resp;
  od::ResponseHeadParser parser(resp, 8192, head_request);
  boost::system::error_code ec;
  if (!parser.Feed(input, ec)) return;
  FUZZ_CHECK(resp.header_bytes <= input.size());
  for (const bool dechunk : {false, true}) {
    od::DownstreamHeadParams p;
    p.client_version = dechunk ? 10 : 11;
    p.dechunk = dechunk;
    p.close = dechunk;
    p.cookies = dechunk ? &Cookies() : nullptr;
    p.upstream_host = "backend";
    std::string out;
    od::AppendDownstreamResponseHead(resp, p, out);
    CheckHead(out);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t split = size == 0 ? 0 : data[0] % (size + 1);
  FuzzRequest(input, split);
  FuzzResponse(input, (split & 1) != 0);
  return 0;
}
