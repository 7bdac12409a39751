#include "dataplane/upstream/socket_probe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "dataplane/runtime/unique_fd.h"

namespace onedomain::dataplane {
namespace {

// A connected loopback TCP pair: client and the accepted server side.
struct TcpPair {
  UniqueFd client, server;
};

TcpPair Connect() {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(::listen(listener.get(), 1), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  TcpPair p;
  p.client = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::connect(p.client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  p.server = UniqueFd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  return p;
}

// Waits (bounded) until `fd` has something to read or an error.
bool WaitReadable(int fd) {
  pollfd pfd{fd, POLLIN, 0};
  return ::poll(&pfd, 1, 5000) == 1;
}

TEST(SocketProbeTest, IdleOpenConnectionIsUsable) {
  TcpPair p = Connect();
  EXPECT_EQ(ProbeIdleSocket(p.client.get()), IdleSocketState::kUsable);
}

TEST(SocketProbeTest, BytesNobodyAskedForMakeItUnusable) {
  TcpPair p = Connect();
  ASSERT_EQ(::write(p.server.get(), "x", 1), 1);
  ASSERT_TRUE(WaitReadable(p.client.get()));
  EXPECT_EQ(ProbeIdleSocket(p.client.get()), IdleSocketState::kUnsolicited);
  char c;  // peeked, not consumed
  EXPECT_EQ(::recv(p.client.get(), &c, 1, MSG_DONTWAIT), 1);
}

TEST(SocketProbeTest, PeerCloseMakesItClosed) {
  TcpPair p = Connect();
  p.server.reset();
  ASSERT_TRUE(WaitReadable(p.client.get()));
  EXPECT_EQ(ProbeIdleSocket(p.client.get()), IdleSocketState::kClosed);
}

TEST(SocketProbeTest, BytesAckedGrowOnlyWhenThePeerTakesThem) {
  TcpPair p = Connect();
  const auto before = BytesAckedByPeer(p.client.get());
  ASSERT_TRUE(before.has_value());
  ASSERT_EQ(::write(p.client.get(), "hello", 5), 5);
  ASSERT_TRUE(WaitReadable(p.server.get()));
  // Loopback acknowledges at once; allow the ACK a bounded moment to be counted.
  for (int i = 0; i < 1000 && BytesAckedByPeer(p.client.get()) == before; ++i) ::usleep(1000);
  EXPECT_EQ(*BytesAckedByPeer(p.client.get()), *before + 5);

  // The peer closed before our next request: its TCP answers with a reset, acknowledging
  // nothing, so the request provably reached no application.
  TcpPair q = Connect();
  q.server.reset();
  ASSERT_TRUE(WaitReadable(q.client.get()));  // the FIN
  const auto acked = BytesAckedByPeer(q.client.get());
  ASSERT_EQ(::write(q.client.get(), "POST", 4), 4);
  pollfd pfd{q.client.get(), POLLIN, 0};
  for (int i = 0; i < 100; ++i) {
    char buf[8];
    if (::recv(q.client.get(), buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == ECONNRESET) break;
    ::poll(&pfd, 1, 10);
  }
  EXPECT_EQ(BytesAckedByPeer(q.client.get()), acked);
}

}  // namespace
}  // namespace onedomain::dataplane
