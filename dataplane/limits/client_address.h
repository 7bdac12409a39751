#pragma once

// The client's address as the limits, the access log and X-Forwarded-For see it, decided once
// per connection: the PROXY protocol's source address when the listener takes PROXY headers,
// else the socket peer; when that peer is one of site.trusted_proxies, X-Forwarded-For of the
// connection's first request is walked right to left past trusted hops.
//
// Pure: no I/O. Unit-tested in tests/unit/dataplane/limits_test.cc.

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace onedomain::dataplane {

// An IPv4 or IPv6 address, IPv4 held as IPv4-mapped IPv6 so both hash and compare alike.
struct ClientAddress {
  std::array<uint8_t, 16> bytes{};

  bool is_v4() const;
  // "192.0.2.7", "2001:db8::1".
  std::string ToString() const;
  // A literal, with an optional port ("192.0.2.7:443", "[2001:db8::1]:443") and spaces
  // around it, as X-Forwarded-For hops are written. Null when not an address.
  static std::optional<ClientAddress> Parse(std::string_view text);
  static ClientAddress FromV4(const uint8_t (&b)[4]);
  static ClientAddress FromV6(const uint8_t (&b)[16]);
  // AF_INET or AF_INET6 (v4-mapped shown as IPv4); null for other families.
  static std::optional<ClientAddress> FromSockaddr(const sockaddr* sa, socklen_t len);

  friend bool operator==(const ClientAddress& a, const ClientAddress& b) {
    return a.bytes == b.bytes;
  }
};

// "10.0.0.0/8", "2001:db8::/32", or a single address (a /32 or /128).
struct Cidr {
  ClientAddress base;
  uint32_t bits = 128;  // on the IPv6 scale (an IPv4 /8 is 104)

  static std::optional<Cidr> Parse(std::string_view text);
  bool Contains(const ClientAddress& a) const;
};

using TrustedProxies = std::vector<Cidr>;

bool IsTrusted(const TrustedProxies& trusted, const ClientAddress& a);

// The client behind `peer`: `peer` itself unless it is trusted; then the hops of
// X-Forwarded-For (`values`: each field's value, in the order received, each a comma list)
// walked from the right, skipping trusted addresses: the first untrusted hop is the client.
// A hop that is not an address stops the walk (the hop to its right is the client); when
// every hop is trusted, the leftmost one is.
ClientAddress ClientFromForwardedFor(const ClientAddress& peer,
                                     const std::vector<std::string_view>& values,
                                     const TrustedProxies& trusted);

}  // namespace onedomain::dataplane
