#include "dataplane/upstream/socket_probe.h"

#include <linux/tcp.h>  // struct tcp_info with tcpi_bytes_acked (glibc's copy lacks it)
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>

namespace onedomain::dataplane {

IdleSocketState ProbeIdleSocket(int fd) {
  if (fd < 0) return IdleSocketState::kClosed;
  char byte = 0;
  const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return IdleSocketState::kUnsolicited;
  if (n == 0) return IdleSocketState::kClosed;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IdleSocketState::kUsable
                                                                   : IdleSocketState::kClosed;
}

std::optional<uint64_t> BytesAckedByPeer(int fd) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return std::nullopt;
  const socklen_t needed =
      static_cast<socklen_t>(offsetof(tcp_info, tcpi_bytes_acked) + sizeof(info.tcpi_bytes_acked));
  if (len < needed) return std::nullopt;
  return info.tcpi_bytes_acked;
}

}  // namespace onedomain::dataplane
