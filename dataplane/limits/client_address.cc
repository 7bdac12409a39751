#include "dataplane/limits/client_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace onedomain::dataplane {
namespace {

constexpr std::array<uint8_t, 12> kV4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && s.size() <= 5 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// inet_pton on a bounded copy (it wants a NUL-terminated string).
std::optional<ClientAddress> ParseLiteral(std::string_view s) {
  if (s.empty() || s.size() > INET6_ADDRSTRLEN) return std::nullopt;
  char buf[INET6_ADDRSTRLEN + 1];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  uint8_t v4[4];
  if (::inet_pton(AF_INET, buf, v4) == 1) return ClientAddress::FromV4(v4);
  uint8_t v6[16];
  if (::inet_pton(AF_INET6, buf, v6) == 1) return ClientAddress::FromV6(v6);
  return std::nullopt;
}

}  // namespace

bool ClientAddress::is_v4() const {
  return std::equal(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), bytes.begin());
}

ClientAddress ClientAddress::FromV4(const uint8_t (&b)[4]) {
  ClientAddress a;
  std::copy(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), a.bytes.begin());
  std::copy(b, b + 4, a.bytes.begin() + 12);
  return a;
}

ClientAddress ClientAddress::FromV6(const uint8_t (&b)[16]) {
  ClientAddress a;
  std::copy(b, b + 16, a.bytes.begin());
  return a;
}

std::optional<ClientAddress> ClientAddress::FromSockaddr(const sockaddr* sa, socklen_t len) {
  if (sa == nullptr) return std::nullopt;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    uint8_t b[4];
    std::memcpy(b, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, 4);
    return FromV4(b);
  }
  if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    uint8_t b[16];
    std::memcpy(b, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, 16);
    return FromV6(b);
  }
  return std::nullopt;
}

std::string ClientAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN];
  if (is_v4()) {
    if (::inet_ntop(AF_INET, bytes.data() + 12, buf, sizeof(buf)) == nullptr) return {};
  } else if (::inet_ntop(AF_INET6, bytes.data(), buf, sizeof(buf)) == nullptr) {
    return {};
  }
  return buf;
}

std::optional<ClientAddress> ClientAddress::Parse(std::string_view text) {
  std::string_view s = Trim(text);
  if (s.empty()) return std::nullopt;
  if (s.front() == '[') {  // [v6] or [v6]:port
    const size_t close = s.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view rest = s.substr(close + 1);
    if (!rest.empty() && !(rest.front() == ':' && AllDigits(rest.substr(1)))) return std::nullopt;
    auto a = ParseLiteral(s.substr(1, close - 1));
    if (a && a->is_v4()) return std::nullopt;  // "[1.2.3.4]" is not a thing
    return a;
  }
  if (auto a = ParseLiteral(s)) return a;
  // v4:port (a v6 literal has more than one colon and was handled above)
  const size_t colon = s.find(':');
  if (colon != std::string_view::npos && s.find(':', colon + 1) == std::string_view::npos &&
      AllDigits(s.substr(colon + 1))) {
    auto a = ParseLiteral(s.substr(0, colon));
    if (a && a->is_v4()) return a;
  }
  return std::nullopt;
}

std::optional<Cidr> Cidr::Parse(std::string_view text) {
  const std::string_view s = Trim(text);
  const size_t slash = s.find('/');
  const std::string_view addr = s.substr(0, slash);
  auto a = ParseLiteral(addr);
  if (!a) return std::nullopt;
  Cidr c;
  c.base = *a;
  const uint32_t max = a->is_v4() ? 32 : 128;
  uint32_t bits = max;
  if (slash != std::string_view::npos) {
    const std::string_view b = s.substr(slash + 1);
    if (b.empty() || b.size() > 3 || !AllDigits(b)) return std::nullopt;
    bits = 0;
    for (char ch : b) bits = bits * 10 + static_cast<uint32_t>(ch - '0');
    if (bits > max) return std::nullopt;
  }
  c.bits = a->is_v4() ? bits + 96 : bits;
  // Keep only the network part, so Contains compares masked bytes.
  for (uint32_t i = 0; i < 16; ++i) {
    const uint32_t lo = i * 8;
    if (lo >= c.bits) {
      c.base.bytes[i] = 0;
    } else if (c.bits - lo < 8) {
      c.base.bytes[i] &= static_cast<uint8_t>(0xff << (8 - (c.bits - lo)));
    }
  }
  return c;
}

bool Cidr::Contains(const ClientAddress& a) const {
  const uint32_t full = bits / 8;
  if (!std::equal(base.bytes.begin(), base.bytes.begin() + full, a.bytes.begin())) return false;
  const uint32_t rest = bits % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a.bytes[full] & mask) == base.bytes[full];
}

bool IsTrusted(const TrustedProxies& trusted, const ClientAddress& a) {
  for (const Cidr& c : trusted) {
    if (c.Contains(a)) return true;
  }
  return false;
}

ClientAddress ClientFromForwardedFor(const ClientAddress& peer,
                                     const std::vector<std::string_view>& values,
                                     const TrustedProxies& trusted) {
  ClientAddress client = peer;
  if (!IsTrusted(trusted, client)) return client;
  for (auto v = values.rbegin(); v != values.rend(); ++v) {
    std::string_view list = *v;
    while (!list.empty()) {
      const size_t comma = list.rfind(',');
      const std::string_view hop = comma == std::string_view::npos ? list : list.substr(comma + 1);
      list = comma == std::string_view::npos ? std::string_view() : list.substr(0, comma);
      if (Trim(hop).empty()) continue;  // "a, , b": an empty element is no hop
      const std::optional<ClientAddress> a = ClientAddress::Parse(hop);
      if (!a) return client;  // garbage: stop at the last hop we could vouch for
      client = *a;
      if (!IsTrusted(trusted, client)) return client;
    }
  }
  return client;
}

}  // namespace onedomain::dataplane
