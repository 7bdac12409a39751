// The HTTP/1.1 session and the upstream exchange on a worker whose clock is a manual one:
// the test turns the worker's loop itself and moves time, so a 10 s header timeout or a 60 s
// response timeout takes microseconds. The client and the upstream are real loopback TCP
// sockets the test drives byte by byte (127.0.0.1, ephemeral ports); every wait is bounded
// by a number of loop turns.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "dataplane/http_proxy/http_session.h"
#include "dataplane/runtime/unique_fd.h"
#include "dataplane/server/snapshot_compiler.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/worker/worker.h"
#include "onedomain/v1/snapshot.pb.h"
#include "tests/unit/dataplane/loopback.h"
#include "tests/unit/dataplane/manual_time.h"
#include "tests/unit/dataplane/proxy_test_support.h"

namespace onedomain::dataplane {
namespace {

using namespace std::chrono_literals;
using testing::ManualTime;

// ---- raw loopback sockets ---------------------------------------------------------------

UniqueFd Listen(uint16_t* port) { return UniqueFd(testing::ListenLoopback(port, SOCK_NONBLOCK)); }

UniqueFd Connect(uint16_t port) {
  UniqueFd fd(testing::ConnectLoopback(port));
  const int one = 1;
  if (fd) ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// A port nothing listens on (bound, never listening, then closed).
uint16_t ClosedPort() {
  uint16_t port = 0;
  UniqueFd l = Listen(&port);
  return port;
}

void Send(int fd, const std::string& bytes) {
  ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

// What is readable now (no wait); `eof` is set when the peer closed.
std::string Drain(int fd, bool* eof = nullptr) {
  std::string out;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0 && eof != nullptr) *eof = true;
    return out;
  }
}

// ---- the fixture ------------------------------------------------------------------------

class SessionTest : public ::testing::Test {
 protected:
  SessionTest() : catalog_(1), worker_(0, catalog_, nullptr, time_) {
    upstream_listener_ = Listen(&upstream_port_);
    client_listener_ = Listen(&client_port_);
  }
  ~SessionTest() override = default;

  // Applies a snapshot: one listener, one cluster of `ports` (default: the test's upstream),
  // one route "/" to it (proxytest::OneRouteSnapshot). `edit` may change it first.
  void Configure(std::vector<uint16_t> ports = {},
                 const std::function<void(v1::Snapshot&)>& edit = nullptr) {
    if (ports.empty()) ports.push_back(upstream_port_);
    v1::Snapshot s = proxytest::OneRouteSnapshot(ports);
    if (edit) edit(s);
    CompileOptions options;
    options.catalog = &catalog_;
    auto compiled = CompileSnapshot(std::make_shared<v1::Snapshot>(s), nullptr, options);
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    slot_ = (*compiled)->listeners.at(0)->slot;
    worker_.SwitchConfig(*compiled);
  }

  // A client connection served by a session on the worker.
  UniqueFd OpenClient() {
    UniqueFd client = Connect(client_port_);
    EXPECT_TRUE(client);
    int fd = -1;
    for (int i = 0; i < 1000 && fd < 0; ++i) {
      fd = ::accept4(client_listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) ::poll(nullptr, 0, 1);  // the connection is queued by the kernel at once
    }
    EXPECT_GE(fd, 0) << "accept: " << std::strerror(errno);
    SpawnConnection(worker_, slot_, UniqueFd(fd));
    return client;
  }

  // Turns the loop (1 ms waits) until `done` or `max_turns`.
  bool TurnUntil(const std::function<bool()>& done, int max_turns = 2000) {
    for (int i = 0; i < max_turns; ++i) {
      if (done()) return true;
      worker_.dispatcher().RunOnce(1ms);
    }
    return done();
  }
  void Turns(int n) {
    for (int i = 0; i < n; ++i) worker_.dispatcher().RunOnce(0ms);
  }

  // Reads from the client until `what` shows up or the connection closes.
  std::string ReadClientUntil(int client, const std::string& what, bool* eof = nullptr) {
    std::string got;
    bool closed = false;
    TurnUntil([&] {
      got += Drain(client, &closed);
      return closed || got.find(what) != std::string::npos;
    });
    if (eof != nullptr) *eof = closed;
    return got;
  }

