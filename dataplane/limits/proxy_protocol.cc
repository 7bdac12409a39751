#include "dataplane/limits/proxy_protocol.h"

#include <arpa/inet.h>

#include <cstring>

namespace onedomain::dataplane {
namespace {

constexpr std::string_view kV2Signature("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr std::string_view kV1Prefix = "PROXY ";

using State = ProxyHeader::State;

ProxyHeader Malformed(std::string_view why) {
  ProxyHeader h;
  h.state = State::kMalformed;
  h.error = why;
  return h;
}

// True when `bytes` is a prefix of `full` or starts with it.
bool Compatible(std::string_view bytes, std::string_view full) {
  const size_t n = std::min(bytes.size(), full.size());
  return bytes.substr(0, n) == full.substr(0, n);
}

bool ParsePort(std::string_view s) {
  if (s.empty() || s.size() > 5) return false;
  if (s.size() > 1 && s.front() == '0') return false;  // the spec forbids leading zeros
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  return v <= 65535;
}

// inet_pton of one family on a bounded copy.
bool ParseFamily(int family, std::string_view s, uint8_t* out) {
  char buf[64];
  if (s.empty() || s.size() >= sizeof(buf)) return false;
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  return ::inet_pton(family, buf, out) == 1;
}

// "PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n", or "PROXY UNKNOWN[ anything]\r\n".
ProxyHeader ParseV1(std::string_view bytes) {
  const size_t crlf = bytes.find("\r\n");
  if (crlf == std::string_view::npos) {
    if (bytes.size() >= kMaxProxyV1Bytes) return Malformed("PROXY v1 line longer than 107 bytes");
    if (bytes.find('\n') != std::string_view::npos || bytes.find('\0') != std::string_view::npos) {
      return Malformed("PROXY v1 line not ended by CRLF");
    }
    return {};
  }
  if (crlf + 2 > kMaxProxyV1Bytes) return Malformed("PROXY v1 line longer than 107 bytes");
  // The same bytes must get the same answer however they were split: a bare LF or a NUL is
  // refused whether or not the CRLF has arrived yet.
  if (bytes.substr(0, crlf).find_first_of(std::string_view("\n\0", 2)) != std::string_view::npos) {
    return Malformed("PROXY v1 line not ended by CRLF");
  }
  std::string_view line = bytes.substr(kV1Prefix.size(), crlf - kV1Prefix.size());
  ProxyHeader h;
  h.state = State::kDone;
  h.length = crlf + 2;
  if (line.substr(0, 7) == "UNKNOWN" && (line.size() == 7 || line[7] == ' ')) return h;
  // Exactly five fields separated by single spaces.
  std::string_view f[5];
  for (int i = 0; i < 5; ++i) {
    const size_t sp = line.find(' ');
    if (i < 4 && sp == std::string_view::npos) return Malformed("PROXY v1 line has too few fields");
    f[i] = i < 4 ? line.substr(0, sp) : line;
    if (f[i].empty()) return Malformed("PROXY v1 line has an empty field");
    if (i < 4) line.remove_prefix(sp + 1);
  }
  if (f[4].find(' ') != std::string_view::npos) return Malformed("PROXY v1 line has extra fields");
  int family;
  if (f[0] == "TCP4") {
    family = AF_INET;
  } else if (f[0] == "TCP6") {
    family = AF_INET6;
  } else {
    return Malformed("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN");
  }
  uint8_t src[16], dst[16];
  if (!ParseFamily(family, f[1], src) || !ParseFamily(family, f[2], dst)) {
    return Malformed("PROXY v1 address does not match its protocol");
  }
  if (!ParsePort(f[3]) || !ParsePort(f[4])) return Malformed("PROXY v1 port is not 0..65535");
  h.has_source = true;
  if (family == AF_INET) {
    uint8_t v4[4];
    std::memcpy(v4, src, 4);
    h.source = ClientAddress::FromV4(v4);
  } else {
    h.source = ClientAddress::FromV6(src);
  }
  return h;
}

ProxyHeader ParseV2(std::string_view bytes) {
  if (bytes.size() < 16) return {};
  const auto* b = reinterpret_cast<const uint8_t*>(bytes.data());
  const uint8_t version = b[12] >> 4, command = b[12] & 0x0F;
  if (version != 2) return Malformed("PROXY v2 version is not 2");
  if (command > 1) return Malformed("PROXY v2 command is not LOCAL or PROXY");
  const size_t len = (static_cast<size_t>(b[14]) << 8) | b[15];
  if (16 + len > kMaxProxyHeaderBytes) return Malformed("PROXY v2 header longer than 4096 bytes");
  if (bytes.size() < 16 + len) return {};
  ProxyHeader h;
  h.state = State::kDone;
  h.length = 16 + len;
  if (command == 0) return h;  // LOCAL: the balancer's own health check; keep the peer
  const uint8_t family = b[13] >> 4, transport = b[13] & 0x0F;
  if (transport > 2) return Malformed("PROXY v2 transport is not UNSPEC, STREAM or DGRAM");
  if (family > 3) return Malformed("PROXY v2 address family is unknown");
  if (family == 0 || family == 3) return h;  // UNSPEC, UNIX: nothing we can use
  if (transport != 1) return Malformed("PROXY v2 PROXY command over a non-stream transport");
  const uint8_t* a = b + 16;
  if (family == 1) {  // INET: src, dst, src port, dst port
    if (len < 12) return Malformed("PROXY v2 length too short for IPv4 addresses");
    uint8_t v4[4];
    std::memcpy(v4, a, 4);
    h.source = ClientAddress::FromV4(v4);
  } else {  // INET6
    if (len < 36) return Malformed("PROXY v2 length too short for IPv6 addresses");
    uint8_t v6[16];
    std::memcpy(v6, a, 16);
    h.source = ClientAddress::FromV6(v6);
  }
  h.has_source = true;  // TLVs after the addresses are skipped by `length`, never parsed
  return h;
}

}  // namespace

bool ParseProxyProtocolMode(std::string_view text, ProxyProtocolMode& mode) {
  if (text.empty() || text == "off") {
    mode = ProxyProtocolMode::kOff;
  } else if (text == "v1") {
    mode = ProxyProtocolMode::kV1;
  } else if (text == "v2") {
    mode = ProxyProtocolMode::kV2;
  } else if (text == "any") {
    mode = ProxyProtocolMode::kAny;
  } else {
    return false;
  }
  return true;
}

ProxyHeader ParseProxyHeader(std::string_view bytes, ProxyProtocolMode mode) {
  if (bytes.empty() || mode == ProxyProtocolMode::kOff) return {};
  const bool v1_ok = mode == ProxyProtocolMode::kV1 || mode == ProxyProtocolMode::kAny;
  const bool v2_ok = mode == ProxyProtocolMode::kV2 || mode == ProxyProtocolMode::kAny;
  const bool may_v1 = v1_ok && Compatible(bytes, kV1Prefix);
  const bool may_v2 = v2_ok && Compatible(bytes, kV2Signature);
  if (may_v2 && bytes.size() >= kV2Signature.size()) return ParseV2(bytes);
  if (may_v1 && bytes.size() >= kV1Prefix.size()) return ParseV1(bytes);
  if (may_v1 || may_v2) return {};
  return Malformed(mode == ProxyProtocolMode::kV1   ? "no PROXY v1 header"
                   : mode == ProxyProtocolMode::kV2 ? "no PROXY v2 header"
                                                    : "no PROXY header");
}

}  // namespace onedomain::dataplane
