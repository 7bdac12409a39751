#pragma once

// The PROXY protocol (HAProxy's spec, versions 1 and 2), receiver side: what a load balancer
// in front of the node writes before the client's first byte, naming the client's address.
// Pure: the session peeks at the socket, hands the bytes here, and consumes exactly
// `length` bytes on success (what follows, TLS or HTTP, stays in the socket).
//
// Strict on structure, lenient on content it does not need: v1 must be one line of at most
// 107 bytes in the spec's exact grammar; v2's TLVs are skipped whole by the length field and
// never parsed; UNKNOWN (v1), LOCAL (v2) and UNSPEC/UNIX families keep the socket peer.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "dataplane/limits/client_address.h"

namespace onedomain::dataplane {

enum class ProxyProtocolMode : uint8_t { kOff, kV1, kV2, kAny };

// "", "off" -> kOff; "v1", "v2", "any"; false for anything else.
bool ParseProxyProtocolMode(std::string_view text, ProxyProtocolMode& mode);

// Longest header accepted: v2's 16 bytes plus 4080 bytes of addresses and TLVs (real load
// balancers send a few hundred); a longer one is refused as malformed.
inline constexpr size_t kMaxProxyHeaderBytes = 4096;
inline constexpr size_t kMaxProxyV1Bytes = 107;

struct ProxyHeader {
  enum class State : uint8_t { kNeedMore, kDone, kMalformed };
  State state = State::kNeedMore;
  size_t length = 0;        // kDone: bytes to consume
  bool has_source = false;  // kDone: false keeps the socket peer (LOCAL, UNKNOWN, UNSPEC)
  ClientAddress source;
  std::string_view error;  // kMalformed: why, for the log (static text)
};

// Parses the start of a connection's bytes. kNeedMore while `bytes` is a proper prefix of
// a header the mode allows (read more, up to kMaxProxyHeaderBytes, under the header
// timeout).
ProxyHeader ParseProxyHeader(std::string_view bytes, ProxyProtocolMode mode);

}  // namespace onedomain::dataplane
