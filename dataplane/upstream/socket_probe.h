#pragma once

// Looks at an idle upstream socket without reading from it: before a pooled connection is
// reused, and after a reused one failed, to tell whether the request could have reached the
// upstream at all. Plain syscalls on the descriptor; TLS streams are probed at the TCP level
// (a close_notify or any record that arrives while idle counts as unsolicited bytes).

#include <cstdint>
#include <optional>

namespace onedomain::dataplane {

enum class IdleSocketState : uint8_t {
  kUsable,       // nothing to read, no error: the peer has not closed it
  kClosed,       // end of stream or an error (RST) arrived while idle
  kUnsolicited,  // bytes arrived that no request asked for (a stray response, a HEAD body)
};

IdleSocketState ProbeIdleSocket(int fd);

// Bytes of ours the peer's TCP has acknowledged so far (TCP_INFO tcpi_bytes_acked), or
// nothing when the kernel does not say. Unchanged across a failed request means not one
// byte of it reached the peer, so sending it again cannot repeat its effect.
std::optional<uint64_t> BytesAckedByPeer(int fd);

}  // namespace onedomain::dataplane