  // The next upstream connection the node opens (turning the loop meanwhile).
  UniqueFd AcceptUpstream() {
    int fd = -1;
    TurnUntil([&] {
      fd = ::accept4(upstream_listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      return fd >= 0;
    });
    return UniqueFd(fd);
  }

  // Reads a request head from an upstream connection (turning the loop meanwhile).
  std::string ReadRequestHead(int upstream) {
    std::string got;
    TurnUntil([&] {
      got += Drain(upstream);
      return got.find("\r\n\r\n") != std::string::npos;
    });
    return got;
  }

  // A client whose GET reached the upstream: both connections, the request head read.
  std::pair<UniqueFd, UniqueFd> GetReachingTheUpstream() {
    UniqueFd client = OpenClient();
    Send(client.get(), kGet);
    UniqueFd up = AcceptUpstream();
    EXPECT_TRUE(up) << "the request never reached the upstream";
    if (up) ReadRequestHead(up.get());
    return {std::move(client), std::move(up)};
  }

  static constexpr char kGet[] = "GET /a HTTP/1.1\r\nHost: site.test\r\n\r\n";

  ManualTime time_;
  stats::StatsCatalog catalog_;
  Worker worker_;
  UniqueFd upstream_listener_;
  UniqueFd client_listener_;
  uint16_t upstream_port_ = 0;
  uint16_t client_port_ = 0;
  uint32_t slot_ = 0;
};

constexpr char kOk[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

// ---- the session --------------------------------------------------------------------------

TEST_F(SessionTest, AHeadNotCompleteWithinTheHeaderTimeoutGets408) {
  Configure();
  UniqueFd client = OpenClient();
  Send(client.get(), "GET /a HTTP/1.1\r\nHost: site");  // and nothing more
  Turns(20);
  time_.Advance(9999ms);  // the default header_timeout is 10 s
  Turns(20);
  EXPECT_EQ(Drain(client.get()), "") << "answered before the header timeout";
  time_.Advance(2ms);
  bool eof = false;
  const std::string got = ReadClientUntil(client.get(), "\r\n\r\n", &eof);
  EXPECT_EQ(got.rfind("HTTP/1.1 408 ", 0), 0u) << got;
}

TEST_F(SessionTest, AnIdleKeepAliveConnectionClosesAfterTheIdleTimeout) {
  Configure();
  auto [client, up] = GetReachingTheUpstream();
  ASSERT_TRUE(up);
  Send(up.get(), kOk);
  ASSERT_NE(ReadClientUntil(client.get(), "ok").find("HTTP/1.1 200 OK"), std::string::npos);
  time_.Advance(59s);  // the default idle_timeout is 60 s
  Turns(20);
  bool eof = false;
  Drain(client.get(), &eof);
  EXPECT_FALSE(eof) << "closed before the idle timeout";
  time_.Advance(1001ms);
  ReadClientUntil(client.get(), "never", &eof);
  EXPECT_TRUE(eof) << "still open after the idle timeout";
}

TEST_F(SessionTest, PipelinedRequestsAreAnsweredInOrder) {
  Configure();
  UniqueFd client = OpenClient();
  Send(client.get(),
       "GET /first HTTP/1.1\r\nHost: site.test\r\n\r\nGET /second HTTP/1.1\r\nHost: "
       "site.test\r\n\r\n");
  UniqueFd up = AcceptUpstream();
  ASSERT_TRUE(up);
  EXPECT_EQ(ReadRequestHead(up.get()).rfind("GET /first ", 0), 0u);
  Send(up.get(), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst");
  // The second request goes out on the same (now idle) upstream connection.
  EXPECT_EQ(ReadRequestHead(up.get()).rfind("GET /second ", 0), 0u);
  Send(up.get(), "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond");
  const std::string got = ReadClientUntil(client.get(), "second");
  const size_t first = got.find("first");
  const size_t second = got.find("second");
  ASSERT_NE(first, std::string::npos) << got;
  ASSERT_NE(second, std::string::npos) << got;
  EXPECT_LT(first, second);
}

// ---- the exchange -------------------------------------------------------------------------

TEST_F(SessionTest, AConnectFailureIsRetriedOnAnotherHostThen502) {
  Configure({ClosedPort(), ClosedPort()});
  UniqueFd client = OpenClient();
  Send(client.get(), kGet);
  const std::string got = ReadClientUntil(client.get(), "\r\n\r\n");
  EXPECT_EQ(got.rfind("HTTP/1.1 502 ", 0), 0u) << got;
  const stats::ClusterCounters& c =
      catalog_.cluster(0, worker_.config()->clusters[0]->def().stats_slot);
  EXPECT_EQ(c.connect_failures.Get(), 2u) << "the retry did not try the other host";
  EXPECT_EQ(c.retries.Get(), 1u);
}

TEST_F(SessionTest, AnUpstreamSilentPastTheResponseTimeoutGets504) {
  Configure({}, [](v1::Snapshot& s) {
    s.mutable_clusters(0)->mutable_response_timeout()->set_seconds(15);
  });
  auto [client, up] = GetReachingTheUpstream();
  ASSERT_TRUE(up);
  // and never answer
  time_.Advance(14s);
  Turns(20);
  EXPECT_EQ(Drain(client.get()), "") << "answered before the response timeout";
  time_.Advance(1001ms);
  const std::string got = ReadClientUntil(client.get(), "\r\n\r\n");
  EXPECT_EQ(got.rfind("HTTP/1.1 504 ", 0), 0u) << got;
}

TEST_F(SessionTest, AnUpstreamClosingMidBodyClosesTheClientConnection) {
  Configure();
  auto [client, up] = GetReachingTheUpstream();
  ASSERT_TRUE(up);
  Send(up.get(), "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
  up.reset();  // 90 bytes short
  bool eof = false;
  const std::string got = ReadClientUntil(client.get(), "never", &eof);
  EXPECT_EQ(got.rfind("HTTP/1.1 200 OK", 0), 0u) << got;
  EXPECT_NE(got.find("0123456789"), std::string::npos);
  EXPECT_TRUE(eof) << "the client connection stayed open after a truncated response";
}

}  // namespace
}  // namespace onedomain::dataplane
